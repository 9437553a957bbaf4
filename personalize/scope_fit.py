"""The new version's scope probe (tunechat.core.scope_probe), fitted in the worker on the base
model's embeddings through llama.cpp. The bank's and the built-in general prompts' embeddings
depend on the base alone: they are cached per base file, so a later run embeds only its taught
questions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tunechat.core import paths, scope_probe
from tunechat.core.engine import EMBED_TOKENS, Engine
from tunechat.core.registry import PROBE_FILE
from tunechat.core.turns import Taught
from tunechat.personalize import general

# What the cached embeddings were read with: a change here embeds the bank again.
EMBEDDING_KIND = f"mean-{EMBED_TOKENS}"


def fit_scope_probe(engine: Engine, fingerprint: str, pairs: list[tuple[str, str]], taught: Taught,
                    out: Path) -> scope_probe.ScopeProbe:
    """Fit the probe of a version taught ``pairs`` (``engine``: the base model, an adapter
    loaded or not: embeddings are always the base's) and write it to ``out/PROBE_FILE``. The
    general side takes the general prompts a run replays (none of the taught questions)."""
    prompts = general.general_prompts()
    personal, general_bank, prompt_vectors = cached_vectors(engine, fingerprint, prompts)
    known = dict(zip(prompts, prompt_vectors))

    def embed(texts):
        missing = [t for t in texts if t not in known]
        known.update(zip(missing, engine.embed(missing) if missing else []))
        return np.stack([known[t] for t in texts])

    questions = [q for q, _ in pairs]
    probe = scope_probe.fit_for(questions, taught, embed, general.replay_prompts(questions), (personal, general_bank))
    probe.save(out / PROBE_FILE)
    return probe


def cached_vectors(engine: Engine, fingerprint: str, general: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bank's personal and general messages and the ``general`` prompts, embedded by the
    base ``fingerprint`` names; cached under a key of the texts and how they were embedded."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    from tunechat.core.atomic import atomic_path

    key = hashlib.sha256(scope_probe.BANK_FILE.read_bytes() + "\n".join([EMBEDDING_KIND, *general]).encode())
    cache = paths.cache_dir() / f"scope-bank-{fingerprint[:16]}-{key.hexdigest()[:16]}.safetensors"
    try:
        cached = load_file(str(cache))
        return cached["personal"], cached["general"], cached["prompts"]
    except (OSError, KeyError, SafetensorError):
        pass
    personal, general_bank = scope_probe.bank()
    vectors = {"personal": engine.embed(personal), "general": engine.embed(general_bank),
               "prompts": engine.embed(general)}
    with atomic_path(cache) as tmp:
        save_file(vectors, str(tmp))
    return vectors["personal"], vectors["general"], vectors["prompts"]
