"""One chat message: a role label over a Markdown body that can stream.

A corrected answer shows the corrected text as its body and, under it, the model's own reply
on one dimmed, struck-through line ("was: ..."); the stored message keeps the model's reply.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

from tunechat.core.turns import AnsweredBy


class MessageView(Vertical, can_focus=True):
    """A user or assistant message. Assistant messages stream in and can be kept as pairs."""

    BINDINGS = [
        Binding("k", "screen.keep_answer", "Keep", show=False),
        Binding("e", "screen.correct_answer", "Correct", show=False),
        Binding("c", "screen.copy_message", "Copy", show=False),
    ]

    def __init__(self, role: str, content: str = "", message_id: int | None = None,
                 answered_by: AnsweredBy | None = None, kept: bool = False, correction: str | None = None,
                 why: str | None = None) -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self.content = content  # the message as stored: for an answer, the model's own reply
        self.message_id = message_id
        # Which side of a scoped chat answered (tunechat.core.scope); None with one model.
        self.answered_by: AnsweredBy | None = answered_by
        self.why = why  # why that side answered (tunechat.core.turns.Decision.reason), when known
        # The answer kept in its place as a training pair, when the user corrected this one.
        self.correction: str | None = correction
        self._stream: MarkdownStream | None = None
        self.set_class(kept or correction is not None, "kept")
        self.set_class(correction is not None, "corrected")

    @property
    def answer(self) -> str:
        """What the message says now: the correction when there is one, else its content."""
        return self.correction if self.correction is not None else self.content

    def compose(self) -> ComposeResult:
        yield Static("You" if self.role == "user" else self._label(), classes="role")
        yield Markdown(self.answer or ("…" if self.role == "assistant" else ""), classes="body")
        yield Static(self._was(), classes="was", markup=False)  # shown only once corrected

    @property
    def body(self) -> Markdown:
        return self.query_one(".body", Markdown)

    async def begin_stream(self) -> None:
        self.content = ""
        await self.body.update("")
        self._stream = Markdown.get_stream(self.body)

    async def append(self, delta: str) -> None:
        self.content += delta
        if self._stream is not None:
            await self._stream.write(delta)

    async def end_stream(self, note: str | None = None) -> None:
        """Stop streaming and render the whole answer once, so code blocks come out whole."""
        if self._stream is not None:
            try:
                await self._stream.stop()
            finally:
                self._stream = None
        text = self.content if self.content.strip() else "*(no answer)*"
        if note:
            text += f"\n\n*{note}*"
        await self.body.update(text)

    def _label(self) -> str:
        by = {"personal": "personal model", "base": "base model", "untold": "not taught yet"}
        label = "Assistant" + (f"  · {by[self.answered_by]}" if self.answered_by else "")
        if self.answered_by and self.why:
            label += f": {self.why}"
        if self.correction is not None:
            return label + "  ✎ corrected · kept"
        return label + ("  ✓ kept" if self.has_class("kept") else "")

    def _was(self) -> str:
        """The model's own reply on one line, under a correction."""
        return "was: " + " ".join(self.content.split()) if self.correction is not None else ""

    def _update_label(self) -> None:
        self.query_one(".role", Static).update(self._label())

    def mark_answered_by(self, side: AnsweredBy, why: str | None = None) -> None:
        self.answered_by = side
        self.why = why
        self._update_label()

    def mark_kept(self) -> None:
        self.add_class("kept")
        self._update_label()

    async def mark_corrected(self, answer: str) -> None:
        """Show ``answer``, kept as a pair in place of this one, over the model's reply."""
        self.correction = answer
        self.add_class("kept", "corrected")
        self._update_label()
        self.query_one(".was", Static).update(self._was())
        await self.body.update(answer)
