"""Earlier chats: open, rename, delete."""

from __future__ import annotations

import datetime as dt

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, ListItem, ListView

from tunechat.tui.screens.confirm import Confirm
from tunechat.tui.screens.text_prompt import TextPrompt
from tunechat.core.store import Store


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

    async def on_mount(self) -> None:
        view = self.query_one(ListView)
        for chat in self.store.list_chats():
            await view.append(ListItem(Label(self._label(chat.id)), name=str(chat.id)))
        if len(view.children):
            view.index = 0
        view.focus()

    def _label(self, chat_id: int) -> str:
        chat = self.store.get_chat(chat_id)
        when = dt.datetime.fromtimestamp(chat.updated_at).strftime("%Y-%m-%d %H:%M")
        mark = "▶ " if chat.id == self.current_chat_id else "  "
        return f"{mark}{chat.title}  [dim]{when}[/dim]"

    def _selected(self) -> int | None:
        view = self.query_one(ListView)
        item = view.highlighted_child
        return int(item.name) if item is not None and item.name else None

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if event.item.name:
            self.dismiss(int(event.item.name))

    def action_rename(self) -> None:
        chat_id = self._selected()
        if chat_id is None:
            return

        item = self.query_one(ListView).highlighted_child

        def renamed(title: str | None) -> None:
            if title and item is not None:
                self.store.rename_chat(chat_id, title)
                item.query_one(Label).update(self._label(chat_id))

        self.app.push_screen(TextPrompt("Rename chat", self.store.get_chat(chat_id).title), renamed)

    def action_delete(self) -> None:
        chat_id = self._selected()
        if chat_id is None:
            return
        title = self.store.get_chat(chat_id).title

        view = self.query_one(ListView)
        item = view.highlighted_child

        async def confirmed(yes: bool | None) -> None:
            if yes and item is not None:
                self.store.delete_chat(chat_id)
                if chat_id == self.current_chat_id:
                    self.current_chat_id = None
                await item.remove()
                view.focus()

        self.app.push_screen(Confirm(f"Delete the chat “{title}” and all its messages?", yes="Delete"), confirmed)

    def action_close(self) -> None:
        self.dismiss(None)
