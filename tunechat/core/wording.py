"""Small helpers for the words the app shows."""

from __future__ import annotations


def count(n: int | None, noun: str, plural: str | None = None) -> str:
    """``count(1, "pair")`` -> "1 pair"; ``count(3, "pair")`` -> "3 pairs"; an unknown count
    (``None``, as in a manifest that lacks it) -> "? pairs"."""
    return f"{'?' if n is None else n} {noun if n == 1 else plural or noun + 's'}"
