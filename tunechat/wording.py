"""Small helpers for the words the app shows."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "pair")`` -> "1 pair"; ``count(3, "pair")`` -> "3 pairs"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
