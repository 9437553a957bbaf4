"""Whether a message speaks of the user, read from the base model's own representation of it:
the scope classifier of model-editing work (SERAC), fitted per version.

A logistic regression on the base model's mean-pooled last hidden state of a message
(``Engine.embed``), fitted on a bank of personal and general messages in six languages
(data/scope_bank.json), the built-in general prompts, and the version's taught questions that
speak of the user. It adds to the words of ``turns.decide``: a question whose words say nothing
(a pro-drop verb: "¿Cuánto mido?", "Dove ho studiato?") reaches the personal model when the
probe reads it as the user's. A corrected general answer ("What is the capital of
Kazakhstan?") is not fitted as the user's: the probe would then take every question like it
("What is the capital of Uzbekistan?"); the words rule brings such questions back.

Measured in bench/scope_probe.py (docs/experiments.md, "Scoping: a probe on the base model's
representations").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tunechat.core import turns

BANK_FILE = Path(__file__).parent / "data" / "scope_bank.json"
# A taught question counts this many bank messages: a version's own questions weigh most.
TAUGHT_WEIGHT = 5.0
# The ridge penalty per example (standardized features); 1e-2 and 1e-1 measured alike.
L2 = 1e-2
NEWTON_STEPS = 30
# The share of general messages the probe may take for the user's: its threshold is the score
# that this share of the bank's general messages and general prompts exceed when each is scored
# by a probe fitted without it (5 folds).
GENERAL_SLIP = 0.05
FOLDS = 5
# Embeds texts as rows of unit length (``Engine.embed``).
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True, eq=False)
class ScopeProbe:
    """A fitted probe: standardize, then a linear score; above ``threshold`` speaks of the user."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # one per feature, then the bias
    threshold: float = 0.0

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        standardized = (np.atleast_2d(vectors) - self.mean) / self.scale
        return standardized @ self.weights[:-1] + self.weights[-1]

    @property
    def width(self) -> int:
        """The width of the embeddings it reads (the base model's)."""
        return int(self.mean.shape[0])

    def about_user(self, vector: np.ndarray) -> bool:
        return bool(self.scores(vector)[0] > self.threshold)

    def save(self, path: Path) -> None:
        """Written as safetensors (never pickle), replaced whole."""
        from safetensors.numpy import save_file

        from tunechat.core.atomic import atomic_path

        with atomic_path(path) as tmp:
            save_file({"mean": self.mean, "scale": self.scale, "weights": self.weights,
                       "threshold": np.array([self.threshold])}, str(tmp))

    @classmethod
    def load(cls, path: Path) -> ScopeProbe:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        return cls(tensors["mean"], tensors["scale"], tensors["weights"], float(tensors["threshold"][0]))


def bank() -> tuple[list[str], list[str]]:
    """The bank's personal and general messages, every language together."""
    languages = json.loads(BANK_FILE.read_text(encoding="utf-8"))["languages"]
    return ([m for lang in languages.values() for m in lang["personal"]],
            [m for lang in languages.values() for m in lang["general"]])


def bank_languages() -> list[str]:
    return list(json.loads(BANK_FILE.read_text(encoding="utf-8"))["languages"])


def fit(vectors: np.ndarray, about_user: np.ndarray, weight: np.ndarray, l2: float = L2) -> ScopeProbe:
    """Weighted ridge logistic regression by Newton's method: deterministic, no step size.

    With more features than rows (a base wider than the few hundred messages, 4096 at 7B), the
    Newton steps run in the rows' own span: the ridge solution lies there, so the weights are
    the same as in the full space, at the cost of the rows' count instead of the width's."""
    mean, scale = vectors.mean(0), vectors.std(0) + 1e-6
    z = (vectors - mean) / scale
    basis = None
    if z.shape[1] > z.shape[0]:
        basis = np.linalg.svd(z, full_matrices=False)[2].T  # width × rows, orthonormal columns
        z = z @ basis
    x = np.hstack([z, np.ones((len(z), 1))])
    w = np.zeros(x.shape[1])
    # The bias gets a penalty too small to matter but enough to keep the Hessian invertible.
    penalty = l2 * len(x) * np.r_[np.ones(x.shape[1] - 1), 1e-6]
    for _ in range(NEWTON_STEPS):
        p = 0.5 * (1.0 + np.tanh(0.5 * (x @ w)))  # the logistic function, without overflow
        gradient = x.T @ (weight * (p - about_user)) + penalty * w
        hessian = (x * (weight * p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w if basis is None else np.r_[basis @ w[:-1], w[-1]]
    return ScopeProbe(mean, scale, weights)


def fit_for(taught_questions: Sequence[str], taught: turns.Taught, embed: Embed, general: Sequence[str],
            bank_vectors: tuple[np.ndarray, np.ndarray], general_slip: float | None = GENERAL_SLIP) -> ScopeProbe:
    """The probe of a version taught ``taught_questions``: the bank's personal messages and the
    taught questions that speak of the user against the bank's general messages and ``general``
    (the built-in general prompts but the taught ones: ``general.replay_prompts``, the prompts a
    run replays). ``bank_vectors``: the bank's personal and
    general messages embedded (they depend on the base alone, and are cached with it).
    ``general_slip``: see GENERAL_SLIP (None: threshold 0).

    The taught questions that join are those the words say are the user's, or that the bank's
    own probe, at its threshold, reads so; the threshold of the probe returned is measured on
    that probe's own recipe, taught questions included."""
    personal, general_bank = bank_vectors
    x = np.vstack([personal, general_bank, *([embed(general)] if general else [])])
    y = np.r_[np.ones(len(personal)), np.zeros(len(x) - len(personal))]
    weight = np.ones(len(x))
    from_bank = _calibrated(x, y, weight, len(x), general_slip)
    questions = list(dict.fromkeys(taught_questions))
    asked = embed(questions) if questions else x[:0]
    theirs = [i for i, q in enumerate(questions) if from_bank.about_user(asked[i]) or _words_say_user(q, taught)]
    if not theirs:
        return from_bank
    return _calibrated(np.vstack([x, asked[theirs]]), np.r_[y, np.ones(len(theirs))],
                       np.r_[weight, np.full(len(theirs), TAUGHT_WEIGHT)], len(x), general_slip)


def _calibrated(x: np.ndarray, y: np.ndarray, weight: np.ndarray, folded: int,
                general_slip: float | None) -> ScopeProbe:
    """The probe fitted on every row, its threshold the score that ``general_slip`` of the
    general rows exceed, each scored by the same recipe fitted without its fold (the first
    ``folded`` rows are split into folds; the rest, taught questions, are always fitted)."""
    probe = fit(x, y, weight)
    if general_slip is None:
        return probe
    fold = np.r_[np.random.default_rng(0).integers(0, FOLDS, folded), np.full(len(x) - folded, -1)]
    scores = np.zeros(len(x))
    for k in range(FOLDS):
        held = fold == k
        scores[held] = fit(x[~held], y[~held], weight[~held]).scores(x[held])
    general = (y == 0) & (fold >= 0)
    return replace(probe, threshold=float(np.quantile(scores[general], 1.0 - general_slip)))


def _words_say_user(question: str, taught: turns.Taught) -> bool:
    """Whether the words rule finds the user in ``question`` (a first-person word, or one of the
    user's own verbs), names aside: a taught answer's name does not make its question personal."""
    return turns.speaks_of_user(question) or any(w in taught.verbs for w in turns.words_of(question))

