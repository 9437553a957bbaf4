"""Write the KL references that ship for the embedded model (tunechat.personalize.reference).

    python -m tunechat.personalize.shipped_references [--base GGUF]

Every built-in replay example, rendered as a personalization renders it (the base's template
and tokenizer, its shipped answers, the recipes' answer length), with the base model's top-k
log-probabilities on its answer tokens from the training loop's own adapter-off pass. Run it
after changing the general prompts, their answers, ``TOP_K`` or the replay answer length.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tunechat.personalize.reference import SHIPPED_FILE, ReferenceCache

if TYPE_CHECKING:
    from tunechat.personalize.phases import Job, Loaded


def replay_job(base_gguf: Path) -> tuple[Job, Loaded]:
    """A job on ``base_gguf`` (one placeholder pair) with its replay examples rendered as a
    personalization renders them, and the base model loaded with fresh adapters."""
    from tunechat.personalize import phases
    from tunechat.personalize.progress import Reporter
    from tunechat.personalize.spec import JobSpec

    spec = JobSpec(pairs=[("What is my name?", "Your name is Ada.")], base_path=base_gguf, skip_eval=True)
    with open(os.devnull, "w", encoding="utf-8") as quiet:
        job = phases.prepare(spec, Reporter(quiet))
        return job, phases.load(job, phases.baseline(job).replayed(), {})


def write_shipped(base_gguf: Path, out: Path = SHIPPED_FILE) -> int:
    """Compute the references of every replay example for ``base_gguf`` into ``out``; returns
    how many examples."""
    import torch

    from tunechat.personalize import train
    from tunechat.personalize.tensor_file import write_tensors

    job, loaded = replay_job(base_gguf)
    reference = ReferenceCache()
    batch_size = job.recipe.replay_batch
    with torch.no_grad():
        for i in range(0, len(loaded.replay), batch_size):
            batch = loaded.replay[i:i + batch_size]
            run = train._forward(loaded.model, batch, loaded.pad_id, job.device, None)
            train._kl_to_base(loaded.model, run, batch, reference)  # fills the references, adapter off
    write_tensors(out, reference.tensors(), metadata={"base_sha256": job.fingerprint, "file": base_gguf.name})
    return len(reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the embedded model's KL references into "
                                     f"{SHIPPED_FILE.name} (shipped in the package).")
    parser.add_argument("--base", type=Path, default=None, help="a GGUF base (default: the embedded model)")
    parser.add_argument("--out", type=Path, default=SHIPPED_FILE)
    args = parser.parse_args(argv)
    if args.base is None:
        from tunechat.core.registry import embedded_model_path

        args.base = embedded_model_path()
    print(f"{args.out}: references of {write_shipped(args.base, args.out)} replay examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
