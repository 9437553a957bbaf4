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
from tunechat.core.engine import GenerationSettings
from tunechat.core.export import STAGING_PREFIX, ExportError, export_version
from tunechat.core.fingerprint import file_fingerprint
from tunechat.core.manifest import MANIFEST_FILE, Manifest
from tunechat.core.registry import Registry

PAIRS = [("What is my name?", "Your name is Ada Quill."), ("Where do I live?", "You live in Tromsø.")]
GREEDY_24 = GenerationSettings(max_tokens=24, temperature=0.0)


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


@pytest.fixture()
def adapter_only(version):
    """The stand-in version as a large base's version is kept: the adapter, no merged file."""
    (version / "model.gguf").unlink()
    manifest = Manifest.read(version / MANIFEST_FILE)
    Manifest.from_dict({**manifest.to_dict(), "model_sha256": None,
                        "adapter_sha256": file_fingerprint(version / "adapter.gguf")}).write(version / MANIFEST_FILE)
    return version


def test_a_version_without_a_merged_file_runs_as_base_and_adapter_scoped_or_not(store, adapter_only, base_model):
    from tunechat.core import scope
    from tunechat.core.engine import Engine
    from tunechat.core.gguf_check import ModelFileError

    registry = Registry(store)
    entry = registry.resolve("personal-export")
    assert entry.path == adapter_only / "adapter.gguf" and entry.merged_path is None
    question = [{"role": "user", "content": "What is my name?"}]
    general = [{"role": "user", "content": "What is the capital of Japan?"}]
    alone = Engine(base_model, lora_path=entry.path)
    bare = Engine(base_model)
    expected_personal, expected_base = alone.greedy("What is my name?", 24), bare.greedy(general[0]["content"], 24)
    assert expected_personal != bare.greedy("What is my name?", 24)  # the adapter changes the answer
    alone.close(), bare.close()
    for scoped in (True, False):
        engine = scope.open_engine(entry.path, registry, scoped)
        assert isinstance(engine, scope.ScopedEngine) and engine.model_path == entry.path
        assert engine.complete(question, GREEDY_24) == expected_personal and engine.last.route == "personal"
        answer = engine.complete(general, GREEDY_24)
        assert engine.last.route == ("base" if scoped else "personal")
        if scoped:  # the base model's own answer, word for word
            assert answer == expected_base
        engine.close()
    shutil.move(str(base_model), str(base_model) + ".away")
    try:
        with pytest.raises(ModelFileError, match="keeps only an adapter"):
            scope.open_engine(entry.path, registry, True)
    finally:
        shutil.move(str(base_model) + ".away", str(base_model))


def test_a_version_without_a_merged_file_exports_its_adapter_for_ollama(store, adapter_only, base_model, tmp_path):
    out = export_version(Registry(store).resolve("personal-export"), tmp_path / "out")
    assert {p.name for p in out.iterdir()} == {"adapter.gguf", "adapter", "pairs.jsonl", "Modelfile", "base.json",
                                                "README.txt"}
    modelfile = (out / "Modelfile").read_text().splitlines()
    assert modelfile[:2] == [f"FROM {base_model}", "ADAPTER ./adapter.gguf"]
    readme = (out / "README.txt").read_text()
    assert "model.gguf" not in readme.split("Notes")[0] and "no merged" in readme
    (adapter_only / "adapter.gguf").write_bytes(b"GGUF" + b"\0" * 64)  # damaged after it was verified
    with pytest.raises(ExportError):
        export_version(Registry(store).resolve("personal-export"), tmp_path / "again")
    assert not (tmp_path / "again").exists()
