"""A screen listing every key binding of the chat."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown

EXTRA_KEYS = [
    ("Enter", "Send the message"),
    ("Shift+Enter / Ctrl+J", "New line in the message"),
    ("Tab / Shift+Tab", "Move focus between the input and messages"),
    ("k / e / c on a focused answer", "Keep / correct and keep / copy that answer"),
]


def key_label(key: str) -> str:
    """How a binding's key reads in the help: "f6" as "F6", "ctrl+k" as "Ctrl+K", "shift+f6" as "Shift+F6"."""
    key = key.replace("ctrl+", "Ctrl+")
    return key.upper() if key.startswith("f") else key.title()


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "close", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        rows = ["# tunechat keys", "", "*Esc closes this help.* Every action is also in the command palette "
                "(Ctrl+P).", "", "| Key | Action |", "|---|---|"]
        rows += [f"| {k} | {d} |" for k, d in EXTRA_KEYS + self.bindings]
        with VerticalScroll(classes="panel"):
            yield Markdown("\n".join(rows))
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
