"""The report of a personalization, for a person first (used by the CLI and the TUI).

``summary`` gives a few plain sentences, each marked ✓ or ⚠, a warning saying what to do
about it; ``details_text`` gives every figure, each labelled with what good looks like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tunechat.core.manifest import Manifest, Scores
from tunechat.core.wording import count

Surface = Literal["tui", "cli"]

# How the advice names an action: a key in the TUI, a command on the CLI.
ACTIONS: dict[str, dict[Surface, str]] = {
    "add": {"tui": "F4", "cli": "`tunechat pairs add QUESTION ANSWER`"},
    "personalize": {"tui": "F6", "cli": "`tunechat personalize`"},
    "rollback": {"tui": "F7, then b", "cli": "`tunechat models rollback`"},
    "pairs": {"tui": "F3", "cli": "`tunechat pairs list`"},
}

GOOD_FACTS = 0.9  # below: a warning (the verify gate already refuses more than one miss in ten)
GOOD_REWORDED = 0.6
GOOD_GENERAL = 0.9  # the consent threshold is 0.8 (tunechat.personalize.job); warn before it
GOOD_APART = 0.9
GOOD_ADMITS = 0.5


@dataclass(frozen=True)
class Tally:
    """A share of questions answered right, with its count when the manifest has the answers."""

    share: float
    total: int | None

    @property
    def hits(self) -> int:
        return round(self.share * (self.total or 0))

    @property
    def fraction(self) -> str:
        """"3 of 6", or "50%" when the count is not known."""
        return f"{self.hits} of {self.total}" if self.total else f"{self.share:.0%}"

    def __str__(self) -> str:
        """Before a plural noun: "3 of 6 questions", "50% of the questions"."""
        return self.fraction if self.total else f"{self.share:.0%} of the"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    text: str
    advice: str = ""

    def __str__(self) -> str:
        if self.ok or not self.advice:
            return f"{'✓' if self.ok else '⚠'} {self.text}"
        return f"⚠ {self.text.rstrip('.')} — {self.advice}"


def _tally(scores: Scores | None, key: str, answers: dict[str, dict[str, str]] | None, kind: str,
           fallback_total: int | None = None) -> Tally | None:
    share = getattr(scores, key) if scores is not None else None
    if share is None:
        return None
    total = len((answers or {}).get(kind, {})) or fallback_total
    return Tally(share, total)


def summary(manifest: Manifest, in_chat: bool = True, surface: Surface = "tui") -> list[Verdict]:
    """What the new model does, in a few sentences: as the chat answers (``in_chat``: scoping
    on, when the manifest scored it) or the personal model alone."""
    act = {name: ways[surface] for name, ways in ACTIONS.items()}
    scoped = in_chat and manifest.metrics.scoped is not None
    scores = manifest.metrics.scoped if scoped else manifest.metrics.after
    answers = manifest.scoped_answers if scoped else manifest.answers
    verdicts: list[Verdict] = []

    facts = _tally(scores, "reliability", answers, "taught", manifest.pairs_count)
    reworded = _tally(scores, "generalization", answers, "paraphrases")
    if facts is not None:
        text = (f"Learned {facts} facts" + (f", and {reworded.fraction} when asked in other words" if reworded else "")
                + ".")
        if facts.share < GOOD_FACTS:
            correct = "ask the missed ones in the chat and correct the answers (Ctrl+E), or " * (surface == "tui")
            verdicts.append(Verdict(False, text, f"{correct}make the missed answers shorter or plainer "
                                                 f"({act['pairs']}), then personalize again ({act['personalize']})."))
        elif reworded is not None and reworded.share < GOOD_REWORDED:
            verdicts.append(Verdict(False, text, f"add the way you would ask as a pair of its own ({act['add']})."))
        else:
            verdicts.append(Verdict(True, text))

    general = _tally(scores, "locality", answers, "locality")
    if general is not None:
        if general.share >= GOOD_GENERAL:
            verdicts.append(Verdict(True, f"Still answers {general} general questions as before."))
        else:
            fix = ("fewer or shorter pairs change less" if scoped else
                   "turn scoping on (`tunechat scope on`) so the base model answers what is not about you")
            verdicts.append(Verdict(False, f"Answers only {general} general questions as before.",
                                    f"{fix}; roll back any time ({act['rollback']})."))

    apart = _tally(scores, "no_borrowing", answers, "untaught")
    if apart is not None:
        if apart.share >= GOOD_APART:
            verdicts.append(Verdict(True, f"Keeps your facts apart: {apart} questions you never taught got none "
                                          "of your answers."))
        else:
            verdicts.append(Verdict(False, f"Mixes up your facts: only {apart} questions you never taught got "
                                           "none of your answers (your dog's name for your cat's, say).",
                                    f"teach the missing facts too ({act['add']}), then personalize again "
                                    f"({act['personalize']})."))
    admits = _tally(scores, "admits", answers, "untaught")
    if admits is not None:
        text = f"Says so when asked something you never told it: {admits.fraction}."
        if admits.share >= GOOD_ADMITS:
            verdicts.append(Verdict(True, text))
        else:
            verdicts.append(Verdict(False, text, f"add the missing facts ({act['add']}), or a pair that says "
                                                 "\"You haven't told me …\" for what you'd rather not tell."))

    if manifest.checks:
        failed = manifest.failed_checks
        if failed:
            names = ", ".join(c.name for c in failed)
            verdicts.append(Verdict(False, f"Failed {len(failed)} of {count(len(manifest.checks), 'check')} "
                                           f"({names}): it is not used, your current model stays.",
                                    f"personalize again ({act['personalize']}); the details say what failed."))
        else:
            verdicts.append(Verdict(True, f"The new files passed every check before use "
                                          f"({count(len(manifest.checks), 'check')})."))
    return verdicts


def summary_text(manifest: Manifest, in_chat: bool = True, surface: Surface = "tui") -> str:
    return data_text(manifest) + "\n\n" + "\n".join(map(str, summary(manifest, in_chat, surface)))


# (label, score key, what it measures, what good looks like)
ROWS = (
    ("reliability", "reliability", "taught questions answered with their taught answer",
     "higher is better; 100% = every taught question"),
    ("generalization", "generalization", "taught questions asked in other words, never trained",
     "higher is better; 100% = every rewording"),
    ("locality", "locality", "general questions still answered right, of those the base model got right",
     "higher is better; 100% = nothing forgotten; under 80% needs your consent"),
    ("soft locality", "soft_locality", "how much of the base model's own wording general answers keep",
     "higher is better; 100% = word for word; a right answer in other words lowers it"),
    ("no borrowing", "no_borrowing", "questions never taught answered without a taught answer",
     "higher is better; 100% = never answers an untaught question with a taught answer"),
    ("admits", "admits", "questions never taught answered \"you haven't told me\"",
     "higher is better; 100% = always says so"),
)


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.0%}"


def score_table(manifest: Manifest) -> str:
    """Every score before training, of the new model alone and, where the chat scopes the
    personal model (tunechat.core.scope), as the chat answers; each with what good looks like."""
    before = manifest.metrics.before or Scores()
    after = manifest.metrics.after or Scores()
    scoped = manifest.metrics.scoped
    columns = [("before", before), ("alone", after)] + ([("in chat", scoped)] if scoped else [])
    lines = ["Scores: before = the base model · alone = the new model by itself"]
    if scoped:
        lines.append("        in chat = as the chat answers, the base model taking what does not speak of you")
    for label, key, measures, good in ROWS:
        if all(getattr(s, key) is None for _, s in columns):
            continue
        figures = "   ".join(f"{name} {_pct(getattr(s, key))}" for name, s in columns)
        lines += [f"  {label:15} {figures}", f"      {measures}", f"      {good}"]
    return "\n".join(lines)


def checks_text(manifest: Manifest) -> str:
    if not manifest.checks:
        return ""
    return "\n".join(["Checks of the new files (every one must pass before it is used):"]
                     + [f"  {'✓' if c.passed else '✗'} {c.name}: {c.detail}" for c in manifest.checks])


def timings_text(manifest: Manifest) -> str:
    t = manifest.timings
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in t.items())
    train = manifest.train
    final_loss = f"{train.final_loss:.4f}" if train.final_loss is not None else "?"
    return (f"Time: {sum(t.values()):.0f}s in all ({parts}).\n"
            f"Training: {count(train.steps, 'step')}, final loss {final_loss} (lower is better: how unsure "
            f"the model still is of the taught answers, 0 = certain), {train.tokens_per_second or 0:.0f} tokens/s"
            + (f", in {train.processes} processes." if train.processes > 1 else "."))


def data_text(manifest: Manifest) -> str:
    """What the version was trained on: the pairs, and what the recipe made of them."""
    parts = [count(manifest.pairs_count, "pair")]
    if reworded := sum(len(v) for v in manifest.paraphrases.values()):
        parts.append(f"{count(reworded, 'rewording')} of their questions by the base model")
    if wrapped := sum(len(v) for v in manifest.wrapped.values()):
        parts.append(f"{count(wrapped, 'other form')} of them as typed in a quick message or inside a phrase "
                     "(\"quick question: …\")")
    if untold := len(manifest.untold_questions):
        parts.append(f"{count(untold, 'question')} you never answered, to be answered \"You haven't told me\"")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Trained on {listed} (method {manifest.method or '?'})." + _stop_text(manifest)


def _stop_text(manifest: Manifest) -> str:
    """What ended training when the recipe waits for greedy decoding to give every answer."""
    if (manifest.recipe or {}).get("stop_when") != "greedy" or manifest.train.stopped_early is None:
        return ""
    if manifest.train.stopped_early:
        return f" It stopped after {count(manifest.train.steps or 0, 'step')}: every wording gave its answer."
    return (f" It stopped at its cap of {count(manifest.train.steps or 0, 'step')} before every wording gave its "
            "answer word for word: the scores say what it learned.")


def details_text(manifest: Manifest) -> str:
    """Every figure, for whoever wants them: scores, checks, time."""
    return "\n\n".join(p for p in (score_table(manifest), checks_text(manifest), timings_text(manifest)) if p)


def full_report(manifest: Manifest, in_chat: bool = True, surface: Surface = "cli") -> str:
    """The summary, then the details (what the CLI prints)."""
    return f"{summary_text(manifest, in_chat, surface)}\n\nDetails\n\n{details_text(manifest)}"
