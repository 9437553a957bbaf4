"""The job spec: what a personalization is asked to do, as the parent writes it to
``JOB_DIR/job.json`` and the worker reads it back.

Benchmarks write their own specs (their own probes, the built-in gate's and drift scores on
top), so reading fills every key a spec leaves out with its default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunechat.core.memory import Form
from tunechat.personalize.recipe import DEFAULT_RECIPE, Recipe, get_recipe

JOB_FILE = "job.json"
# A version of a base larger than this keeps only its adapter unless asked for the merged file:
# the merged q8_0 copy of an 8B base is 8.5 GB per version, its adapter tens of MB, and the chat
# runs base + adapter at 0.9x or better of the merged file's speed (docs/design.md, "Versions").
MERGED_BASE_LIMIT_BYTES = 1_000_000_000

Outtype = Literal["f16", "q8_0", "f32"]
Pair = tuple[str, str]  # question, answer (or question, expected key for a probe)


@dataclass(frozen=True)
class Probes:
    """What the evaluation asks, each with the key its answer must contain."""

    taught: list[Pair]
    paraphrases: list[Pair] = field(default_factory=list)
    locality: list[Pair] = field(default_factory=list)
    untaught: list[str] = field(default_factory=list)  # personal questions never taught (no key: specificity)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Probes:
        pairs = lambda key: [(q, k) for q, k in data.get(key) or []]  # noqa: E731
        untaught = [str(q) for q in data.get("untaught") or []]
        return cls(pairs("taught"), pairs("paraphrases"), pairs("locality"), untaught)


@dataclass(frozen=True)
class JobSpec:
    pairs: list[Pair]
    base_path: Path  # a GGUF file or a Hugging Face model folder
    pairs_sha256: str | None = None
    recipe: str = DEFAULT_RECIPE
    seed: int = 0
    outtype: Outtype | None = None  # None: the converter's default
    recipe_overrides: dict[str, Any] = field(default_factory=dict)  # recipe fields to change, e.g. max_steps
    probes: Probes | None = None  # None: the taught pairs and the built-in locality probes
    score_gate: bool = False  # also score the built-in locality gate (with probes of one's own)
    score_drift: bool = False  # also measure answer drift (slow; benchmarks)
    skip_eval: bool = False
    # Also write the merged GGUF (None: only for a base up to MERGED_BASE_LIMIT_BYTES; the
    # chat runs the base with the adapter either way, the merged file is for other tools).
    write_merged: bool | None = None
    ignore_memory: bool = False  # skip the worker's own memory check (tunechat.core.memory)
    weights: Form | None = None  # the frozen base's form (None: what fits)
    processes: int = 1  # training processes, the base sharded across them (tunechat.personalize.sharded)

    def writes_merged(self, base_gguf_bytes: int) -> bool:
        if self.write_merged is not None:
            return self.write_merged
        return base_gguf_bytes <= MERGED_BASE_LIMIT_BYTES

    def training_recipe(self) -> Recipe:
        """The named recipe with this job's seed and overrides."""
        return get_recipe(self.recipe).with_(seed=self.seed, **self.recipe_overrides)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["base_path"] = str(self.base_path)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(
            pairs=[(q, a) for q, a in data["pairs"]],
            base_path=Path(data["base_path"]),
            pairs_sha256=data.get("pairs_sha256"),
            recipe=data.get("recipe") or DEFAULT_RECIPE,
            seed=int(data.get("seed") or 0),
            outtype=data.get("outtype"),
            recipe_overrides=dict(data.get("recipe_overrides") or {}),
            probes=Probes.from_dict(data["probes"]) if data.get("probes") else None,
            score_gate=bool(data.get("score_gate")),
            score_drift=bool(data.get("score_drift")),
            skip_eval=bool(data.get("skip_eval")),
            write_merged=data.get("write_merged"),
            ignore_memory=bool(data.get("ignore_memory")),
            weights=data.get("weights"),
            processes=max(1, int(data.get("processes") or 1)),
        )

    def write(self, job_dir: Path) -> None:
        (job_dir / JOB_FILE).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def read(cls, job_dir: Path) -> JobSpec:
        return cls.from_dict(json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8")))
