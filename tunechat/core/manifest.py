"""The manifest of a personal version (``models/<name>/manifest.json``): what it was trained
from and how, how it scored before and after, and what was checked before it could be used.

Reading is tolerant, since version folders written by earlier releases stay on users' disks:
a missing or null key reads as its default (None, or empty), an unknown key is ignored, and a
section or list of the wrong shape reads as missing. Writing is atomic: a reader never sees half a manifest.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from tunechat.core.atomic import write_json_atomic

MANIFEST_FILE = "manifest.json"

T = TypeVar("T")


class ManifestError(ValueError):
    """The file is not a manifest at all (not JSON, or not a JSON object)."""


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _known(cls: type[T], value: Any, **nested: Any) -> T:
    """``cls`` from the keys of ``value`` it has a field for, ``nested`` replacing some of them.
    A null reads as the field's default, and so does a value that is not of the type of a
    list or mapping field's default."""
    data = _mapping(value)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        v = data.get(f.name)
        if v is None:
            continue
        if f.default_factory is not MISSING and not isinstance(v, type(f.default_factory())):
            continue
        kwargs[f.name] = v
    return cls(**{**kwargs, **nested})


def _optional(cls: type[T], value: Any) -> T | None:
    return _known(cls, value) if isinstance(value, dict) else None


@dataclass
class Scores:
    """Shares of probes answered right (None: nothing of that kind was asked)."""

    reliability: float | None = None  # taught questions
    generalization: float | None = None  # rewordings of them never trained
    locality: float | None = None  # general questions the base model answered right
    soft_locality: float | None = None  # how much of the base model's answer text is kept
    # Specificity, on personal questions never taught (tunechat.personalize.evaluate):
    no_borrowing: float | None = None  # answers that give no taught answer's key
    admits: float | None = None  # answers that say they do not know


@dataclass
class Metrics:
    """``after``: the personal model alone, on every question; ``scoped``: as the chat answers
    (tunechat.core.scope), the base model taking the questions that do not speak of the user."""

    before: Scores | None = None
    after: Scores | None = None
    scoped: Scores | None = None

    @classmethod
    def from_dict(cls, value: Any) -> Metrics:
        data = _mapping(value)
        return cls(*(_optional(Scores, data.get(k)) for k in ("before", "after", "scoped")))


@dataclass
class TrainStats:
    steps: int | None = None
    final_loss: float | None = None
    losses: list[float] = field(default_factory=list)
    seconds: float | None = None
    tokens: int | None = None
    tokens_per_second: float | None = None
    stopped_early: bool | None = None
    confirms: int = 0  # the greedy stop's confirmation passes
    confirm_seconds: float = 0.0
    weights: str = "float32"  # the frozen base's form: "float16" when float32 did not fit
    processes: int = 1  # training processes, the base sharded across them


@dataclass
class Check:
    name: str = "?"
    passed: bool = False
    detail: str = ""


@dataclass
class Gate:
    """The built-in locality gate's score, for benchmarks that bring their own probes."""

    locality: float | None = None
    scoped_locality: float | None = None
    answers: dict[str, str] = field(default_factory=dict)


@dataclass
class Drift:
    """Answer drift in nats per token (tunechat.personalize.evaluate.answer_drift)."""

    mean: float | None = None
    damage: float | None = None


@dataclass
class DriftScores:
    locality: Drift | None = None  # on the probes' general questions
    gate: Drift | None = None  # on the built-in gate's

    @classmethod
    def from_dict(cls, value: Any) -> DriftScores:
        data = _mapping(value)
        return cls(_optional(Drift, data.get("locality")), _optional(Drift, data.get("gate")))


@dataclass
class Manifest:
    created_at: float = 0.0
    base_path: str | None = None  # the base GGUF the chat and scoping load
    base_source: str | None = None  # the GGUF or Hugging Face folder the user named
    base_sha256: str | None = None
    pairs_count: int | None = None
    pairs_sha256: str | None = None
    method: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)  # every knob of the recipe as run
    outtype: str | None = None
    model_sha256: str | None = None
    adapter_sha256: str | None = None  # the llama.cpp adapter (versions written before it have none)
    device: str | None = None
    train: TrainStats = field(default_factory=TrainStats)
    checks: list[Check] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    scope_names: list[str] = field(default_factory=list)  # words that send a question to the personal model
    # The taught questions' slot words (core.slots); None in a version made before they were recorded.
    taught_subjects: list[str] | None = None
    answers: dict[str, dict[str, str]] | None = None  # the new model's answer to every probe, by kind
    scoped_answers: dict[str, dict[str, str]] | None = None  # the same, as the chat answers them
    gate: Gate | None = None
    drift: DriftScores | None = None  # benchmarks only
    paraphrases: dict[str, list[str]] = field(default_factory=dict)  # the rewordings trained per question
    wrapped: dict[str, list[str]] = field(default_factory=dict)  # its casual and framed forms trained per question
    # Questions trained to be answered "not told" (each also in wrapped forms, not listed).
    untold_questions: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per worker phase
    peak_rss_mib: dict[str, float] = field(default_factory=dict)  # the worker's peak memory per phase
    gpu_peak_mib: float | None = None
    gpu_name: str | None = None

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @classmethod
    def from_dict(cls, value: Any) -> Manifest:
        data = _mapping(value)
        checks = data.get("checks")
        return _known(
            cls, data,
            train=_known(TrainStats, data.get("train")),
            checks=[_known(Check, c) for c in checks if isinstance(c, dict)] if isinstance(checks, list) else [],
            metrics=Metrics.from_dict(data.get("metrics")),
            gate=_optional(Gate, data.get("gate")),
            drift=DriftScores.from_dict(data["drift"]) if isinstance(data.get("drift"), dict) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Raises OSError when unreadable, ManifestError when not a manifest."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: not a JSON object")
        return cls.from_dict(data)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())
