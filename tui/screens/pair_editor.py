"""A dialog to write or correct a question/answer pair, or to say a fact as a sentence."""

from __future__ import annotations

from collections.abc import Callable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, TextArea

from tunechat.core.facts import looks_like_fact, second_person

# Turns a fact said as a sentence into (question, answer), or None when it cannot safely.
FactWriter = Callable[[str], "tuple[str, str] | None"]


class PairEditor(ModalScreen[tuple[str, str] | None]):
    """Returns (question, answer), or None when cancelled. Empty sides are refused in place;
    with a ``write_fact``, a sentence alone ("My dog is called Biscuit.") is turned into a pair
    shown here to accept or edit, or, when that fails, the user is asked for the question."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save", priority=True),
        # priority: a TextArea takes ctrl+a to go to the start of the line
        Binding("ctrl+a", "select_all", "Select all", priority=True),
    ]

    def __init__(self, title: str, question: str = "", answer: str = "", focus_answer: bool = False,
                 write_fact: FactWriter | None = None) -> None:
        super().__init__()
        self.write_fact = write_fact
        self.writing = False  # a pair is being written from a sentence
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
        if self.writing:
            return
        question = self.query_one("#question", TextArea).text.strip()
        answer = self.query_one("#answer", TextArea).text.strip()
        if self.write_fact is not None and question and not answer and looks_like_fact(question):
            self.writing = True
            self.query_one("#error", Label).update("Writing a question and answer from your sentence…")
            self._write_pair(question)
            return
        if not question or not answer:
            self.query_one("#error", Label).update(
                "The question is empty." if not question else "The answer is empty."
            )
            return
        self.dismiss((question, answer))

    @work(thread=True, exclusive=True, group="fact")
    def _write_pair(self, sentence: str) -> None:
        assert self.write_fact is not None
        pair = self.write_fact(sentence)
        self.app.call_from_thread(self._show_written, sentence, pair)

    def _show_written(self, sentence: str, pair: tuple[str, str] | None) -> None:
        """The pair written from the sentence, to accept (Ctrl+S) or edit; else the sentence
        said to the user as the answer, and the user asked for the question."""
        self.writing = False
        if not self.is_attached:  # closed while the pair was being written
            return
        question, answer = self.query_one("#question", TextArea), self.query_one("#answer", TextArea)
        if pair is not None:
            question.load_text(pair[0])
            answer.load_text(pair[1])
            self.query_one("#error", Label).update(
                "Written from your sentence: check it, edit it if need be, then ctrl+s keeps it.")
            answer.focus()
        else:
            question.load_text("")
            answer.load_text(second_person(sentence))  # answers are said to the user
            self.query_one("#error", Label).update(
                "This sentence could not be turned into a pair safely: write the question it answers.")
            question.focus()

    def action_cancel(self) -> None:
        self.dismiss(None)
