"""A base model's hash is read once per file state, and read again whenever the file changes."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from tunechat.core.fingerprint import HASHES_FILE, base_fingerprint, file_fingerprint


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TUNECHAT_CACHE", str(folder))
    return folder


def _store(cache) -> dict:
    return json.loads((cache / HASHES_FILE).read_text(encoding="utf-8"))


def test_the_hash_of_a_base_is_its_sha256_and_is_kept_privately(cache, tmp_path):
    base = tmp_path / "base.gguf"
    base.write_bytes(b"weights" * 1000)
    assert base_fingerprint(base) == hashlib.sha256(base.read_bytes()).hexdigest() == file_fingerprint(base)
    [entry] = _store(cache).values()
    assert entry["sha256"] == file_fingerprint(base) and entry["path"] == str(base)
    assert stat.S_IMODE(os.stat(cache / HASHES_FILE).st_mode) == 0o600


def test_an_unchanged_base_is_not_read_again(cache, tmp_path):
    base = tmp_path / "base.gguf"
    base.write_bytes(b"a" * 4096)
    base_fingerprint(base)
    known = _store(cache)
    [identity] = known
    known[identity]["sha256"] = "kept"  # what the store says is what comes back: the file was not read
    (cache / HASHES_FILE).write_text(json.dumps(known), encoding="utf-8")
    assert base_fingerprint(base) == "kept"


def test_a_base_written_again_is_hashed_again_even_with_its_size_and_mtime_put_back(cache, tmp_path):
    base = tmp_path / "base.gguf"
    base.write_bytes(b"a" * 4096)
    before = base_fingerprint(base)
    st = os.stat(base)
    with open(base, "r+b") as fh:  # same inode, same size
        fh.write(b"b")
    os.utime(base, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime as it was: only ctime tells
    after = base_fingerprint(base)
    assert after != before and after == hashlib.sha256(base.read_bytes()).hexdigest()


def test_a_damaged_store_is_rebuilt(cache, tmp_path):
    base = tmp_path / "base.gguf"
    base.write_bytes(b"c" * 100)
    cache.mkdir()
    (cache / HASHES_FILE).write_text("{not json", encoding="utf-8")
    assert base_fingerprint(base) == file_fingerprint(base)
    assert [e["sha256"] for e in _store(cache).values()] == [file_fingerprint(base)]
