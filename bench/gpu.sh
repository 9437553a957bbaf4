#!/usr/bin/env bash
# The CUDA benchmark, as one prepared run on a machine with an NVIDIA GPU:
# bench/personalize.py (per-phase seconds, key press to answer, peak RSS and GPU memory,
# tokens/s), bench/model_step.py (the step and its MFU at the embedded model's shape and at
# Qwen2.5-1.5B's, random weights) and bench/quality.py on the default method, 3 seeds, every persona.
#
#   bench/gpu.sh [OUTDIR]          # PYTHON=python3, PERSONALIZE_LIMIT / QUALITY_LIMIT in seconds
#   SCALE_SHAPE=8b bench/gpu.sh    # instead: personalizing at Llama 3 8B's shape (random weights,
#                                  # 2 steps) in float32 and in float16, peak GPU memory against a
#                                  # 24 GiB card (bench/scale.py; ~40 GB of disk, SCALE_LIMIT each)
#   PROCESSES=2 bench/gpu.sh       # instead: training in 2 processes (FSDP2) against one, at
#                                  # Qwen2.5-1.5B's shape, 3 steps: seconds a step and each process's
#                                  # peak memory (bench/processes.py). NCCL needs a GPU per process,
#                                  # so on a one-GPU machine both runs use its CPUs (gloo)
#
# Each part has a time limit so a slow machine still returns what finished; every quality
# run is printed as one JSON line the moment it ends.
set -u
out=${1:-bench/results/gpu}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export TUNECHAT_CACHE=${TUNECHAT_CACHE:-$(mktemp -d)/cache}  # shared by both benches: one warm-up
cd "$(dirname "$0")/.."

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
$py - <<'PY' 2>&1 | tee -a "$out/gpu.txt"
import os, torch, transformers, peft
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("transformers", transformers.__version__, "peft", peft.__version__, "cpus", len(os.sched_getaffinity(0)))
PY
if [ -n "${PROCESSES:-}" ]; then
    work=$(mktemp -d)/scale-1.5b
    device=cpu
    [ "$($py -c 'import torch; print(torch.cuda.device_count())')" -ge "$PROCESSES" ] && device=cuda
    timeout "${SCALE_LIMIT:-300}" $py bench/scale.py build --shape 1.5b --work "$work" 2>&1 | tee "$out/processes.txt"
    timeout "${PROCESSES_LIMIT:-400}" $py bench/processes.py --shape 1.5b --work "$work" --processes "$PROCESSES" \
        --steps 3 --device $device 2>&1 | tee -a "$out/processes.txt"
    exit 0
fi
if [ -n "${SCALE_SHAPE:-}" ]; then
    work=$(mktemp -d)/scale-$SCALE_SHAPE
    timeout "${SCALE_LIMIT:-300}" $py bench/scale.py build --shape "$SCALE_SHAPE" --work "$work" 2>&1 \
        | tee "$out/scale-$SCALE_SHAPE.txt"
    for weights in float32 float16; do
        timeout "${SCALE_LIMIT:-300}" $py bench/scale.py run --shape "$SCALE_SHAPE" --work "$work" --steps 2 \
            --device cuda --weights $weights 2>&1 | tee -a "$out/scale-$SCALE_SHAPE.txt"
    done
    exit 0
fi
timeout "${PERSONALIZE_LIMIT:-240}" $py bench/personalize.py 2>&1 | tee "$out/personalize.txt"
for shape in smollm2-135m qwen2.5-1.5b; do
    timeout "${STEP_LIMIT:-120}" $py bench/model_step.py --shape $shape --steps 10 2>&1 | tee -a "$out/model_step.txt"
done
timeout "${QUALITY_LIMIT:-300}" $py bench/quality.py --methods replay-kl-para-greedy \
    --personas public second third --out "$out/quality.json" 2>&1 | tee "$out/quality.txt"
