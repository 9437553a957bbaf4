"""The training pairs: list, search, add, edit, delete, retire, and what the checks found."""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Static

from tunechat.core import pair_checks
from tunechat.core.pair_checks import Problem
from tunechat.core.store import Store, StoreError
from tunechat.core.text import one_line
from tunechat.core.wording import count
from tunechat.tui.messages import PairsChanged
from tunechat.tui.screens.confirm import Confirm
from tunechat.tui.screens.pair_editor import PairEditor

KIND_LABELS = {"duplicate": "duplicate", "contradiction": "contradicts", "overlong": "too long",
               "no_question": "asks nothing", "nothing_new": "nothing new"}
MAX_SHOWN = 4  # problems spelled out above the summary line


class PairsScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("a", "add", "Add"),
        Binding("e,enter", "edit", "Edit"),
        Binding("d,delete", "delete", "Delete"),
        Binding("r", "retire", "Retire / restore"),
        Binding("h", "history", "History"),
        Binding("slash", "search", "Search"),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.show_retired = False
        self.problems: list[Problem] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="panel"):
            yield Label("Training pairs", classes="dialog-title")
            yield Input(placeholder="Search questions and answers (/)", id="search")
            yield DataTable(id="pairs", cursor_type="row", zebra_stripes=True)
            yield Static("", id="problems", classes="problems")
            yield Label("", id="summary", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("#", key="id", width=5)
        table.add_column("Question", key="q", width=40)
        table.add_column("Answer", key="a", width=50)
        table.add_column("From", key="src", width=10)
        table.add_column("Check", key="check", width=16)
        self.refresh_rows()
        table.focus()

    def refresh_rows(self) -> None:
        search = self.query_one("#search", Input).value.strip()
        table = self.query_one(DataTable)
        table.clear()
        self.problems = pair_checks.check_pairs(self.store.pairs())
        flagged: dict[int, str] = {}
        for problem in self.problems:
            for pair_id in problem.pair_ids:
                flagged.setdefault(pair_id, "⚠ " + KIND_LABELS[problem.kind])
        rows = self.store.pairs(search, retired=self.show_retired)
        for p in rows:
            check = "retired" if p.retired else flagged.get(p.id, "")
            table.add_row(str(p.id), one_line(p.question, 40), one_line(p.answer, 50), p.source, check,
                          key=str(p.id))
        self.query_one("#problems", Static).update(
            "\n".join(["[b]" + pair_checks.summary(self.problems) + "[/b]"]
                      + [p.text for p in self.problems[:MAX_SHOWN]]
                      + ([f"… and {len(self.problems) - MAX_SHOWN} more"] if len(self.problems) > MAX_SHOWN else []))
            if self.problems else "")
        total = self.store.count_pairs()
        shown = f"{len(rows)} of {count(total, 'pair')}" if search else count(total, "pair")
        history = " (with retired)" if self.show_retired else ""
        self.query_one("#summary", Label).update(
            f"{shown}{history} · a add · e edit · d delete · r retire/restore · h history · / search · esc close")

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        self.refresh_rows()

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        self.query_one(DataTable).focus()

    def _selected_id(self) -> int | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(key.value) if key.value else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """/ focuses the search box; typed in the box, it is a slash like any other character."""
        return not (action == "search" and self.focused is self.query_one("#search", Input))

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_add(self) -> None:
        self.app.push_screen(PairEditor("Add a pair"), self._after_edit(None))

    def action_edit(self) -> None:
        pair_id = self._selected_id()
        if pair_id is None:
            return
        pair = self.store.get_pair(pair_id)
        self.app.push_screen(PairEditor(f"Edit pair {pair_id}", pair.question, pair.answer), self._after_edit(pair_id))

    def _after_edit(self, pair_id: int | None) -> Callable[[tuple[str, str] | None], None]:
        def done(result: tuple[str, str] | None) -> None:
            if not result:
                return
            try:
                if pair_id is None:
                    self.store.add_pair(*result, source="added")
                else:
                    self.store.update_pair(pair_id, *result)
            except StoreError as exc:
                self.notify(str(exc), severity="error")
            self.refresh_rows()
            self.app.post_message(PairsChanged())

        return done

    def action_delete(self) -> None:
        pair_id = self._selected_id()
        if pair_id is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.store.delete_pair(pair_id)
                self.refresh_rows()
                self.app.post_message(PairsChanged())

        self.app.push_screen(Confirm(f"Delete pair {pair_id}?", yes="Delete"), confirmed)

    def action_retire(self) -> None:
        """Retire the highlighted pair (a fact that changed: it stays in history, untrained), or
        put a retired one back. Retiring the older of a contradiction names the newer as its
        replacement."""
        pair_id = self._selected_id()
        if pair_id is None:
            return
        pair = self.store.get_pair(pair_id)
        try:
            if pair.retired:
                self.store.restore_pair(pair_id)
                self.notify(f"Pair {pair_id} is in use again.")
            else:
                newer = next((p.pair_ids[1] for p in self.problems
                              if p.kind == "contradiction" and p.pair_ids[0] == pair_id), None)
                self.store.retire_pair(pair_id, replaced_by=newer)
                by = f" for pair {newer}" if newer is not None else ""
                self.notify(f"Pair {pair_id} retired{by}: kept in history (h), not trained again.")
        except StoreError as exc:
            self.notify(str(exc), severity="error")
        self.refresh_rows()
        self.app.post_message(PairsChanged())

    def action_history(self) -> None:
        self.show_retired = not self.show_retired
        self.refresh_rows()

    def action_close(self) -> None:
        self.dismiss(None)
