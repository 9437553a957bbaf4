"""Earlier chats: open, rename, delete."""

from __future__ import annotations

import datetime as dt

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, ListItem, ListView

from tui.screens.confirm import Confirm
from tui.screens.text_prompt import TextPrompt
from tunechat.store import Store


class ChatsScreen(ModalScreen[int | None]):
    """Dismisses with the id of the chat to open, or None."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("r", "rename", "Rename"),
        Binding("d,delete", "delete", "Delete"),
    ]

    def __init__(self, store: Store, current_chat_id: int | None) -> None:
        super().__init__()
        self.store = store
        self.current_chat_id = current_chat_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="panel"):
            yield Label("Chats", classes="dialog-title")
            yield ListView(id="chats")
            yield Label("enter open · r rename · d delete · esc close", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        view = self.query_one(ListView)
        view.clear()
        for chat in self.store.list_chats():
            when = dt.datetime.fromtimestamp(chat.updated_at).strftime("%Y-%m-%d %H:%M")
            mark = "▶ " if chat.id == self.current_chat_id else "  "
            item = ListItem(Label(f"{mark}{chat.title}  [dim]{when}[/dim]"), id=f"chat-{chat.id}")
            view.append(item)
        view.focus()

    def _selected(self) -> int | None:
        view = self.query_one(ListView)
        item = view.highlighted_child
        return int(item.id.removeprefix("chat-")) if item and item.id else None

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if event.item.id:
            self.dismiss(int(event.item.id.removeprefix("chat-")))

    def action_rename(self) -> None:
        chat_id = self._selected()
        if chat_id is None:
            return

        def renamed(title: str | None) -> None:
            if title:
                self.store.rename_chat(chat_id, title)
                self.reload()

        self.app.push_screen(TextPrompt("Rename chat", self.store.get_chat(chat_id).title), renamed)

    def action_delete(self) -> None:
        chat_id = self._selected()
        if chat_id is None:
            return
        title = self.store.get_chat(chat_id).title

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.store.delete_chat(chat_id)
                if chat_id == self.current_chat_id:
                    self.current_chat_id = None
                self.reload()

        self.app.push_screen(Confirm(f"Delete the chat “{title}” and all its messages?", yes="Delete"), confirmed)

    def action_close(self) -> None:
        self.dismiss(None)
