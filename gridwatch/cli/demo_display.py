"""How the demo shows itself on a terminal: its live progress and its summary, through rich."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from gridwatch.cli.common import LEVEL_STYLE, console
from gridwatch.cli.demo_summary import DemoSummary, Latency
from gridwatch.cli.scenarios import print_score
from gridwatch.store.summary import NewAlert


class LiveView:
    """The run as it happens: roles starting, each alert notification, stored readings."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task: TaskID | None = None

    @contextlib.contextmanager
    def starting(self, what: str) -> Iterator[None]:
        with console.status(f"starting {what}…"):
            yield

    def note(self, text: str) -> None:
        self._progress.console.print(text, soft_wrap=True)  # URLs and passwords stay whole

    def alert(self, alert: NewAlert) -> None:
        style = LEVEL_STYLE.get(alert.level, "bold")
        self.note(
            f"[{style}]● {alert.state.upper():8} {alert.summary}[/{style}]  "
            f"[dim]grid {alert.grid_code}; {'; '.join(alert.reasons)}[/dim]"
        )

    def progress(self, stored: int, total: int | None, status: str) -> None:
        if self._task is None:  # after the roles' start, whose status line is live till then
            self._progress.start()
            self._task = self._progress.add_task("readings stored", total=None, status="")
        self._progress.update(self._task, completed=stored, total=total, status=status)

    def __enter__(self) -> LiveView:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._progress.stop()


def print_summary(summary: DemoSummary) -> None:
    table = Table(title="gridwatch demo summary", show_header=False)
    by_level = summary.alerts_by_level
    kpis = summary.kpis
    score = summary.score
    rows = [
        ("scenario events detected / missed", f"{score.detected} / {score.missed}"),
        ("false incidents", str(len(score.false_incidents))),
        ("readings sent / stored", f"{summary.readings_sent} / {summary.readings_stored}"),
        ("lost readings", str(summary.lost_readings)),
        ("reading corrections (a second value for a stored time)", str(summary.corrections)),
        ("camera frames analysed", str(summary.camera_frames_analysed)),
        *((f"  by {name}", str(frames)) for name, frames in sorted(summary.camera_workers.items())),
        *(
            (f"  {tower}: a construction day is (compressed) s", f"{day_s:g}")
            for tower, day_s in sorted(summary.compressed_days_s.items())
        ),
        ("detections", str(summary.detections)),
        ("incidents", str(summary.incidents)),
        (
            "alerts (yellow / orange / red)",
            f"{by_level.get('yellow', 0)} / {by_level.get('orange', 0)} / {by_level.get('red', 0)}",
        ),
        ("alerts resolved", str(summary.alerts_resolved)),
        ("cases by state", _mapping(summary.cases_by_state)),
        ("broadcasts by state", _mapping(summary.broadcasts)),
        (
            "结案率 / 按期结案率 / 返工率 %",
            f"{kpis['closure_rate']} / {kpis['on_time_rate']} / {kpis['rework_rate']}",
        ),
        ("closed within the community %", str(kpis["community_share"])),
        ("mean time to accept / close s", f"{kpis['mean_accept_s']} / {kpis['mean_close_s']}"),
        (
            "messages at dispatch desk / broadcast receiver",
            f"{summary.dispatch_messages_received} / {summary.broadcast_messages_received}",
        ),
        (
            "dead letters (bad messages sent)",
            f"{summary.deadletters} ({summary.bad_messages_sent})",
        ),
        ("latency sensor→stored p50 / p99 ms", _pair(summary.reading_latency_ms)),
        ("latency sensor→alert p50 / p99 ms", _pair(summary.alert_latency_ms)),
        ("database backend", summary.backend),
        ("wall time s", str(summary.wall_seconds)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    console.print("[bold]incidents by kind[/bold]")
    for kind, listed in summary.by_kind.items():
        for incident in listed:
            error = incident.location_error_m
            style = LEVEL_STYLE.get(incident.level.value, "bold")
            console.print(
                f"  {kind.value} [{style}]{incident.level.value}[/{style}] at "
                f"{incident.lon:.5f},{incident.lat:.5f}"
                + (f" ±{error:.0f} m (triangulated)" if error else "")
                + f", grid {incident.grid_code}, raised by {', '.join(incident.raised_by)}",
                soft_wrap=True,  # a line each, whole, for a terminal's search and for logs
            )
    print_score(score)
    for reason in summary.failures:
        console.print(f"[red]{reason}[/red]")


def _mapping(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"


def _pair(p: Latency) -> str:
    return f"{p.p50} / {p.p99}"
