"""Models: the embedded default, local files and personal versions; use one or roll back."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, ListItem, ListView

from tunechat.core.manifest import Manifest, Scores
from tunechat.core.registry import ModelEntry, Registry
from tunechat.core.wording import count
from tunechat.tui.messages import ModelChosen, RollbackRequested


def describe(entry: ModelEntry) -> str:
    if entry.kind != "personal":
        return f"{entry.name}  [dim]{entry.kind}[/dim]"
    m = entry.manifest or Manifest()
    after = m.metrics.after or Scores()
    scores = "".join(f" {key} {getattr(after, key):.0%}" for key in ("reliability", "locality")
                     if getattr(after, key) is not None)
    return f"{entry.name}  [dim]{count(m.pairs_count, 'pair')}{scores}[/dim]"


class ModelsScreen(ModalScreen[None]):
    """Posts ModelChosen (enter) or RollbackRequested (b) to the app, then closes."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("b", "rollback", "Roll back")]

    def __init__(self, registry: Registry, in_use: Path | None) -> None:
        super().__init__()
        self.registry, self.in_use = registry, in_use

    def compose(self) -> ComposeResult:
        with Vertical(classes="panel"):
            yield Label("Models", classes="dialog-title")
            yield ListView(id="models")
            yield Label("enter use · b roll back to the previous model · esc close", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        view = self.query_one(ListView)
        for entry in self.registry.entries():
            mark = "▶ " if entry.path == self.in_use else "  "
            item = ListItem(Label(mark + describe(entry)), name=entry.name)
            view.append(item)
        view.focus()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if event.item.name:
            self.app.post_message(ModelChosen(event.item.name))
        self.dismiss(None)

    def action_rollback(self) -> None:
        self.app.post_message(RollbackRequested())
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
