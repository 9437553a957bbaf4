"""The before/after report that the CLI prints and the TUI shows."""

from tunechat.core.manifest import Manifest
from tunechat.personalize.report import full_report as report_of


def full_report(manifest: dict) -> str:
    """The report of a manifest as it lies on disk."""
    return report_of(Manifest.from_dict(manifest))


MANIFEST = {
    "pairs_count": 2,
    "method": "replay-kl-para",
    "paraphrases": {"What is my name?": ["What am I called?", "Tell me my name?"], "Where do I live?": []},
    "metrics": {"before": {"reliability": 0.0, "locality": 1.0, "generalization": None},
                "after": {"reliability": 1.0, "locality": 0.75, "generalization": 0.5}},
    "checks": [{"name": "logits", "passed": True, "detail": "top-1 100%"},
               {"name": "answers", "passed": False, "detail": "GGUF gives 0/2"}],
    "timings": {"train": 10.0, "convert": 2.5},
    "train": {"steps": 7, "final_loss": 0.04, "tokens_per_second": 120.0},
}


def test_report_names_data_scores_checks_and_time():
    text = full_report(MANIFEST)
    assert "Trained on 2 pairs and 2 rewordings of their questions by the base model" in text
    lines = text.splitlines()
    reliability = next(line for line in lines if line.startswith("reliability"))
    assert reliability.split()[-2:] == ["0%", "100%"]
    locality = next(line for line in lines if line.startswith("locality"))
    assert locality.split()[-2:] == ["100%", "75%"]
    assert "✗ answers: GGUF gives 0/2" in text and "✓ logits" in text
    assert "12s in all" in text and "7 steps" in text


def test_counts_read_right_for_one_and_for_an_unknown_number():
    one = full_report({**MANIFEST, "pairs_count": 1, "paraphrases": {"What is my name?": ["What am I called?"]}})
    assert "Trained on 1 pair and 1 rewording of their questions" in one
    unknown = {k: v for k, v in MANIFEST.items() if k != "pairs_count"}
    assert "Trained on ? pairs" in full_report(unknown)


def test_scoped_scores_get_their_own_column_and_a_line_that_says_what_it_means():
    scoped = {"reliability": 1.0, "locality": 1.0, "generalization": 0.5}
    text = full_report({**MANIFEST, "metrics": {**MANIFEST["metrics"], "scoped": scoped}})
    locality = next(line for line in text.splitlines() if line.startswith("locality"))
    assert locality.split()[-3:] == ["100%", "75%", "100%"]
    assert "answered by the base model" in text
    assert "in chat" not in full_report(MANIFEST)  # versions from before scoping: two columns


def test_specificity_gets_two_rows_and_older_manifests_show_none():
    spec = {"no_borrowing": 1.0, "admits": 0.8}
    metrics = {"before": {**MANIFEST["metrics"]["before"], **spec},
               "after": {**MANIFEST["metrics"]["after"], "no_borrowing": 0.25, "admits": 0.0},
               "scoped": {"reliability": 1.0, "no_borrowing": 0.25, "admits": 0.0}}
    lines = full_report({**MANIFEST, "metrics": metrics}).splitlines()
    borrowing = next(line for line in lines if line.startswith("specificity: no borrowing"))
    assert borrowing.split()[-3:] == ["100%", "25%", "25%"]
    admits = next(line for line in lines if line.startswith("specificity: admits it"))
    assert admits.split()[-3:] == ["80%", "0%", "0%"]
    assert "specificity" not in full_report(MANIFEST)


def test_the_report_says_whether_training_stopped_on_its_own_or_at_the_cap():
    greedy = {**MANIFEST, "recipe": {"stop_when": "greedy"}}
    done = full_report({**greedy, "train": {**MANIFEST["train"], "stopped_early": True}})
    assert "It stopped after 7 steps: every wording gave its answer." in done
    capped = full_report({**greedy, "train": {**MANIFEST["train"], "steps": 40, "stopped_early": False}})
    assert "stopped at its cap of 40 steps before every wording gave its answer" in capped
    assert "stopped" not in full_report(MANIFEST).split("\n\n")[0]  # a loss-threshold recipe: nothing to say
