"""The conversation: the messages of the open chat, or how to start while there are none."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.visual import VisualType

EMPTY_HINT = (
    "Ask anything below and press Enter; keep a good answer as a training pair with Ctrl+K.\n"
    "Add a fact about yourself with F4; with a few kept, press F6 to personalize the model."
)


class Conversation(VerticalScroll):
    """Draws the hint beneath its messages: seen only while there are none."""

    def render(self) -> VisualType:
        return super().render() if self.children else Text(EMPTY_HINT, style="dim")
