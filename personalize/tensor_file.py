"""Caches of tensors on disk (safetensors, never pickle): read whole or not at all, written atomically."""

from __future__ import annotations

from pathlib import Path


def read_tensors(path: Path | None) -> dict:
    """The file's tensors by name; none when there is no file or it is damaged (a damaged
    cache is rebuilt, never trusted)."""
    if path is None or not path.is_file():
        return {}
    try:
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    except Exception:
        return {}


def read_metadata(path: Path) -> dict[str, str]:
    """The file's metadata strings; none when there is no file or it is damaged."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:
        return {}


def write_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    from tunechat.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
