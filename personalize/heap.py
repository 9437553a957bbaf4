"""The worker's heap as glibc manages it: what a phase freed is handed back to the system
(``give_back_memory``, between phases) and, in the float16 form, large blocks are mapped on
their own (``map_large_blocks``). Elsewhere than glibc both do nothing."""

from __future__ import annotations

import ctypes
import gc


def _glibc(function: str, *args: int) -> None:
    try:
        getattr(ctypes.CDLL(None), function)(*args)
    except (OSError, AttributeError):  # not glibc
        pass


def give_back_memory() -> None:
    """Collect, then hand the heap's free pages back to the system (glibc's ``malloc_trim``):
    glibc keeps what a phase freed for reuse, and it would count in every later phase's peak
    (1.3 GiB after training at 1.5B in the float16 form: docs/benchmarks.md)."""
    gc.collect()
    _glibc("malloc_trim", 0)


# glibc's mallopt parameter for the size above which a block is mapped on its own.
_M_MMAP_THRESHOLD = -3
MAPPED_BLOCK_BYTES = 2**20


def map_large_blocks() -> None:
    """Have glibc map every block over 1 MiB on its own and unmap it when freed. By default
    its threshold rises with the blocks freed, so a step's activations come from the heap,
    which keeps them after they are freed: at 1.5B in the float16 form a step's peak held 1.4 GiB
    of freed memory (5.10 GiB; 4.10 with this, the step ~10 % slower: docs/benchmarks.md).
    Not in the float32 form: at 135M a step's tensors are small and its time is what counts
    (docs/experiments.md, "The allocator")."""
    _glibc("mallopt", _M_MMAP_THRESHOLD, MAPPED_BLOCK_BYTES)
