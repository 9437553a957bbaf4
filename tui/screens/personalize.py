"""The personalize screen: progress, live loss, phase, cancel, before/after report, swap."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, ProgressBar, Sparkline, Static

from tunechat.core.store import Store, StoreError
from tunechat.core.wording import count
from tunechat.personalize.job import Event, PersonalizeError, PersonalizeJob
from tunechat.personalize.progress import PHASES
from tunechat.personalize.report import full_report
from tunechat.tui.messages import PersonalizeFinished


class PersonalizeScreen(ModalScreen[str | None]):
    """Dismisses with the name of the new model when one was swapped in, else None."""

    BINDINGS = [
        Binding("escape", "close_or_cancel", "Cancel / close"),
        Binding("y", "consent", "Use anyway", show=False),
    ]

    def __init__(self, store: Store, recipe: str | None = None) -> None:
        super().__init__()
        self.store = store
        self.recipe = recipe  # None: the default method
        self.job: PersonalizeJob | None = None
        self.losses: list[float] = []
        self.installed: str | None = None
        self.finished = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="panel"):
            yield Label(f"Personalize (quick: {self.recipe})" if self.recipe else "Personalize", classes="dialog-title")
            yield Label("", id="phase")
            with Horizontal(id="progress-row"):
                yield ProgressBar(total=len(PHASES), show_eta=False, id="phases")
                yield ProgressBar(total=100, id="steps")
            yield Label("loss", classes="hint")
            yield Sparkline([], id="loss")
            with VerticalScroll(id="report"):
                yield Static("", id="report-text")
            yield Label("esc cancels (the current model stays as it was)", id="hint", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        try:
            self.job = PersonalizeJob(self.store, recipe=self.recipe)
        except (StoreError, ValueError, OSError) as exc:
            self._finish(str(exc))
            return
        pairs = count(self.store.count_pairs(), "pair")
        self.query_one("#phase", Label).update(f"Starting: {pairs} on {self.job.base.name}")
        self.run_job()

    @work(thread=True, exclusive=True, exit_on_error=False, group="personalize", description="Personalizing")
    def run_job(self) -> None:
        assert self.job is not None
        for event in self.job.events():
            self.app.call_from_thread(self._on_event, event)
        self.app.call_from_thread(self._on_job_end)

    def _on_event(self, event: Event) -> None:
        data = event.data
        if event.kind == "phase":
            phase = data["phase"]
            self.query_one("#phase", Label).update(f"{phase}: {data.get('detail', '')}")
            if phase in PHASES:
                self.query_one("#phases", ProgressBar).update(progress=PHASES.index(phase))
        elif event.kind == "progress":
            self.query_one("#steps", ProgressBar).update(total=data["total"], progress=data["step"])
            if data.get("phase") == "train" and "loss" in data:
                self.losses.append(data["loss"])
                self.query_one("#loss", Sparkline).data = list(self.losses)
                self.query_one("#phase", Label).update(
                    f"train: step {data['step']}/{data['total']}, loss {data['loss']:.4f}, "
                    f"about {data.get('eta', 0):.0f}s left")

    def _on_job_end(self) -> None:
        job = self.job
        assert job is not None
        self.query_one("#phases", ProgressBar).update(progress=len(PHASES))
        if job.outcome is None:
            job.discard()
            self._finish(f"Personalization failed: {job.error}\n\nThe current model is unchanged.")
            return
        report = full_report(job.outcome.manifest)
        if job.outcome.failed_checks:
            job.discard()
            self._finish(f"{report}\n\nThe new model failed a check and was not swapped in.")
        elif job.outcome.needs_consent:
            self.query_one("#report-text", Static).update(
                f"{report}\n\nThe new model forgets too much of what the base model knew "
                f"(locality {job.outcome.locality_after:.0%}). Press y to use it anyway, esc to discard it.")
            self.query_one("#hint", Label).update("y use anyway · esc discard")
        else:
            self._install(report, consent=False)

    def _install(self, report: str, consent: bool) -> None:
        assert self.job is not None
        try:
            entry = self.job.install(consent=consent)
        except PersonalizeError as exc:
            self._finish(f"{report}\n\n{exc}")
            return
        self.installed = entry.name
        self.app.post_message(PersonalizeFinished(entry.name, entry.path))
        self._finish(f"{report}\n\nNow using {entry.name}; the chat switches as soon as it is loaded. "
                     "Roll back any time from Models (F7).")

    def _finish(self, text: str) -> None:
        self.finished = True
        self.query_one("#report-text", Static).update(text)
        self.query_one("#hint", Label).update("esc closes")

    def on_unmount(self) -> None:
        """Quitting the app mid-run must not leave a training process behind."""
        if self.job is not None and not self.finished:
            self.job.cancel()

    def action_consent(self) -> None:
        if self.job and self.job.outcome and self.job.outcome.needs_consent and not self.finished:
            self._install(full_report(self.job.outcome.manifest), consent=True)

    def action_close_or_cancel(self) -> None:
        if self.job is not None and not self.finished:
            self.job.cancel()
            self.notify("Personalization cancelled; nothing changed.")
        self.dismiss(self.installed)
