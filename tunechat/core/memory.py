"""Whether a base fits this machine's memory, and in which form, judged before a
personalization starts.

The worker holds the base in float32 (``personalize/base.py::load_base``) when that fits, and
on the CPU otherwise in float16 with each layer's activations recomputed in the backward pass
(``training_form``; tunechat.personalize.half), so a base too large for the machine is not
killed by the kernel halfway through. ``refusal`` reads the base's own file (parameter count
from the GGUF header's tensor shapes or the safetensors headers; widths from its metadata or
config.json), estimates the worker's peak in each form and compares the smallest with what
the machine has free. It imports no torch: the CLI and the chat call
it before any worker starts; the worker checks CUDA device memory itself (``device_refusal``).

Every factor comes from a measurement in docs/benchmarks.md (see each constant); the
arithmetic at 1.5B, 3B and 8B is in docs/design.md, "Memory".
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tunechat.core.faults import EXIT_NOT_ENOUGH_MEMORY, Fault

AVAILABLE_ENV = "TUNECHAT_MEMORY_AVAILABLE"  # bytes (or 21G, 512M): stands in for what is free
GIB = 2**30
MIB = 2**20
FP32 = 4  # bytes a parameter of frozen float32 weights (load_base(..., "float32"))
HALF = 2  # ... of frozen float16 weights (load_base(..., "float16"))
Form = Literal["float32", "float16"]
# float32 only with a quarter of its estimate to spare: the estimates were off by up to a tenth
# (bench/scale.py), and a run that takes nearly all the free memory leaves the rest of the
# machine swapping; float16 costs a step 1.5x the time instead (docs/design.md, "Memory").
FLOAT32_HEADROOM = 1.25

# bench/personalize.py on SmolLM2-135M (docs/benchmarks.md, "Where the memory goes"): 0.93 GiB
# after loading, of which 0.54 GiB the float32 weights; the rest is torch, transformers, peft.
LIBRARIES = int((0.93 - 0.54) * GIB)
# Same section: a replay pass of 329 tokens keeps 483 MiB for its backward over 30 layers of
# width 576 + 1536 (hidden + MLP), 32 MiB of it the head's log-softmax over 49152 entries.
PASS_TOKENS = 329
ACTIVATION_PER_TOKEN_LAYER_WIDTH = (483 - 32) * MIB / (PASS_TOKENS * 30 * (576 + 1536))  # ~22.7 bytes
HEAD_PER_VOCAB_ENTRY = 32 * MIB / 49152
# The train phase's peak, 2260 MiB (docs/benchmarks.md, bench/personalize.py table), is 0.93 GiB
# loaded plus 2.7 such passes: the pass itself, about one more kept by the allocator (a 256 KiB
# mmap threshold gives it back: 1816 MiB), and the logits, gradients and optimizer state.
CPU_TRAIN_PASSES = (2260 - 0.93 * 1024) / 483
# bench/scale.py at Qwen2.5-1.5B's shape: merge, convert and verify peak at 2.35x the fp16 size
# (6.75 GiB, convert), i.e. 4.7 bytes a parameter with the libraries.
AFTER_TRAINING_PER_PARAMETER = 2.35 * 2
# The float16 form (bench/scale.py at Qwen2.5-3B's shape, docs/benchmarks.md): the train phase
# peaked 1.21 GiB above the loaded model, 4.43 passes as ``recomputed_pass_activations`` counts
# them (the head's rows, the LoRA factors' optimizer state and the allocator's share ride on
# them); the phases after training peaked at the loaded model plus 8.0 bytes per element of the
# embedding (the widest tensor, read from the file and widened for the merge, then quantized).
HALF_TRAIN_PASSES = 4.43
HALF_WIDEST_BYTES_PER_ELEMENT = 8.0
# bench/gpu.sh on an H200 (docs/benchmarks.md, bench/results/gpu-h200): peak GPU memory 1696 MiB
# at SmolLM2-135M, the float32 weights 0.54 GB and 2.45 of the passes above (bf16 autocast, one
# packed pass over facts, negatives and replay).
CUDA_TRAIN_PASSES = (1696 * MIB - 0.54e9) / (483 * MIB)
# Same run: the worker's peak RSS 3270 MiB with the CUDA libraries. load_base builds the float32
# model in host memory before moving it to the GPU, so the host needs the weights once too.
CUDA_HOST_FIXED = int(3270 * MIB - 0.54e9)


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a base: its parameter count and its widths (0: unknown)."""

    parameters: int
    hidden: int = 0
    intermediate: int = 0
    layers: int = 0
    vocab: int = 0


@dataclass(frozen=True)
class Estimate:
    cpu: int  # the worker's peak resident memory training on the CPU, bytes
    cpu_half: int  # ... in the float16 form (tunechat.personalize.half)
    cuda_device: int  # its peak GPU memory on CUDA
    cuda_host: int  # its peak host memory on CUDA


class NotEnoughMemory(Fault):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NOT_ENOUGH_MEMORY)


# -- the base's shape ------------------------------------------------------------------------

def shape_of(base: Path) -> Shape:
    """The shape of a GGUF file or a Hugging Face folder, from its headers alone."""
    return _folder_shape(base) if base.is_dir() else _gguf_shape(base)


def _gguf_shape(path: Path) -> Shape:
    from tunechat.convert.header import decode_value, read_header

    header = read_header(path)
    arch = header.strings.get("general.architecture", "")

    def number(key: str) -> int:
        raw = header.metadata_raw.get(f"{arch}.{key}")
        value = decode_value(raw)[0] if raw is not None else 0
        return int(value[0] if isinstance(value, list) else value)

    embedding = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    return Shape(parameters=sum(math.prod(t.shape) for t in header.tensors), hidden=number("embedding_length"),
                 intermediate=number("feed_forward_length"), layers=number("block_count"),
                 vocab=max(embedding.shape) if embedding else 0)


def _folder_shape(folder: Path) -> Shape:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    parameters = sum(_safetensors_parameters(p) for p in folder.glob("*.safetensors"))
    return Shape(parameters=parameters, hidden=int(config.get("hidden_size") or 0),
                 intermediate=int(config.get("intermediate_size") or 0),
                 layers=int(config.get("num_hidden_layers") or 0), vocab=int(config.get("vocab_size") or 0))


def _safetensors_parameters(path: Path) -> int:
    """Elements of every tensor of a safetensors file, from its JSON header."""
    from tunechat.convert.header import safetensors_index

    return sum(math.prod(entry["shape"]) for entry in safetensors_index(path)[1].values())


# -- the estimate ----------------------------------------------------------------------------

def pass_activations(shape: Shape) -> float:
    """Bytes one training pass keeps for its backward, scaled from the measured 135M pass."""
    per_layer = ACTIVATION_PER_TOKEN_LAYER_WIDTH * PASS_TOKENS * (shape.hidden + shape.intermediate)
    return per_layer * shape.layers + HEAD_PER_VOCAB_ENTRY * shape.vocab


def recomputed_pass_activations(shape: Shape) -> float:
    """Bytes a pass keeps when each layer is recomputed in the backward pass: every layer's
    float32 input, one layer's activations at a time, the head's log-softmax."""
    inputs = PASS_TOKENS * shape.hidden * FP32 * shape.layers
    one_layer = ACTIVATION_PER_TOKEN_LAYER_WIDTH * PASS_TOKENS * (shape.hidden + shape.intermediate)
    return inputs + one_layer + HEAD_PER_VOCAB_ENTRY * shape.vocab


def estimate(shape: Shape) -> Estimate:
    weights = FP32 * shape.parameters
    activations = pass_activations(shape)
    cpu_train = weights + LIBRARIES + CPU_TRAIN_PASSES * activations
    after_training = AFTER_TRAINING_PER_PARAMETER * shape.parameters
    half_loaded = HALF * shape.parameters + LIBRARIES
    half_train = half_loaded + HALF_TRAIN_PASSES * recomputed_pass_activations(shape)
    half_after = half_loaded + HALF_WIDEST_BYTES_PER_ELEMENT * shape.vocab * shape.hidden
    return Estimate(cpu=int(max(cpu_train, after_training)), cpu_half=int(max(half_train, half_after)),
                    cuda_device=int(weights + CUDA_TRAIN_PASSES * activations),
                    cuda_host=int(weights + CUDA_HOST_FIXED))


# -- what the machine has --------------------------------------------------------------------

def parse_size(text: str) -> int:
    """Bytes of ``21G``, ``512M``, ``1.5T`` or a plain number of bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    """Linux's MemAvailable (what can be used without swapping), bytes; None elsewhere."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"),
                    root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process's memory cgroup (v2 or v1) and its parents still allow, reclaimable
    page cache counted as free; None when no limit is set."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    found: list[int] = []
    for line in lines:
        _, controllers, where = line.split(":", 2)
        if controllers == "":
            found += _headrooms(root, where, "memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            found += _headrooms(root / "memory", where, "memory.limit_in_bytes", "memory.usage_in_bytes",
                                "total_inactive_file")
    return min(found) if found else None


def _headrooms(mount: Path, where: str, limit_file: str, usage_file: str, cache_key: str) -> list[int]:
    out = []
    folder = mount / where.lstrip("/")
    for level in (folder, *folder.parents):
        if level == mount.parent:
            break
        try:
            limit_text = (level / limit_file).read_text().strip()
            if limit_text == "max" or int(limit_text) >= 2**60:
                continue
            usage = int((level / usage_file).read_text())
        except (OSError, ValueError):
            continue
        out.append(int(limit_text) - usage + _stat(level / "memory.stat", cache_key))
    return out


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def available_memory() -> int | None:
    """Bytes a new process can use: ``$TUNECHAT_MEMORY_AVAILABLE`` when set, else the lower of
    MemAvailable and the cgroup's headroom; None when neither can be read."""
    override = os.environ.get(AVAILABLE_ENV)
    if override:
        return parse_size(override)
    known = [v for v in (meminfo_available(), cgroup_headroom()) if v is not None]
    return min(known) if known else None


def nvidia_gpu_present(driver: Path = Path("/proc/driver/nvidia/gpus")) -> bool:
    """Whether the NVIDIA driver lists a GPU: the worker will then train there (a guess the
    worker confirms with torch, which the chat process never imports)."""
    try:
        return any(driver.iterdir())
    except OSError:
        return False


# -- the refusal -----------------------------------------------------------------------------

def gb(n: float) -> str:
    return f"{n / 1e9:.0f} GB" if n >= 9.5e9 else f"{n / 1e9:.1f} GB"


def smaller_base(shape: Shape, available: int) -> str:
    """"a smaller base (up to about N B parameters)": what fits in float16 beside this base's
    activations (a smaller model's are smaller, so this errs on the safe side)."""
    room = available - LIBRARIES - max(HALF_TRAIN_PASSES * recomputed_pass_activations(shape),
                                       HALF_WIDEST_BYTES_PER_ELEMENT * shape.vocab * shape.hidden)
    fits = room / HALF
    return f"a smaller base (up to about {fits / 1e9:.1f}B parameters)" if fits >= 1e8 else "a smaller base"


def refusal(base: Path, override: str, available: int | None = None, gpu: bool | None = None) -> str | None:
    """Why ``base`` would not fit this machine's free memory, with what to do instead, or None
    when it fits or the free memory is unknown. ``override``: how to go on anyway."""
    available = available if available is not None else available_memory()
    if available is None:
        return None
    try:
        needed = host_need(base, gpu)
    except (OSError, ValueError, KeyError):  # an unreadable base is reported by the checks that load it
        return None
    if needed.need <= available:
        return None
    shape = needed.shape
    where = "on the GPU (the weights pass through this memory on the way)" if needed.on_gpu else "on the CPU"
    use_gpu = "" if needed.on_gpu else f"a GPU with at least {gb(estimate(shape).cuda_device)} of memory, "
    return (f"This base ({shape.parameters / 1e9:.2f}B parameters) needs about {gb(needed.need)} of memory "
            f"to personalize {where}; this machine has {gb(available)} available. Use {use_gpu}"
            f"{smaller_base(shape, available)}, or close other programs. Estimates can be off: {override}.")


@dataclass(frozen=True)
class HostNeed:
    shape: Shape
    need: int
    on_gpu: bool


def host_need(base: Path, gpu: bool | None = None) -> HostNeed:
    """The worker's expected peak host memory for ``base`` (on CUDA when a GPU is present)."""
    shape = shape_of(base)
    on_gpu = nvidia_gpu_present() if gpu is None else gpu
    est = estimate(shape)
    return HostNeed(shape, est.cuda_host if on_gpu else min(est.cpu, est.cpu_half), on_gpu)


def training_form(base: Path, available: int | None = None, gpu: bool | None = None) -> Form:
    """The form the worker holds ``base`` in: float32 (fastest, and what every measurement of
    quality used) on CUDA (``gpu``, by default whether the driver lists one), and on the CPU
    when its estimate fits what is free with ``FLOAT32_HEADROOM`` to spare; else float16."""
    if nvidia_gpu_present() if gpu is None else gpu:
        return "float32"
    available = available if available is not None else available_memory()
    try:
        need = estimate(shape_of(base)).cpu
    except (OSError, ValueError, KeyError):  # an unreadable base is reported by the checks that load it
        return "float32"
    return "float32" if available is None or need * FLOAT32_HEADROOM <= available else "float16"


def device_refusal(base: Path, free: int, total: int, override: str) -> str | None:
    """The worker's check on CUDA (``free``, ``total``: torch.cuda.mem_get_info)."""
    shape = shape_of(base)
    need = estimate(shape).cuda_device
    if need <= free:
        return None
    return (f"This base ({shape.parameters / 1e9:.2f}B parameters) needs about {gb(need)} of GPU memory to "
            f"personalize; the GPU has {gb(free)} free of {gb(total)}. Use a GPU with at least {gb(need)}, a "
            f"smaller base, or close other programs using the GPU. Estimates can be off: {override}.")
