"""The job spec the parent writes and the worker reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunechat.personalize.recipe import DEFAULT_RECIPE, get_recipe
from tunechat.personalize.spec import JOB_FILE, JobSpec, Probes


def test_a_spec_reads_back_as_written(tmp_path):
    spec = JobSpec(pairs=[("What is my name?", "Your name is Ada.")], base_path=Path("/m/base.gguf"),
                   pairs_sha256="abc", recipe="replay-kl", seed=3, outtype="f16",
                   recipe_overrides={"max_steps": 5}, probes=Probes([("What is my name?", "Ada")]), score_gate=True)
    spec.write(tmp_path)
    assert JobSpec.read(tmp_path) == spec
    assert json.loads((tmp_path / JOB_FILE).read_text())["base_path"] == "/m/base.gguf"


def test_a_spec_of_only_pairs_and_base_runs_the_default_recipe(tmp_path):
    (tmp_path / JOB_FILE).write_text(json.dumps({"pairs": [["Q?", "A."]], "base_path": "/m/base.gguf",
                                                 "recipe": None, "probes": {"taught": [["Q?", "A"]]}}))
    spec = JobSpec.read(tmp_path)
    assert spec.recipe == DEFAULT_RECIPE and spec.seed == 0 and spec.outtype is None and not spec.skip_eval
    assert spec.probes == Probes([("Q?", "A")]) and spec.pairs == [("Q?", "A.")]
    assert spec.training_recipe() == get_recipe(DEFAULT_RECIPE)


def test_the_training_recipe_takes_the_seed_and_overrides():
    spec = JobSpec(pairs=[("Q?", "A.")], base_path=Path("b.gguf"), recipe="replay-kl", seed=4,
                   recipe_overrides={"max_steps": 7, "replay_batch": 0})
    recipe = spec.training_recipe()
    assert (recipe.name, recipe.seed, recipe.max_steps, recipe.replay_batch) == ("replay-kl", 4, 7, 0)
    with pytest.raises(KeyError, match="Unknown method"):
        JobSpec(pairs=[], base_path=Path("b.gguf"), recipe="naive").training_recipe()
