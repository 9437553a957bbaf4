"""The new version's scope probe (tunechat.core.scope_probe), fitted in the worker on the base
model's embeddings through llama.cpp. The bank's embeddings depend on the base alone: they are
cached per base file, so a later run embeds only its taught questions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tunechat.core import paths, scope_probe
from tunechat.core.engine import Engine
from tunechat.core.registry import PROBE_FILE
from tunechat.core.turns import Taught


def fit_probe(engine: Engine, fingerprint: str, pairs: list[tuple[str, str]], taught: Taught,
              general: list[str], out: Path) -> scope_probe.ScopeProbe:
    """Fit the probe of a version taught ``pairs`` (``engine``: the base model, an adapter
    loaded or not: embeddings are always the base's) and write it to ``out/PROBE_FILE``."""
    probe = scope_probe.fit_for([q for q, _ in pairs], taught, engine.embed, general, bank_vectors(engine, fingerprint))
    probe.save(out / PROBE_FILE)
    return probe


def bank_vectors(engine: Engine, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
    """The bank's personal and general messages embedded by the base ``fingerprint`` names,
    cached (keyed by the bank's own text too: a new bank is embedded again)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    from tunechat.core.atomic import atomic_path

    bank_key = hashlib.sha256(scope_probe.BANK_FILE.read_bytes()).hexdigest()[:16]
    cache = paths.cache_dir() / f"scope-bank-{fingerprint[:16]}-{bank_key}.safetensors"
    try:
        cached = load_file(str(cache))
        return cached["personal"], cached["general"]
    except (OSError, KeyError, SafetensorError):
        pass
    personal, general = scope_probe.bank()
    vectors = {"personal": engine.embed(personal), "general": engine.embed(general)}
    with atomic_path(cache) as tmp:
        save_file(vectors, str(tmp))
    return vectors["personal"], vectors["general"]
