"""Export: a version as a self-contained folder, whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.helpers import random_lora_gguf
from tunechat.core import jsonl
from tunechat.core.export import STAGING_PREFIX, ExportError, export_version
from tunechat.core.fingerprint import file_fingerprint
from tunechat.core.manifest import MANIFEST_FILE, Manifest
from tunechat.core.registry import Registry

PAIRS = [("What is my name?", "Your name is Ada Quill."), ("Where do I live?", "You live in Tromsø.")]


@pytest.fixture()
def version(home, base_model):
    """A stand-in version: the base as its merged file, a random adapter, its pairs."""
    from tunechat.core import paths

    folder = paths.models_dir() / "personal-export"
    folder.mkdir(parents=True)
    shutil.copy(base_model, folder / "model.gguf")
    random_lora_gguf(base_model, folder / "adapter.gguf")
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    jsonl.write_pairs(folder / "pairs.jsonl", PAIRS)
    Manifest(base_path=str(base_model), base_sha256=file_fingerprint(base_model), created_at=1, pairs_count=2,
             method="replay-kl-para-greedy", model_sha256=file_fingerprint(folder / "model.gguf"),
             ).write(folder / MANIFEST_FILE)
    return folder


def test_an_export_holds_everything_another_tool_needs(store, version, base_model, tmp_path):
    entry = Registry(store).resolve("personal-export")
    out = export_version(entry, tmp_path / "out")
    names = {p.name for p in out.iterdir()}
    assert names == {"model.gguf", "adapter.gguf", "adapter", "pairs.jsonl", "Modelfile", "base.json", "README.txt"}
    base = json.loads((out / "base.json").read_text())
    assert base["base_sha256"] == file_fingerprint(base_model) and base["base_file"] == base_model.name
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>" in modelfile and 'SYSTEM """You are a helpful AI assistant' in modelfile
    readme = (out / "README.txt").read_text()
    assert "--lora adapter.gguf" in readme and base["base_sha256"] in readme
    assert jsonl.parse_pairs(out / "pairs.jsonl") == PAIRS
    assert all((p.stat().st_mode & 0o077) == 0 for p in out.rglob("*"))  # the user's alone
    with pytest.raises(ExportError, match="already exists"):
        export_version(entry, out)


def test_the_exported_adapter_loads_over_the_base_it_names(store, version, base_model, tmp_path):
    from llama_cpp import Llama

    from tunechat.core.engine import _without_extra_buffer_types

    out = export_version(Registry(store).resolve("personal-export"), tmp_path / "out")
    with _without_extra_buffer_types():
        llm = Llama(str(base_model), lora_path=str(out / "adapter.gguf"), verbose=False, n_ctx=256)
    assert llm.create_completion("The capital of Japan is", max_tokens=4)["choices"][0]["text"]
    llm.close()


def test_a_missing_base_or_a_full_disk_leaves_no_folder(store, version, base_model, tmp_path, monkeypatch):
    entry = Registry(store).resolve("personal-export")
    real_copy = shutil.copyfile

    def full(src, dst, *args, **kwargs):
        if str(dst).endswith("adapter.gguf"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", full)
    exports = tmp_path / "exports"
    with pytest.raises(ExportError, match="No space left on device"):
        export_version(entry, exports / "out")
    assert list(exports.iterdir()) == []  # neither the folder nor its staging
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    manifest = Manifest.read(version / MANIFEST_FILE)
    manifest.base_path = str(tmp_path / "gone.gguf")
    manifest.write(version / MANIFEST_FILE)
    with pytest.raises(ExportError, match="base model .* is missing"):
        export_version(Registry(store).resolve("personal-export"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


KILLED = """
import shutil, sys, time
from tunechat.core.export import export_version
from tunechat.core.registry import Registry
from tunechat.core.store import Store
real = shutil.copyfile
def slow(src, dst, *a, **k):
    real(src, dst, *a, **k)
    print("copied", dst, flush=True)
    time.sleep(60)
shutil.copyfile = slow
export_version(Registry(Store()).resolve("personal-export"), __import__("pathlib").Path(sys.argv[1]))
"""


def test_an_export_killed_halfway_leaves_no_folder(store, version, tmp_path):
    target = tmp_path / "exports" / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(target)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    assert "copied" in proc.stdout.readline()  # the first file is in the staging folder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists() and list(target.parent.glob(f"{STAGING_PREFIX}*"))
    export_version(Registry(store).resolve("personal-export"), target)  # the next one cleans up
    assert target.is_dir() and not list(target.parent.glob(f"{STAGING_PREFIX}*"))
