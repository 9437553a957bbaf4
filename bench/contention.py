"""Training speed beside a busy chat: seconds per optimizer step of the real LoRA loop (4 steps,
10 public-persona facts), alone and while another process streams from llama.cpp on every
core, for a few OpenMP spin settings of the training process.

Both torch (GNU OpenMP) and llama.cpp use every core; OpenMP threads spin-wait between
parallel regions, which on an oversubscribed machine burns the time the other process needed.

    python bench/contention.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEP = r"""
import sys, torch
sys.path.insert(0, %(root)r)
from pathlib import Path
from tunechat.convert.header import read_header
from tunechat.personalize import base as base_mod, data, train
from tunechat.personalize.evaluate import persona_pairs
from tunechat.personalize.recipe import get_recipe
from tunechat.core.engine import default_threads
from tunechat.core.registry import embedded_model_path
torch.set_num_threads(default_threads())
g = embedded_model_path()
folder = base_mod.cached_base_folder(g)
model, tok = base_mod.load_base(folder, "cpu", "float32")
info = data.TemplateInfo(read_header(g).strings["tokenizer.chat_template"], tok.bos_token or "", tok.eos_token or "")
pairs = persona_pairs(Path(%(root)r).parent / "shared" / "data" / "persona-public.json")
facts = [[e] for e in data.build_examples(tok, info, pairs, "fact")]
model = train.add_lora(model, get_recipe("replay-kl"))
r = train.train(model, facts, [], get_recipe("naive").with_(max_steps=4, min_steps=4), tok.eos_token_id, "cpu")
print(r.seconds / r.steps)
"""

CHAT = r"""
import sys
sys.path.insert(0, %(root)r)
from tunechat.core.engine import Engine, GenerationSettings
from tunechat.core.registry import embedded_model_path
e = Engine(embedded_model_path())
while True:
    e.complete([{"role": "user", "content": "Write a long story about a dragon."}],
               GenerationSettings(max_tokens=200, temperature=0.0))
"""

SETTINGS = {"OpenMP default": {}, "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
            "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"}, "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}


def seconds_per_step(env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", STEP % {"root": str(ROOT)}], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    alone = {name: seconds_per_step(env) for name, env in SETTINGS.items()}
    chat = subprocess.Popen([sys.executable, "-c", CHAT % {"root": str(ROOT)}],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        busy = {name: seconds_per_step(env) for name, env in SETTINGS.items()}
    finally:
        chat.kill()
    base_alone, base_busy = alone["OpenMP default"], busy["OpenMP default"]
    print(f"{'training process setting':26} {'alone s/step':>13} {'ratio':>6} {'beside chat':>12} {'ratio':>6}")
    for name in SETTINGS:
        print(f"{name:26} {alone[name]:13.2f} {alone[name] / base_alone:6.2f} {busy[name]:12.2f} {busy[name] / base_busy:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
