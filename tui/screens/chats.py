"""Earlier chats: open, rename, delete."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, ListItem, ListView
from textual.worker import Worker, WorkerState

from tunechat.core.store import Store
from tunechat.tui.screens.confirm import Confirm
from tunechat.tui.screens.text_prompt import TextPrompt


@dataclass(frozen=True)
class ChatsClosed:
    """How the chat list was left: a chat to open (or None), and whether the chat that was open
    is deleted (its deletion may still be running: the chat must not go on writing to it)."""

    open_chat: int | None = None
    current_deleted: bool = False


class ChatsScreen(ModalScreen[ChatsClosed]):
    """Dismisses with a :class:`ChatsClosed`. Deleting runs in a thread (the store runs VACUUM)."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("r", "rename", "Rename"),
        Binding("d,delete", "delete", "Delete"),
    ]

    def __init__(self, store: Store, current_chat_id: int | None) -> None:
        super().__init__()
        self.store = store
        self.current_chat_id = current_chat_id
        self.current_deleted = False
        self._deleting: dict[Worker[None], int] = {}  # deletions under way, and their chat

    def compose(self) -> ComposeResult:
        with Vertical(classes="panel"):
            yield Label("Chats", classes="dialog-title")
            yield ListView(id="chats")
            yield Label("enter open · r rename · d delete · esc close", classes="hint")
        yield Footer()

    async def on_mount(self) -> None:
        await self._fill(0)
        self.query_one(ListView).focus()

    async def _fill(self, index: int) -> None:
        """(Re)list the chats, newest first, highlighting the row at ``index`` (or the last)."""
        view = self.query_one(ListView)
        await view.clear()
        going = set(self._deleting.values())
        for chat in self.store.list_chats():
            await view.append(ListItem(Label(self._label(chat.id)), name=str(chat.id), disabled=chat.id in going))
        if len(view.children):
            view.index = min(index, len(view.children) - 1)

    def _label(self, chat_id: int) -> str:
        chat = self.store.get_chat(chat_id)
        when = dt.datetime.fromtimestamp(chat.updated_at).strftime("%Y-%m-%d %H:%M")
        mark = "▶ " if chat.id == self.current_chat_id else "  "
        return f"{mark}{chat.title}  [dim]{when}[/dim]"

    def _selected(self) -> int | None:
        view = self.query_one(ListView)
        item = view.highlighted_child
        return int(item.name) if item is not None and item.name and not item.disabled else None

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if event.item.name and not event.item.disabled:  # disabled: being deleted
            self.dismiss(ChatsClosed(int(event.item.name), self.current_deleted))

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

        def confirmed(yes: bool | None) -> None:
            if yes and item is not None:
                if chat_id == self.current_chat_id:
                    self.current_chat_id, self.current_deleted = None, True
                item.disabled = True  # not openable while it goes
                view.focus()
                self._deleting[self._delete(chat_id)] = chat_id

        self.app.push_screen(Confirm(f"Delete the chat “{title}” and all its messages?", yes="Delete"), confirmed)

    @work(thread=True, exit_on_error=False, group="delete-chat", description="Deleting chat")
    def _delete(self, chat_id: int) -> None:
        self.store.delete_chat(chat_id)

    async def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "delete-chat" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        self._deleting.pop(event.worker, None)
        if event.state == WorkerState.ERROR:
            self.notify(f"The chat could not be deleted: {event.worker.error}", severity="error")
        await self._fill(self.query_one(ListView).index or 0)

    def action_close(self) -> None:
        self.dismiss(ChatsClosed(None, self.current_deleted))
