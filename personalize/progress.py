"""The worker's progress protocol: one JSON object per line on the protocol stream.

Events: {"event": "phase", "phase": ..., "detail": ...}
        {"event": "progress", "phase": ..., "step": n, "total": n, "loss": x, "eta": s}
        {"event": "done", "result": {...}}   {"event": "error", "message": ...}
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any, Literal, get_args

# The parent passes its pid to the worker in this variable (the worker exits when orphaned).
PARENT_ENV = "TUNECHAT_WORKER_PARENT"

EventKind = Literal["phase", "progress", "done", "error", "log"]  # "log": a line that is not JSON
# The worker's phases, in order (the TUI draws one progress bar over them).
Phase = Literal["prepare", "baseline", "paraphrase", "load", "train", "merge", "convert", "verify", "evaluate"]
PHASES: list[Phase] = list(get_args(Phase))


class Reporter:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    @classmethod
    def take_stdout(cls) -> Reporter:
        """Keep the real stdout for the protocol and send everything else printed (by
        libraries, or by llama.cpp's C code) to stderr, so stray output never breaks a line."""
        sys.stdout.flush()
        protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(protocol)

    def emit(self, event: EventKind, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n")
        self.stream.flush()

    def phase(self, phase: Phase, detail: str = "") -> None:
        self.emit("phase", phase=phase, detail=detail)

    def progress(self, phase: Phase, step: int, total: int, loss: float | None = None,
                 eta: float | None = None) -> None:
        fields: dict[str, Any] = {"phase": phase, "step": step, "total": total}
        if loss is not None:
            fields["loss"] = round(loss, 5)
        if eta is not None:
            fields["eta"] = round(eta, 1)
        self.emit("progress", **fields)
