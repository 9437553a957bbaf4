"""Where verify's logits tolerance must sit: good files against files written with mapping bugs.

Takes a trained adapter (a model version's ``adapter/`` folder, or trains one on 10 pairs of
the public persona with the default method), merges it into the base, and writes it as GGUF
at f16 and q8_0, correctly and with the bugs the logits check exists for. Prints, per file,
llama.cpp's top-1 agreement and worst normalized error against the merged torch model on the
taught prompts, as personalize's verify step computes them (convert/verify.LOGIT_TOLERANCE).

    python bench/logit_tolerance.py [--adapter MODELS/personal-.../adapter]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.output_format import merged_state, train_once  # noqa: E402
from bench.quality import PERSONAS  # noqa: E402


def _unpermute(w, n_head: int):
    """Undo the writer's llama q/k permutation, so the file holds HF's row order (the bug)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def broken_variants(state: dict, base_state: dict, config: dict) -> dict[str, dict]:
    """Name -> tensors to overwrite in the merged state."""
    layers = range(int(config["num_hidden_layers"]))
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    q = lambda i: f"model.layers.{i}.self_attn.q_proj.weight"  # noqa: E731
    k = lambda i: f"model.layers.{i}.self_attn.k_proj.weight"  # noqa: E731
    mlp = lambda i, m: f"model.layers.{i}.mlp.{m}_proj.weight"  # noqa: E731
    last = layers[-1]
    return {
        "q rows unpermuted, every layer": {q(i): _unpermute(state[q(i)], heads) for i in layers},
        "k rows unpermuted, every layer": {k(i): _unpermute(state[k(i)], kv_heads) for i in layers},
        "gate and up swapped, every layer": {**{mlp(i, "gate"): state[mlp(i, "up")] for i in layers},
                                             **{mlp(i, "up"): state[mlp(i, "gate")] for i in layers}},
        "base weights instead of merged": dict(base_state),
        "q rows unpermuted, last layer only": {q(last): _unpermute(state[q(last)], heads)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="a peft adapter folder (default: train one)")
    args = parser.parse_args()
    os.environ.setdefault("TUNECHAT_HOME", tempfile.mkdtemp(prefix="tunechat-tolerance-"))

    import torch
    from safetensors.numpy import load_file

    from tunechat.convert.verify import LOGIT_TOLERANCE, logit_errors
    from tunechat.convert.writer import write_gguf
    from tunechat.personalize.base import cached_base_folder, load_base
    from tunechat.personalize.checks import gguf_last_logits, torch_last_logits
    from tunechat.personalize.evaluate import load_persona, persona_pairs
    from tunechat.core.engine import Engine
    from tunechat.core.registry import embedded_model_path

    base = embedded_model_path()
    pairs = persona_pairs(PERSONAS["public"])[:10]
    with tempfile.TemporaryDirectory(dir=os.environ["TUNECHAT_HOME"]) as tmp:
        adapter = args.adapter
        if adapter is None:
            train_once(pairs, load_persona(PERSONAS["public"]), 0, Path(tmp))
            adapter = Path(tmp) / "out" / "adapter"
        folder = cached_base_folder(base)
        state, config = merged_state(adapter, folder)
        model, _ = load_base(folder, "cpu", "float32")
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        chat = Engine(base)
        ids = [list(chat.llm.tokenize(chat.render([{"role": "user", "content": q}]).encode(), add_bos=False, special=True))
               for q, _ in pairs]
        chat.close()
        reference = torch_last_logits(model, ids, "cpu")
        print(f"{'file':38} {'type':5} {'top-1':>6} {'worst error':>11}  (tolerance {LOGIT_TOLERANCE})")
        cases = {"written right": {}, **broken_variants(state, load_file(str(folder / "model.safetensors")), config)}
        for name, change in cases.items():
            for outtype in ("f16", "q8_0"):
                path = Path(tmp) / f"check-{outtype}.gguf"
                write_gguf({**state, **change}, config, base, path, outtype)
                engine = Engine(path)
                agree, worst = logit_errors(gguf_last_logits(engine.llm, ids), reference)
                engine.close()
                print(f"{name:38} {outtype:5} {agree:6.0%} {worst:11.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
