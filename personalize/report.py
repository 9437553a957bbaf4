"""Plain-text before/after report of a personalization (used by the CLI and the TUI)."""

from __future__ import annotations

from tunechat.core.manifest import Manifest, Scores
from tunechat.core.wording import count

ROWS = (
    ("reliability (taught questions)", "reliability"),
    ("generalization (paraphrases)", "generalization"),
    ("locality (general questions kept)", "locality"),
    ("soft locality (base text kept)", "soft_locality"),
    ("specificity: no borrowing", "no_borrowing"),
    ("specificity: admits it", "admits"),
)


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.0%}"


def score_table(manifest: Manifest) -> str:
    """Scores before and after; with an "in chat" column where the chat scopes the personal
    model (tunechat.core.scope: the base model answers what does not speak of you)."""
    before = manifest.metrics.before or Scores()
    after = manifest.metrics.after or Scores()
    scoped = manifest.metrics.scoped
    lines = [f"{'score':36} before  after" + ("  in chat" if scoped else "")]
    for label, key in ROWS:
        if getattr(before, key) is None and getattr(after, key) is None:
            continue
        line = f"{label:36} {_pct(getattr(before, key))}  {_pct(getattr(after, key))}"
        lines.append(line + (f"    {_pct(getattr(scoped, key))}" if scoped else ""))
    if scoped:
        lines.append("in chat: questions that do not speak of you are answered by the base model "
                     "(`tunechat scope off` to change).")
    return "\n".join(lines)


def checks_text(manifest: Manifest) -> str:
    return "\n".join(f"{'✓' if c.passed else '✗'} {c.name}: {c.detail}" for c in manifest.checks)


def timings_text(manifest: Manifest) -> str:
    t = manifest.timings
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in t.items())
    train = manifest.train
    final_loss = train.final_loss if train.final_loss is not None else float("nan")
    return (f"{sum(t.values()):.0f}s in all ({parts}); {train.steps if train.steps is not None else '?'} steps, "
            f"final loss {final_loss:.4f}, {train.tokens_per_second or 0:.0f} tokens/s")


def data_text(manifest: Manifest) -> str:
    extra = sum(len(v) for v in manifest.paraphrases.values())
    text = f"Trained on {count(manifest.pairs_count, 'pair')}"
    if extra:
        text += f" and {count(extra, 'rewording')} of their questions by the base model"
    return text + f" (method {manifest.method or '?'})." + _stop_text(manifest)


def _stop_text(manifest: Manifest) -> str:
    """What ended training when the recipe waits for greedy decoding to give every answer."""
    if (manifest.recipe or {}).get("stop_when") != "greedy" or manifest.train.stopped_early is None:
        return ""
    if manifest.train.stopped_early:
        return f" It stopped after {count(manifest.train.steps or 0, 'step')}: every wording gave its answer."
    return (f" It stopped at its cap of {count(manifest.train.steps or 0, 'step')} before every wording gave its "
            "answer word for word: the scores below say what it learned.")


def full_report(manifest: Manifest) -> str:
    return "\n\n".join([data_text(manifest), score_table(manifest), checks_text(manifest), timings_text(manifest)])
