"""A dialog to write or correct a question/answer pair."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, TextArea


class PairEditor(ModalScreen[tuple[str, str] | None]):
    """Returns (question, answer), or None when cancelled. Empty sides are refused in place."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save", priority=True),
        # priority: a TextArea takes ctrl+a to go to the start of the line
        Binding("ctrl+a", "select_all", "Select all", priority=True),
    ]

    def __init__(self, title: str, question: str = "", answer: str = "", focus_answer: bool = False) -> None:
        super().__init__()
        self.dialog_title = title
        self.question = question
        self.answer = answer
        self.focus_answer = focus_answer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.dialog_title, classes="dialog-title")
            yield Label("Question")
            yield TextArea(self.question, id="question", soft_wrap=True, classes="pair-field")
            yield Label("Answer")
            yield TextArea(self.answer, id="answer", soft_wrap=True, classes="pair-field")
            yield Label("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        field = self.query_one("#answer" if self.focus_answer else "#question", TextArea)
        field.focus()
        if self.focus_answer:  # a correction: typing replaces the answer, arrows keep and edit it
            field.select_all()

    def action_select_all(self) -> None:
        """Select the whole text of the focused field."""
        if isinstance(self.focused, TextArea):
            self.focused.select_all()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()

    def action_save(self) -> None:
        question = self.query_one("#question", TextArea).text.strip()
        answer = self.query_one("#answer", TextArea).text.strip()
        if not question or not answer:
            self.query_one("#error", Label).update(
                "The question is empty." if not question else "The answer is empty."
            )
            return
        self.dismiss((question, answer))

    def action_cancel(self) -> None:
        self.dismiss(None)
