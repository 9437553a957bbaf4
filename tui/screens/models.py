"""Models: the embedded default, local files and personal versions; use one, roll back, export.

Beside the list, the highlighted version's details: when and how it was made, its scores, its
size on disk, and which pairs it learned compared with the version before it.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, ListItem, ListView, Static

from tunechat.core.manifest import Manifest, Scores
from tunechat.core.registry import ModelEntry, Registry
from tunechat.core.text import one_line
from tunechat.core.wording import count
from tunechat.tui.messages import ModelChosen, RollbackRequested
from tunechat.tui.screens.text_prompt import TextPrompt

SCORES = {"reliability": "reliability", "generalization": "generalization", "locality": "locality",
          "no_borrowing": "no borrowing", "admits": "admits untold"}


def describe(entry: ModelEntry) -> str:
    """Two short lines: the name, then what kind it is, or how many pairs it learned, how many
    of them it answers (reliability) and how many general answers it kept (locality)."""
    if entry.kind != "personal":
        return f"{entry.name}\n[dim]{entry.kind}[/dim]"
    m = entry.manifest or Manifest()
    after = m.metrics.after or Scores()
    scores = "".join(f" · {label} {getattr(after, key):.0%}"
                     for key, label in (("reliability", "facts"), ("locality", "general"))
                     if getattr(after, key) is not None)
    return f"{entry.name}\n[dim]{count(m.pairs_count, 'pair')}{scores}[/dim]"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes < 1e9 else f"{n_bytes / 1e9:.2f} GB"


def details(entry: ModelEntry, previous: ModelEntry | None) -> str:
    """What a version is: made when and how, its scores alone and in chat, its size, and the
    pairs it learned that the version before it did not (and the other way round)."""
    if entry.kind != "personal" or entry.manifest is None:
        return f"[b]{entry.name}[/b]\n{entry.kind} model\n{entry.path}\n{_size(entry.disk_bytes())}"
    m = entry.manifest
    lines = [f"[b]{entry.name}[/b]",
             f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(m.created_at))} · method {m.method} · "
             f"{count(m.pairs_count, 'pair')} · {_size(entry.disk_bytes())} on disk"
             + ("" if entry.adapter_path else " · no adapter (older version)")
             + ("" if entry.merged_path else " · adapter only"),
             f"base: {Path(m.base_path or '?').name}", ""]
    after, scoped = m.metrics.after or Scores(), m.metrics.scoped
    lines.append("score            alone   in chat")
    for key, label in SCORES.items():
        in_chat = _pct(getattr(scoped, key)) if scoped else "n/a"
        lines.append(f"{label:16} {_pct(getattr(after, key)):>5}   {in_chat:>5}")
    learned = entry.learned_pairs()
    if learned is None:
        lines += ["", "[dim]The pairs this version learned were not kept with it.[/dim]"]
        return "\n".join(lines)
    before = (previous.learned_pairs() if previous is not None else None) or []
    added = [(q, a) for q, a in learned if (q, a) not in before]
    removed = [(q, a) for q, a in before if (q, a) not in learned]
    kept = len(learned) - len(added)
    since = f"since {previous.name}" if previous is not None else "(the first version)"
    lines += ["", f"learned {count(len(learned), 'pair')}; {since}: {len(added)} new, {kept} kept, "
              f"{len(removed)} retired or deleted"]
    lines += [f"[green]+ {one_line(q, 40)} → {one_line(a, 30)}[/green]" for q, a in added[:20]]
    lines += [f"[red]− {one_line(q, 40)} → {one_line(a, 30)}[/red]" for q, a in removed[:20]]
    return "\n".join(lines)


class ModelsScreen(ModalScreen[None]):
    """Posts ModelChosen (enter) or RollbackRequested (b) to the app, then closes; x exports the
    highlighted version to a folder."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("b", "rollback", "Roll back"),
                Binding("x", "export", "Export")]

    def __init__(self, registry: Registry, in_use: Path | None, export: bool = False) -> None:
        super().__init__()
        self.registry, self.in_use = registry, in_use
        self.entries = registry.entries()
        self.export_at_once = export  # opened to export (the command palette): ask for the folder now

    def compose(self) -> ComposeResult:
        with Vertical(classes="panel"):
            yield Label("Models", classes="dialog-title")
            with Horizontal(id="models-body"):
                yield ListView(id="models")
                with VerticalScroll(id="model-details"):
                    yield Static("", id="details")
            yield Label("enter use · b roll back to the previous model · x export · esc close", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        view = self.query_one(ListView)
        for entry in self.entries:
            mark = "▶ " if entry.path == self.in_use else "  "
            view.append(ListItem(Label(mark + describe(entry).replace("\n", "\n  ")), name=entry.name))
        in_use = next((i for i, e in enumerate(self.entries) if e.path == self.in_use), 0)
        view.index = in_use if self.entries else None
        self.show_details()
        view.focus()
        if self.export_at_once:
            personal = [i for i, e in enumerate(self.entries) if e.kind == "personal"]
            if self.highlighted() not in [self.entries[i] for i in personal] and personal:
                view.index = personal[-1]  # the model in use is not a version: the newest one
            self.action_export()

    def highlighted(self) -> ModelEntry | None:
        index = self.query_one(ListView).index
        return self.entries[index] if index is not None and 0 <= index < len(self.entries) else None

    def on_list_view_highlighted(self, event: ListView.Highlighted) -> None:
        self.show_details()

    def show_details(self) -> None:
        entry = self.highlighted()
        if entry is None:
            return
        personal = [e for e in self.entries if e.kind == "personal"]
        previous = personal[personal.index(entry) - 1] if entry in personal and personal.index(entry) > 0 else None
        self.query_one("#details", Static).update(details(entry, previous))

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if event.item.name:
            self.app.post_message(ModelChosen(event.item.name))
        self.dismiss(None)

    def action_rollback(self) -> None:
        self.app.post_message(RollbackRequested())
        self.dismiss(None)

    def action_export(self) -> None:
        entry = self.highlighted()
        if entry is None or entry.kind != "personal":
            self.notify("Only personal versions can be exported.", severity="warning")
            return

        def chosen(folder: str | None) -> None:
            if folder:
                # On the app: its worker handler shows an unexpected failure; the list may close meanwhile.
                self.app.run_worker(partial(export, self.app, self.registry, entry, Path(folder.strip()).expanduser()),
                                    thread=True, group="export", exit_on_error=False, description="Exporting")

        default = str(Path.home() / f"tunechat-{entry.name}")
        self.app.push_screen(TextPrompt(f"Export {entry.name} to a new folder", default,
                                        hint="The merged GGUF, an Ollama Modelfile, the adapter, the pairs "
                                             "and a README.txt on how to run each."), chosen)

    def action_close(self) -> None:
        self.dismiss(None)


def export(app: App[Any], registry: Registry, entry: ModelEntry, folder: Path) -> None:
    """Write ``entry`` to ``folder`` (in a worker thread) and say where, or why not."""
    from tunechat.core.export import ExportError, export_version, store_pairs_if_trained_on

    try:
        out = export_version(entry, folder, store_pairs_if_trained_on(entry, registry.store))
    except ExportError as exc:
        app.call_from_thread(app.notify, str(exc), title="Export failed", severity="error")
        return
    app.call_from_thread(app.notify, f"{out} (see README.txt there)", title=f"Exported {entry.name}")
