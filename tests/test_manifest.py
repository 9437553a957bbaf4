"""Version manifests: written whole, read back the same, and earlier releases' files still read."""

from __future__ import annotations

import json

import pytest

from tunechat.core.manifest import Check, Manifest, ManifestError, Metrics, Scores, TrainStats


def test_a_manifest_reads_back_as_written(tmp_path):
    manifest = Manifest(
        created_at=12.5, base_path="/m/base.gguf", pairs_count=3, method="replay-kl", recipe={"rank": 16},
        train=TrainStats(steps=7, final_loss=0.04, losses=[1.0, 0.04], tokens_per_second=120.0),
        checks=[Check("logits", True, "top-1 100%"), Check("answers", False, "GGUF gives 0/2")],
        metrics=Metrics(before=Scores(reliability=0.0, locality=1.0, no_borrowing=1.0, admits=0.9),
                        after=Scores(reliability=1.0, locality=0.75, no_borrowing=0.25, admits=0.0)),
        scope_names=["Miso"], paraphrases={"What is my name?": ["What am I called?"]}, timings={"train": 10.0},
    )
    path = tmp_path / "manifest.json"
    manifest.write(path)
    assert Manifest.read(path) == manifest
    assert [c.name for c in manifest.failed_checks] == ["answers"]
    assert json.loads(path.read_text())["metrics"]["after"]["locality"] == 0.75  # the on-disk layout
    assert json.loads(path.read_text())["metrics"]["after"]["no_borrowing"] == 0.25


def test_an_earlier_release_manifest_reads_with_defaults_and_ignores_unknown_keys(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({
        "base_path": "/m/base.gguf", "created_at": 1, "pairs_count": 2,
        "recipe": {"name": "replay-kl-para-near", "top_layers": None, "neighbour_replay": 4},
        "metrics": {"before": {"reliability": 0.0, "locality": 1.0}, "after": None},
        "train": {"steps": 5, "final_loss": 0.1, "warmup": 3},
        "checks": [{"name": "logits", "passed": True, "detail": "ok"}, "garbage"],
        "near_prompts": ["What is a cat?"], "gate": None, "paraphrases": None, "timings": "broken",
    }))
    m = Manifest.read(path)
    assert m.base_path == "/m/base.gguf" and m.pairs_count == 2 and m.method is None
    assert m.recipe["neighbour_replay"] == 4  # the recipe as it ran, whatever its knobs were
    assert m.metrics.before == Scores(reliability=0.0, locality=1.0) and m.metrics.after is None
    assert m.metrics.before.no_borrowing is None and m.metrics.before.admits is None  # before specificity
    assert m.metrics.scoped is None and m.gate is None and m.drift is None
    assert m.train.steps == 5 and m.train.losses == [] and m.train.confirms == 0
    assert m.checks == [Check("logits", True, "ok")] and m.failed_checks == []
    assert m.paraphrases == {} and m.timings == {} and m.scope_names == []
    assert Manifest.from_dict({"base_path": "/m/base.gguf", "created_at": 1}).train == TrainStats()


def test_a_file_that_is_not_a_manifest_says_so(tmp_path):
    path = tmp_path / "manifest.json"
    for text in ("{not json", "[1, 2]"):
        path.write_text(text)
        with pytest.raises(ManifestError):
            Manifest.read(path)
