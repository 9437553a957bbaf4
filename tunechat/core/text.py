"""Small text helpers shared by the CLI and the TUI."""

from __future__ import annotations


def one_line(text: str, width: int) -> str:
    """Collapse whitespace and cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
