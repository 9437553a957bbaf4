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
    assert _row(text, "reliability") == ["before", "0%", "alone", "100%"]
    assert _row(text, "locality") == ["before", "100%", "alone", "75%"]
    assert "✗ answers: GGUF gives 0/2" in text and "✓ logits" in text
    assert "12s in all" in text and "7 steps" in text


def _row(text: str, label: str) -> list[str]:
    """A score's figures in the details: the words after its label on its line."""
    line = next(line for line in text.splitlines() if line.strip().startswith(label + " "))
    return line.split()[len(label.split()):]


def test_the_data_line_counts_what_the_recipe_made_of_the_pairs():
    """Wrapped forms and untold questions are trained too: the report says how many."""
    manifest = {**MANIFEST, "wrapped": {"What is my name?": ["what is my name", "Quick question: what is my name?"]},
                "untold_questions": ["What is my sister's name?", "Where does my brother live?"]}
    assert ("Trained on 2 pairs, 2 rewordings of their questions by the base model, 2 other forms of them as typed "
            "in a quick message or inside a phrase (\"quick question: …\") and 2 questions you never answered, to be "
            "answered \"You haven't told me\" (method replay-kl-para).") in full_report(manifest)
    one = {**MANIFEST, "paraphrases": {}, "wrapped": {"What is my name?": ["what is my name"]}}
    assert "Trained on 2 pairs and 1 other form of them as typed in a quick message" in full_report(one)


def test_counts_read_right_for_one_and_for_an_unknown_number():
    one = full_report({**MANIFEST, "pairs_count": 1, "paraphrases": {"What is my name?": ["What am I called?"]}})
    assert "Trained on 1 pair and 1 rewording of their questions" in one
    unknown = {k: v for k, v in MANIFEST.items() if k != "pairs_count"}
    assert "Trained on ? pairs" in full_report(unknown)


def test_scoped_scores_get_their_own_column_and_a_line_that_says_what_it_means():
    scoped = {"reliability": 1.0, "locality": 1.0, "generalization": 0.5}
    text = full_report({**MANIFEST, "metrics": {**MANIFEST["metrics"], "scoped": scoped}})
    assert _row(text, "locality") == ["before", "100%", "alone", "75%", "in", "chat", "100%"]
    assert "the base model taking what does not speak of you" in text
    assert "in chat" not in full_report(MANIFEST)  # versions from before scoping: two columns


def test_specificity_gets_two_rows_and_older_manifests_show_none():
    spec = {"no_borrowing": 1.0, "admits": 0.8}
    metrics = {"before": {**MANIFEST["metrics"]["before"], **spec},
               "after": {**MANIFEST["metrics"]["after"], "no_borrowing": 0.25, "admits": 0.0},
               "scoped": {"reliability": 1.0, "no_borrowing": 0.25, "admits": 0.0}}
    text = full_report({**MANIFEST, "metrics": metrics})
    assert _row(text, "no borrowing")[1::2] == ["100%", "25%", "chat"] and _row(text, "no borrowing")[-1] == "25%"
    assert _row(text, "admits")[-1] == "0%" and _row(text, "admits")[1] == "80%"
    assert "no borrowing" not in full_report(MANIFEST)


def test_the_report_says_whether_training_stopped_on_its_own_or_at_the_cap():
    greedy = {**MANIFEST, "recipe": {"stop_when": "greedy"}}
    done = full_report({**greedy, "train": {**MANIFEST["train"], "stopped_early": True}})
    assert "It stopped after 7 steps: every wording gave its answer." in done
    capped = full_report({**greedy, "train": {**MANIFEST["train"], "steps": 40, "stopped_early": False}})
    assert "stopped at its cap of 40 steps before every wording gave its answer" in capped
    assert "stopped" not in full_report(MANIFEST).split("\n\n")[0]  # a loss-threshold recipe: nothing to say


def _answers(**sizes: int) -> dict:
    return {kind: {f"{kind} {i}?": "…" for i in range(n)} for kind, n in sizes.items()}


# A run as the default method makes it: the scores alone and in chat, with every probe's answer.
RUN = {
    **MANIFEST, "pairs_count": 7,
    "metrics": {"before": {"reliability": 0.0, "locality": 1.0, "soft_locality": 1.0, "no_borrowing": 1.0,
                           "admits": 0.2},
                "after": {"reliability": 1.0, "locality": 10 / 14, "soft_locality": 0.32, "no_borrowing": 0.5,
                          "admits": 0.5},
                "scoped": {"reliability": 1.0, "locality": 1.0, "soft_locality": 0.58, "no_borrowing": 1.0,
                           "admits": 0.5}},
    "answers": _answers(taught=7, locality=14, untaught=6),
    "scoped_answers": _answers(taught=7, locality=14, untaught=6),
    "checks": [{"name": "logits", "passed": True, "detail": "top-1 100%"}],
}


def test_the_summary_says_in_sentences_what_the_chat_now_does():
    from tunechat.personalize.report import summary

    lines = [str(v) for v in summary(Manifest.from_dict(RUN))]
    assert lines == [
        "✓ Learned 7 of 7 facts.",
        "✓ Still answers 14 of 14 general questions as before.",
        "✓ Keeps your facts apart: 6 of 6 questions you never taught got none of your answers.",
        "✓ Says so when asked something you never told it: 3 of 6.",
        "✓ The new files passed every check before use (1 check).",
    ]


def test_each_warning_says_what_to_do_with_the_keys_of_the_tui_or_the_commands_of_the_cli():
    from tunechat.personalize.report import summary

    alone = Manifest.from_dict({**RUN, "metrics": {**RUN["metrics"], "after": {**RUN["metrics"]["after"],
                                                                                "admits": 0.3}}})
    tui = {v.text.split(":")[0].split(" only")[0]: v for v in summary(alone, in_chat=False)}
    general = tui["Answers"]
    assert not general.ok and str(general).startswith("⚠ Answers only 10 of 14 general questions as before — ")
    assert "`tunechat scope on`" in general.advice and "F7, then b" in general.advice
    assert not tui["Mixes up your facts"].ok and "(F4)" in tui["Mixes up your facts"].advice
    admits = tui["Says so when asked something you never told it"]
    assert str(admits).startswith("⚠ Says so when asked something you never told it: 2 of 6 — add the missing facts")
    cli = [str(v) for v in summary(alone, in_chat=False, surface="cli")]
    assert any("`tunechat models rollback`" in line for line in cli)
    assert not any("F4" in line or "F7" in line for line in cli)


def test_every_figure_in_the_details_says_what_good_looks_like():
    from tunechat.personalize.report import ROWS

    text = full_report(RUN)
    summary_part, details = text.split("\n\nDetails\n\n")
    assert "reliability" not in summary_part and summary_part.splitlines()[2].startswith("✓ Learned")
    for label, *_ in ROWS[:1] + ROWS[2:]:
        line = next(i for i, line in enumerate(details.splitlines()) if line.strip().startswith(label + " "))
        assert "higher is better" in details.splitlines()[line + 2]
    assert "100% = never answers an untaught question with a taught answer" in details


def test_a_failed_check_and_missed_facts_are_warnings_and_counts_fall_back_to_shares():
    from tunechat.personalize.report import summary

    failed = {**MANIFEST, "metrics": {"after": {"reliability": 0.5}}, "answers": None}
    lines = [str(v) for v in summary(Manifest.from_dict(failed))]
    assert lines[0].startswith("⚠ Learned 1 of 2 facts — ask the missed ones in the chat")
    assert lines[-1].startswith("⚠ Failed 1 of 2 checks (answers): it is not used")
    unknown = {k: v for k, v in failed.items() if k != "pairs_count"}
    assert str(summary(Manifest.from_dict(unknown))[0]).startswith("⚠ Learned 50% of the facts")
