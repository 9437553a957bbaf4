"""Training across processes against one process, at a real size: seconds a step and each
process's peak memory, the default recipe's step (bench/scale.py's examples) on a random-weight
model of Qwen2.5-1.5B's shape (or 3B's, 8B's widths), one process and then N under torchrun
with the base sharded by FSDP2 (tunechat.personalize.sharded: the first rank reads the base,
the others receive their part).

    python bench/scale.py build [--shape 1.5b]               # the model folder, once
    python bench/processes.py [--shape 1.5b] [--processes 2] [--steps 3] [--device cpu|cuda]

The same machine's cores serve both runs: one process with every core, or N with 1/N of them
each. On CUDA each process needs a GPU of its own (NCCL); a one-GPU machine runs this on its
CPUs. The ratio is the N-process step over the one-process step, after the first step of
each (the KL term's base pass and FSDP's first gathering).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def one_run(work: Path, steps: int, device: str, out: Path) -> None:
    """The training steps in this process, or in this rank under torchrun; the first rank writes
    its figures to ``out`` and every rank its peak memory."""
    import torch
    import torch.distributed as dist
    from scale import StepClock, _examples  # bench/scale.py

    from tunechat.personalize import base as base_mod
    from tunechat.personalize import train
    from tunechat.personalize.ranks import ALONE, Ranks
    from tunechat.personalize.recipe import get_recipe
    from tunechat.personalize.reference import ReferenceCache

    sharded = "RANK" in os.environ
    if sharded:
        if device == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    ranks = Ranks.joined(device) if sharded else ALONE
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // ranks.world))
    recipe = get_recipe(None).with_(max_steps=steps, min_steps=steps, stop_when="loss", stop_loss=0.0)
    start = time.perf_counter()
    if sharded:
        from tunechat.personalize.sharded import shard_from_first

        model, tokenizer = base_mod.load_base(work / "hf", "cpu" if ranks.rank == 0 else "meta")
        model = train.add_lora(model, recipe)
        shard_from_first(model, ranks)
    else:
        model, tokenizer = base_mod.load_base(work / "hf", device)
        model = train.add_lora(model, recipe)
    loaded = time.perf_counter() - start
    facts, negatives, replay = _examples(tokenizer)
    clock = StepClock()
    result = train.train(model, facts, replay, recipe, 0, device, clock, reference=ReferenceCache(),
                         negatives=negatives, ranks=ranks)
    times = clock.times
    peak = torch.tensor([_peak_rss_gib()])
    peaks = [torch.zeros(1) for _ in range(ranks.world)]
    if sharded:
        dist.all_gather(peaks, peak)
    else:
        peaks = [peak]
    if ranks.rank == 0:
        gpu = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        out.write_text(json.dumps({"load_s": loaded, "step_s": times, "losses": result.losses,
                                   "peak_rss_gib": [float(p) for p in peaks], "gpu_peak_gib": gpu}))
    if sharded:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1.5b")
    parser.add_argument("--work", type=Path, default=None, help="default /tmp/tunechat-scale-SHAPE")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--one-run", type=Path, default=None, help=argparse.SUPPRESS)  # a run's own process
    args = parser.parse_args()
    work = args.work or Path(f"/tmp/tunechat-scale-{args.shape}")
    if args.one_run is not None:
        one_run(work, args.steps, args.device, args.one_run)
        return
    if not (work / "hf" / "config.json").is_file():
        sys.exit(f"no model at {work}/hf: python bench/scale.py build --shape {args.shape} first")
    config = json.loads((work / "hf" / "config.json").read_text())
    cores = len(os.sched_getaffinity(0))
    print(f"{args.shape}: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}; {cores} cores; "
          f"{args.steps} steps of the default recipe on {args.device}, float32 frozen weights")
    rows = {}
    for n in (1, args.processes):
        out = work / f"processes-{n}.json"
        own = [sys.executable, str(Path(__file__).resolve()), "--work", str(work), "--steps", str(args.steps),
               "--device", args.device, "--one-run", str(out)]
        command = own if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      f"--nproc-per-node={n}", *own[1:]]
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // n)))
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=ROOT)
        rows[n] = {**json.loads(out.read_text()), "wall_s": time.perf_counter() - started}
    print(f"\n{'processes':>9} {'wall s':>7} {'load s':>7} {'s/step':>7} {'peak GiB per process':>22}  first losses")
    for n, row in rows.items():
        later = row["step_s"][1:] or row["step_s"]
        row["per_step"] = sum(later) / len(later)
        peaks = ", ".join(f"{p:.2f}" for p in row["peak_rss_gib"])
        print(f"{n:>9} {row['wall_s']:>7.1f} {row['load_s']:>7.1f} {row['per_step']:>7.1f} {peaks:>22}  "
              f"{', '.join(f'{x:.4f}' for x in row['losses'][:3])}")
    one, many = rows[1], rows[args.processes]
    print(f"\n{args.processes} processes: {many['per_step'] / one['per_step']:.2f}x the one-process step; "
          f"largest process {max(many['peak_rss_gib']) / max(one['peak_rss_gib']):.2f}x the one process's peak, "
          f"all together {sum(many['peak_rss_gib']) / max(one['peak_rss_gib']):.2f}x"
          + (f"; GPU peak {many['gpu_peak_gib']:.2f} GiB (first rank) against {one['gpu_peak_gib']:.2f}"
             if args.device == "cuda" else ""))


if __name__ == "__main__":
    main()
