"""The status bar: the model in use, how many pairs are kept, what the app is doing."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from tunechat.core.wording import count


class StatusBar(Static):
    model_name: reactive[str] = reactive("loading…")
    pairs_count: reactive[int] = reactive(0)
    activity: reactive[str] = reactive("")
    answers: reactive[str] = reactive("")  # a scoped chat's mode: who answers (auto, personal, base)
    personalizing: reactive[str] = reactive("")  # a run going on while the chat is shown

    def render(self) -> str:
        parts = [f"model: {self.model_name}"]
        if self.answers:
            parts.append(f"answers: {self.answers} (f8)")
        parts.append(f"{count(self.pairs_count, 'pair')} kept")
        if self.activity:
            parts.append(self.activity)
        if self.personalizing:
            parts.append(self.personalizing)
        return "  ·  ".join(parts)
