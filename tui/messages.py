"""What the dialogs tell the app: they post these instead of calling into it.

A dialog is a sibling of the chat on the screen stack, so its messages reach the app, which
owns the registry and model loading. Dialogs post them with ``self.app.post_message`` so that a
message sent just before ``dismiss`` is never lost with the closing screen.
"""

from __future__ import annotations

from pathlib import Path

from textual.message import Message


class ModelChosen(Message):
    """The user picked a model by its registry name (F7): make it current and switch to it."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class RollbackRequested(Message):
    """Go back to the model used before the current one."""


class PairsChanged(Message):
    """Training pairs were added, edited or deleted: the pair count shown is stale."""


class PersonalizeFinished(Message):
    """A personalization installed a new version and made it current: switch the chat to it."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__()
        self.name = name
        self.path = path


class PersonalizeChanged(Message):
    """A personalization moved on, ended or was put away: what the status bar says of it
    ("" once there is nothing left to see)."""

    def __init__(self, status: str) -> None:
        super().__init__()
        self.status = status
