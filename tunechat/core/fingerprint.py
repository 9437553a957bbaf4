"""Content hashes of model files: what a version records and checks before it is used."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tunechat.core import paths
from tunechat.core.atomic import write_json_atomic

HASHES_FILE = "file-hashes.json"


def file_fingerprint(path: Path) -> str:
    """sha256 of a file, read whole (a 100 MB GGUF takes ~0.2 s, an 8B one ~10 s)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat_key(path: Path) -> tuple[str, list[int]]:
    """A file's identity (device and inode) and what any write to it changes (size, mtime,
    ctime: ``touch`` can set mtime back, nothing sets ctime)."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}", [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def base_fingerprint(path: Path) -> str:
    """sha256 of a base model file, hashed once: kept in the cache folder under the file's
    inode with its size, mtime and ctime, and hashed again only when one of those moved. A
    base is read by every personalization and an 8B GGUF takes seconds to hash; the files
    a version is checked against before use are hashed whole (``file_fingerprint``)."""
    identity, stamp = _stat_key(path)
    store = paths.cache_dir() / HASHES_FILE
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(identity)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_fingerprint(path)
    if _stat_key(path) == (identity, stamp):  # not written to while it was read
        known[identity] = {"stamp": stamp, "sha256": digest, "path": str(path)}
        try:
            write_json_atomic(store, known)
        except OSError:  # a full disk or read-only cache: the hash is still right
            pass
    return digest
