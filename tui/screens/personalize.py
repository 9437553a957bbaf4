"""Personalize: a bar per phase and one for the whole run, the loss, cancel; then the report.

The run (:class:`PersonalizeRun`) belongs to the app, not to the screen: the screen can be put
away (c) to chat while the worker trains, and F6 shows the same run again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Collapsible, Footer, Label, ProgressBar, Sparkline, Static

from tunechat.core import scope
from tunechat.core.manifest import Manifest
from tunechat.core.store import Store, StoreError
from tunechat.core.wording import count
from tunechat.personalize.job import Event, PersonalizeError, PersonalizeJob
from tunechat.personalize.progress import PHASE_TITLES, PHASES, RunProgress
from tunechat.personalize.report import details_text, summary_text
from tunechat.tui.messages import PersonalizeChanged, PersonalizeFinished

if TYPE_CHECKING:
    from textual.app import App

State = Literal["running", "consent", "done"]
RUNNING_HINT = "esc cancels (the current model stays as it was) · c back to the chat: the run goes on, F6 shows it"


class RunHost(Protocol):
    """What a run needs of the app: where it is kept while the screen is away."""

    personalize_run: PersonalizeRun | None

    def fit_threads(self) -> None:
        """Give the chat's model fewer threads while a run keeps the cores busy, all after."""


class PersonalizeRun:
    """One personalization as the app follows it: the worker's events in a thread, one
    progress estimate, and at the end the report, the install or the reason there was none."""

    def __init__(self, app: App[Any], job: PersonalizeJob, recipe: str | None, in_chat: bool) -> None:
        self.app, self.job, self.recipe, self.in_chat = app, job, recipe, in_chat
        self.progress: RunProgress = job.progress()
        self.state: State = "running"
        self.detail = ""  # what the worker said the current phase does
        self.manifest: Manifest | None = None
        self.ending = ""  # the closing words under the report
        self.installed: str | None = None
        self.failed = False  # the run ended without a new model in use (said in ``ending``)
        self.screen: PersonalizeScreen | None = None  # the screen showing this run, when one is
        self.cancelled = False

    def start(self) -> None:
        self.app.run_worker(self._pump, thread=True, group="personalize", exit_on_error=False,
                            description="Personalizing")
        self._fit_threads()

    def _fit_threads(self) -> None:
        host: RunHost = self.app  # type: ignore[assignment]
        host.fit_threads()

    def _pump(self) -> None:
        for event in self.job.events():
            self.app.call_from_thread(self.feed, event)
        self.app.call_from_thread(self.end)

    # -- on the app's thread ------------------------------------------------------------
    def feed(self, event: Event) -> None:
        if self.cancelled:
            return
        self.progress.feed(event.kind, event.data)
        if event.kind == "phase":
            self.detail = event.data.get("detail", "")
        self.changed()

    def end(self) -> None:
        """The worker is done: report, then swap in, ask for consent, or say why not."""
        job = self.job
        if self.cancelled:
            return
        self.progress.finished = True
        if job.outcome is None:
            job.discard()
            self._close(f"Personalization failed: {job.error}\n\nThe current model is unchanged.", failed=True)
            return
        self.manifest = job.outcome.manifest
        if job.outcome.failed_checks:
            job.discard()
            self._close("The new model failed a check and was not swapped in; the current model is unchanged.",
                        failed=True)
        elif job.outcome.needs_consent:
            self.state = "consent"
            self.ending = (f"The new model forgets too much of what the base model knew (locality "
                           f"{job.outcome.locality_after:.0%}). Press y to use it anyway, esc to discard it.")
            self.changed()
            if self.screen is None:
                self.app.notify("The new model needs your consent: F6 shows why.", title="Personalize")
        else:
            self.install(consent=False)

    def fail(self, error: BaseException) -> None:
        """The thread itself broke (not the worker): never leave a run that looks alive."""
        if self.cancelled:
            return
        self.job.cancel()
        self._close(f"Personalization stopped: {type(error).__name__}: {error}\n\nThe current model is unchanged.",
                    failed=True)

    def install(self, consent: bool) -> None:
        try:
            entry = self.job.install(consent=consent)
        except (PersonalizeError, StoreError, OSError) as exc:  # a full disk or read-only folder too
            self._close(f"{exc}\n\nThe current model is unchanged.", failed=True)
            return
        self.installed = entry.name
        self.app.post_message(PersonalizeFinished(entry.name, entry.path))
        self._close(f"Now using {entry.name}; the chat switches as soon as it is loaded. "
                    "Roll back any time from Models (F7).")

    def cancel(self) -> None:
        """Stop the worker, or discard the model waiting for consent: nothing changes."""
        if self.state != "done":
            self.cancelled = True
            self.job.cancel()
            self.state = "done"
            self._fit_threads()

    def _close(self, ending: str, failed: bool = False) -> None:
        self.state, self.ending, self.failed = "done", ending, failed
        self.changed()
        if self.screen is None:  # finished while the user chats: say so
            if failed:
                self.app.notify("Personalization did not finish: F6 says why. The current model is unchanged.",
                                title="Personalize", severity="error")
            else:
                self.app.notify("Personalization finished: F6 shows the report." if self.installed is None else
                                f"Now using {self.installed}. F6 shows the report.", title="Personalize")

    def changed(self) -> None:
        self._fit_threads()
        if self.screen is not None and self.screen.is_attached:
            self.screen.show()
            self.screen.refresh_bindings()
        self.app.post_message(PersonalizeChanged(self.status_text()))

    # -- what the status bar says while the screen is away --------------------------------
    def status_text(self) -> str:
        if self.state == "consent":
            return "personalized: needs your consent (F6)"
        if self.state == "done":
            return "personalize failed: F6 says why" if self.failed else "personalized: F6 shows the report"
        return f"personalizing {self.progress.overall:.0%}, {self.progress.eta_text()} (F6)"


class PersonalizeScreen(ModalScreen[str | None]):
    """Shows the app's run, starting one when none is under way or waiting to be read.
    Dismisses with the name of the new model when one was swapped in, else None."""

    BINDINGS = [
        Binding("escape", "close_or_cancel", "Cancel / close"),
        Binding("c", "to_chat", "Chat meanwhile"),
        Binding("d", "toggle_details", "Details"),
        Binding("y", "consent", "Use anyway", show=False),
    ]

    def __init__(self, store: Store, recipe: str | None = None, ignore_memory: bool = False) -> None:
        super().__init__()
        self.store = store
        self.recipe = recipe  # None: the default method
        self.ignore_memory = ignore_memory  # the user chose to try a base that seems too large
        self.run: PersonalizeRun | None = None
        self.error: str | None = None  # why no run could start

    # -- what tests and callers read ----------------------------------------------------
    @property
    def job(self) -> PersonalizeJob | None:
        return self.run.job if self.run else None

    @property
    def losses(self) -> list[float]:
        return self.run.progress.losses if self.run else []

    @property
    def finished(self) -> bool:
        return self.run is None or self.run.state == "done"

    @property
    def installed(self) -> str | None:
        return self.run.installed if self.run else None

    # -- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Vertical(classes="panel"):
            yield Label(f"Personalize (quick: {self.recipe})" if self.recipe else "Personalize",
                        id="title", classes="dialog-title")
            yield Label("", id="intro")
            with Vertical(id="progress"):
                with Horizontal(classes="bar-row", id="row-overall"):
                    yield Label("Whole run", classes="bar-label")
                    yield ProgressBar(total=100, show_eta=False, id="overall")
                    yield Label("", id="eta", classes="bar-text")
                for phase in PHASES:
                    with Horizontal(classes="bar-row", id=f"row-{phase}"):
                        yield Label("", id=f"label-{phase}", classes="bar-label")
                        yield ProgressBar(total=1, show_eta=False, show_percentage=False, id=f"bar-{phase}")
                        yield Label("", id=f"text-{phase}", classes="bar-text")
                yield Label("", id="phase", classes="hint")
                yield Label("loss (lower is better)", id="loss-label", classes="hint")
                yield Sparkline([], id="loss")
                yield Static("", id="busy")
            with Vertical(id="report"):
                yield Static("", id="report-text")
                yield Static("", id="result")
                with VerticalScroll(id="details-scroll"):
                    with Collapsible(title="Details: every score and what good looks like (d)", id="details"):
                        yield Static("", id="details-text")
            yield Label(RUNNING_HINT, id="hint", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        host: RunHost = self.app  # type: ignore[assignment]
        run = host.personalize_run
        if run is None:
            try:
                job = PersonalizeJob(self.store, recipe=self.recipe, ignore_memory=self.ignore_memory)
            except (StoreError, ValueError, OSError) as exc:
                self.error = str(exc)
                self.show()
                return
            run = PersonalizeRun(self.app, job, self.recipe, scope.scoping_enabled(self.store))
            host.personalize_run = run
            run.start()
        elif run.recipe != self.recipe and run.state == "running":
            self.notify("A personalization is already running: here it is.")
        self.run, run.screen = run, self
        self.recipe = run.recipe
        self.query_one("#title", Label).update(
            f"Personalize (quick: {run.recipe})" if run.recipe else "Personalize")
        pairs = count(len(run.job.spec.pairs), "pair")
        processes = run.job.spec.processes
        self.query_one("#intro", Label).update(
            f"Teaching {run.job.base.name} your {pairs} (method {run.job.spec.recipe}"
            + (f", in {processes} processes)." if processes > 1 else ")."))
        rows, above = self.query_one("#progress", Vertical), self.query_one("#row-overall")
        for phase in run.progress.order:  # as the worker runs them
            row = self.query_one(f"#row-{phase}")
            rows.move_child(row, after=above)
            above = row
        self.set_interval(1.0, self._tick)  # the time left moves between events too
        self.show()

    def _tick(self) -> None:
        if self.run is not None and self.run.state == "running":
            self.show()

    def on_unmount(self) -> None:
        if self.run is not None and self.run.screen is self:
            self.run.screen = None

    # -- drawing ------------------------------------------------------------------------
    def show(self) -> None:
        """Draw the run as it stands: its progress while it runs, its report once done."""
        run = self.run
        if run is None:
            self._show_report(f"Personalize could not start: {self.error}", "", "", "esc closes")
            return
        if run.state == "running":
            self._show_progress(run)
            return
        manifest = run.manifest
        self._show_report(summary_text(manifest, run.in_chat, "tui") if manifest else "",
                          details_text(manifest) if manifest else "", run.ending,
                          "y use anyway · esc discard · d details" if run.state == "consent" else
                          "esc closes · d details")

    def _show_progress(self, run: PersonalizeRun) -> None:
        progress = run.progress
        self.query_one("#intro").display = True
        self.query_one("#progress").display = True
        self.query_one("#report").display = False
        self.query_one("#overall", ProgressBar).update(progress=round(100 * progress.overall))
        self.query_one("#eta", Label).update(progress.eta_text())
        for phase in progress.order:
            share = progress.share(phase)
            state = progress.phases[phase]
            mark = "✓" if share == 1.0 and not state.skipped else "▶" if phase == progress.current else " "
            self.query_one(f"#label-{phase}", Label).update(f"{mark} {PHASE_TITLES[phase]}")
            bar = self.query_one(f"#bar-{phase}", ProgressBar)
            if share is None:
                bar.update(total=None)  # running, no steps to count: the bar pulses
            else:
                bar.update(total=1, progress=share)
            self.query_one(f"#text-{phase}", Label).update(progress.phase_text(phase))
        current = progress.current
        self.query_one("#phase", Label).update(
            f"{PHASE_TITLES[current]}: {run.detail}" if current and run.detail else "Starting…")
        self.query_one("#loss", Sparkline).data = list(progress.losses)
        if progress.losses:
            self.query_one("#loss-label", Label).update(f"loss {progress.losses[-1]:.4f} (lower is better)")
        busy = progress.busy
        self.query_one("#busy", Static).update(
            f"⚠ {busy} The run goes on meanwhile: press c to use the chat (F6 shows this again)."
            if busy else "")
        self.query_one("#hint", Label).update(RUNNING_HINT)

    def _show_report(self, summary: str, details: str, ending: str, hint: str) -> None:
        self.query_one("#intro").display = False
        self.query_one("#progress").display = False
        self.query_one("#report").display = True
        self.query_one("#report-text", Static).update(summary)
        self.query_one("#details-scroll").display = bool(details)
        self.query_one("#details-text", Static).update(details)
        self.query_one("#result", Static).update(ending)
        self.query_one("#hint", Label).update(hint)

    # -- keys ---------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.run.state if self.run else "done"
        if action == "to_chat":
            return state == "running"
        if action == "consent":
            return state == "consent"
        if action == "toggle_details":
            return state != "running" and self.run is not None and self.run.manifest is not None
        return True

    def action_to_chat(self) -> None:
        """Back to the chat; the run goes on and the status bar follows it."""
        self.dismiss(self.installed)

    def action_toggle_details(self) -> None:
        details = self.query_one("#details", Collapsible)
        details.collapsed = not details.collapsed

    def action_consent(self) -> None:
        if self.run is not None:
            self.run.install(consent=True)

    def action_close_or_cancel(self) -> None:
        host: RunHost = self.app  # type: ignore[assignment]
        run = self.run
        if run is not None and run.state != "done":
            run.cancel()
            self.notify("Personalization cancelled; nothing changed.")
        if host.personalize_run is run:
            host.personalize_run = None
            self.app.post_message(PersonalizeChanged(""))
        self.dismiss(self.installed)
