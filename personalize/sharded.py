"""One rank of a personalization trained across several processes (``--processes N``).

torchrun starts N of these (``tunechat.personalize.launch``) once the worker has the base
model's answers and the rewordings. Each rank loads the base, shards it with FSDP2 (every
decoder layer a unit of its own; the embedding, final norm and head the root's), trains its
share of every step (``tunechat.personalize.ranks``), and the first rank writes the trained
adapter and the run's figures into ``JOB_DIR/trained/``, complete or not at all. The worker goes
on from there in one process: merge, convert, verify, evaluate.

Run as ``python -m torch.distributed.run ... -m tunechat.personalize.sharded JOB_DIR``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

from tunechat.personalize.progress import Reporter
from tunechat.personalize.spec import JobSpec, Pair
from tunechat.personalize.train import TrainResult

INPUTS_FILE = "training.json"  # the base's form, the replayed answers and the rewordings, as the worker found them
TRAINED_DIR = "trained"
ADAPTER_STATE = "adapter.safetensors"  # the trained LoRA factors, peft's keys
RESULT_FILE = "result.json"  # the TrainResult


def write_inputs(job_dir: Path, form: str, replayed: list[Pair], rewordings: dict[str, list[str]]) -> None:
    """What every rank must share with the worker: the base's form is the worker's choice (a
    rank choosing by the memory free as it starts could choose another, and load otherwise).
    A trained folder from an earlier launch in ``job_dir`` goes: what comes back is this one's."""
    if (job_dir / TRAINED_DIR).exists():
        shutil.rmtree(job_dir / TRAINED_DIR)
    (job_dir / INPUTS_FILE).write_text(json.dumps({"form": form, "replayed": replayed, "rewordings": rewordings},
                                                  ensure_ascii=False), encoding="utf-8")


def read_inputs(job_dir: Path) -> tuple[str, list[Pair], dict[str, list[str]]]:
    raw = json.loads((job_dir / INPUTS_FILE).read_text(encoding="utf-8"))
    return (raw["form"], [(q, a) for q, a in raw["replayed"]],
            {q: list(r) for q, r in raw["rewordings"].items()})


def trained_whole(job_dir: Path) -> bool:
    """Did the first rank write the trained adapter? It does once every rank has trained, and
    its folder appears whole or not at all."""
    return (job_dir / TRAINED_DIR / RESULT_FILE).is_file()


def read_trained(job_dir: Path) -> tuple[dict[str, Any], TrainResult]:
    """The adapter's tensors and the run's figures the first rank wrote."""
    from safetensors.torch import load_file

    folder = job_dir / TRAINED_DIR
    result = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
    return load_file(str(folder / ADAPTER_STATE)), TrainResult(**result)


def _write_trained(job_dir: Path, state: dict[str, Any], result: TrainResult) -> None:
    """Into a folder of its own, renamed into place once complete."""
    from safetensors.torch import save_file

    partial = job_dir / f"{TRAINED_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_file(state, str(partial / ADAPTER_STATE))
    (partial / RESULT_FILE).write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
    partial.rename(job_dir / TRAINED_DIR)


def shard(model, device: str) -> None:
    """Shard ``model`` (peft over a transformers causal LM) across the process group with FSDP2:
    each decoder layer, frozen weights and LoRA factors together, then the rest as the root.
    The training pass calls the decoder and the head itself, not the model's forward: that
    call is registered as a forward of the root, so the root's weights are gathered for it."""
    from torch.distributed import get_world_size
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from tunechat.personalize import train

    mesh = init_device_mesh(device, (get_world_size(),))
    causal_lm = train._decoder(model)
    for layer in causal_lm.model.layers:
        fully_shard(layer, mesh=mesh)
    setattr(causal_lm, train.ROW_LOGITS, functools.partial(train.row_logits_of, causal_lm))
    fully_shard(causal_lm, mesh=mesh)
    register_fsdp_forward_method(causal_lm, train.ROW_LOGITS)


def load_sharded(job, replayed: list[Pair], rewordings: dict[str, list[str]], ranks) -> Any:
    """``phases.load`` across the ranks, the model sharded (``shard``). The first rank reads the
    base whole into CPU memory; the others build its shape on the meta device, holding nothing,
    and receive their part from the first once it is sharded: one copy of the base in CPU memory
    however many ranks. Float32 only (``launch.train_across`` refuses the float16 form)."""
    from tunechat.personalize import phases

    loaded = phases.load(job, replayed, rewordings, device="cpu" if ranks.rank == 0 else "meta")
    shard_from_first(loaded.model, ranks)
    return loaded


def shard_from_first(model, ranks) -> None:
    """Shard ``model``, whole in the first rank's CPU memory and on the meta device in the
    others', and give every rank its part of it from the first (broadcast)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    whole = model.state_dict() if ranks.rank == 0 else {}
    shard(model, ranks.device)
    if ranks.rank != 0:
        model.to_empty(device=ranks.device)
    set_model_state_dict(model, whole, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del whole
    for buffer in model.buffers():  # rotary tables and such: not in the state dict
        dist.broadcast(buffer, src=0)


def full_adapter(model) -> dict[str, Any]:
    """The LoRA factors whole, on the CPU (every rank takes part: gathering is collective)."""
    from peft import get_peft_model_state_dict
    from torch.distributed.tensor import DTensor

    return {key: (value.full_tensor() if isinstance(value, DTensor) else value).detach().float().cpu().contiguous()
            for key, value in get_peft_model_state_dict(model).items()}


def _in_collective(exc: BaseException) -> bool:
    """Did ``exc`` come out of a collective whose peer is gone, rather than from this rank's own
    work? A backend's error, or a plain RuntimeError raised inside torch.distributed (gloo's
    "Connection closed by peer"); never running out of memory, wherever it happens."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return type(exc) is RuntimeError and bool(frames) and f"torch{os.sep}distributed" in frames[-1].filename


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    from tunechat.personalize import phases
    from tunechat.personalize.ranks import Ranks
    from tunechat.personalize.worker import exit_when_orphaned, told

    job_dir = Path((argv if argv is not None else sys.argv[1:])[0])
    exit_when_orphaned()  # torchrun gone (killed), this rank goes too
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    ranks = Ranks.joined("cuda" if cuda else "cpu")
    protocol = Reporter.take_stdout()  # torchrun's stdout: the worker reads it
    reporter = protocol if ranks.rank == 0 else Reporter(open(os.devnull, "w", encoding="utf-8"))
    try:
        spec = JobSpec.read(job_dir)
        form, replayed, rewordings = read_inputs(job_dir)
        # The worker checked the memory and wrote every cache; a rank holds 1/N of the base.
        job = phases.prepare(dataclasses.replace(spec, ignore_memory=True, weights=form), reporter)
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // ranks.world))
        loaded = load_sharded(job, replayed, rewordings, ranks)
        result = phases.train_adapter(job, loaded, ranks)
        state = full_adapter(loaded.model)
        if ranks.rank == 0:
            _write_trained(job_dir, state, result)
        ranks.wait_for_all()
        return 0
    except Exception as exc:  # the message reaches the worker, the traceback its log
        traceback.print_exc()
        protocol.emit("error", **told(exc), collective=_in_collective(exc))
        return 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
