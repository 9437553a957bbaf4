"""Plain-text before/after report of a personalization (used by the CLI and the TUI)."""

from __future__ import annotations

from typing import Any

from tunechat.core.wording import count


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.0%}"


def score_table(manifest: dict[str, Any]) -> str:
    """Scores before and after; with an "in chat" column where the chat scopes the personal
    model (tunechat.core.scope: the base model answers what does not speak of you)."""
    metrics = manifest.get("metrics") or {}
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    scoped = metrics.get("scoped") or {}
    rows = [
        ("reliability (taught questions)", "reliability"),
        ("generalization (paraphrases)", "generalization"),
        ("locality (general questions kept)", "locality"),
        ("soft locality (base text kept)", "soft_locality"),
    ]
    lines = [f"{'score':36} before  after" + ("  in chat" if scoped else "")]
    for label, key in rows:
        if before.get(key) is None and after.get(key) is None:
            continue
        line = f"{label:36} {_pct(before.get(key))}  {_pct(after.get(key))}"
        lines.append(line + (f"    {_pct(scoped.get(key))}" if scoped else ""))
    if scoped:
        lines.append("in chat: questions that do not speak of you are answered by the base model "
                     "(`tunechat scope off` to change).")
    return "\n".join(lines)


def checks_text(manifest: dict[str, Any]) -> str:
    return "\n".join(f"{'✓' if c['passed'] else '✗'} {c['name']}: {c['detail']}" for c in manifest.get("checks", []))


def timings_text(manifest: dict[str, Any]) -> str:
    t = manifest.get("timings", {})
    total = sum(t.values())
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in t.items())
    train = manifest.get("train", {})
    return (f"{total:.0f}s in all ({parts}); {train.get('steps', '?')} steps, "
            f"final loss {train.get('final_loss', float('nan')):.4f}, {train.get('tokens_per_second', 0):.0f} tokens/s")


def data_text(manifest: dict[str, Any]) -> str:
    rewordings = manifest.get("paraphrases") or {}
    extra = sum(len(v) for v in rewordings.values())
    text = f"Trained on {count(manifest.get('pairs_count'), 'pair')}"
    if extra:
        text += f" and {count(extra, 'rewording')} of their questions by the base model"
    return text + f" (method {manifest.get('method', '?')})."


def full_report(manifest: dict[str, Any]) -> str:
    return "\n\n".join([data_text(manifest), score_table(manifest), checks_text(manifest), timings_text(manifest)])
