"""How the admin CLI shows the queue: durations, tables, ``queue status``, ``queue jobs`` and ``queue show``."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from komt_bot.jobs import Event
from komt_bot.queue.views import (
    DeliveryCounts,
    FeedbackStats,
    JobDetail,
    JobSummary,
    QueueStatus,
    RunningJob,
    WorkerView,
)

PIPED_WIDTH = 1000  # piped output (``queue jobs | head``): as wide as the table needs, never cut to 80 columns


def stdout_console() -> Console:
    """Where tables go: a terminal's own width, ``COLUMNS`` when set, else wide enough for any row."""
    console = Console()
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(width=PIPED_WIDTH)


# -- formatting ---------------------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    """A duration for people: ``4.2s``, ``3m12s``, ``2h05m``; ``-`` for none."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def clock(value: float | None) -> str:
    """A unix time as local date and time, ``-`` for none."""
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


# these give way (cut or wrapped) when narrow
_FLEXIBLE = frozenset({"model", "engine", "question", "text", "details", "value"})
_WHOLE = frozenset({"job"})  # never cut: an operator copies these


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    for column in columns:
        if column in _FLEXIBLE:
            table.add_column(column, overflow="fold", ratio=1, min_width=8)
        else:
            table.add_column(column, no_wrap=True, min_width=16 if column in _WHOLE else len(column))
    return table


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(Text(str(cell)) for cell in cells))  # Text: a question or name may contain rich markup


# -- queue status -------------------------------------------------------------------------------------------------


def _summary_table(status: QueueStatus) -> Table:
    table = _table(f"komt queue '{status.prefix}'", "field", "value")
    table.show_header = False
    running = f"{status.running}" + (f" ({len(status.orphaned)} with no live worker)" if status.orphaned else "")
    window = f"last {status.recent_seconds / 60:g} min"
    _row(table, "waiting", status.waiting)
    _row(table, "oldest waiting", seconds(status.oldest_waiting_seconds))
    _row(table, "running", running)
    _row(table, "dead-letter", status.dead_letter)
    _row(table, window, " · ".join(f"{k} {v}" for k, v in status.recent.items()))
    _row(table, "total", " · ".join(f"{k} {v}" for k, v in status.totals.items()))
    feedback = status.feedback
    _row(table, f"feedback, last {feedback.window_seconds / 60:g} min", ratings(feedback.recent))
    _row(table, "feedback, total", ratings(feedback.totals))
    return table


def ratings(counts: dict[str, int]) -> str:
    """``👍 3 · 👎 1 (75% 👍)``: the count of each rating and the share of 👍."""
    share = FeedbackStats.share(counts)
    shown = f"👍 {counts.get('up', 0)} · 👎 {counts.get('down', 0)}"
    return shown + (f" ({share:.0%} 👍)" if share is not None else "")


def _worker_state(worker: WorkerView) -> str:
    if worker.stale:
        return f"STALE (no heartbeat for > {worker.record.stale_after:g}s)"
    return "draining" if worker.record.draining else "ok"


def engine_cell(worker: WorkerView) -> str:
    """The engine, and for a remote one its server and whether it answers: ``openai http://…/v1 ok``."""
    record = worker.record
    if record.endpoint is None:
        return record.engine
    verdict = {True: "ok", False: f"DOWN: {record.engine_error or 'no answer'}", None: "not checked yet"}
    return f"{record.engine} {record.endpoint} {verdict[record.engine_ok]}"


def _workers_table(status: QueueStatus) -> RenderableType:
    if not status.workers:
        return Text("no live worker: waiting jobs stay queued until one starts (komt-bot worker)")
    columns = ("name", "host", "model", "engine", "capacity", "in flight", "tokens/s", "heartbeat", "state")
    table = _table("workers", *columns)
    for w in status.workers:
        r = w.record
        age = f"{seconds(w.heartbeat_age)} ago"
        tok_s = f"{r.tokens_per_second:g}"
        _row(table, r.name, r.host, r.model, engine_cell(w), r.capacity, r.in_flight, tok_s, age, _worker_state(w))
    return table


def _running_note(job: RunningJob) -> str:
    return "ok" if job.worker_live else "STALE: no live worker"


def _running_table(status: QueueStatus) -> Table:
    table = _table("running jobs", "job", "worker", "platform", "channel", "running", "idle", "tries", "state")
    for job in status.running_jobs:
        _row(
            table,
            job.job_id,
            job.worker,
            job.platform,
            job.channel,
            seconds(job.running_seconds),
            seconds(job.idle_seconds),
            job.deliveries,
            _running_note(job),
        )
    return table


def _components_table(status: QueueStatus) -> Table:
    table = _table("adapters", "component", "host", "heartbeat", "state")
    for c in status.components:
        _row(table, c.component, c.host, f"{seconds(c.heartbeat_age)} ago", "STALE" if c.stale else "ok")
    return table


def _deliveries_table(deliveries: DeliveryCounts) -> Table:
    table = _table("open replies", "platform", "bot", "adapter", "replies", "state")
    for bot in deliveries.bots:
        for owner, count in bot.owners.items():
            _row(table, bot.platform, bot.bot, owner, count, "ok")
        if bot.orphaned:
            waited = f"the oldest {seconds(bot.oldest_lapse_seconds)} past its lease"
            _row(table, bot.platform, bot.bot, "-", bot.orphaned, f"WAITING for an adapter ({waited})")
    return table


def render_status(status: QueueStatus) -> RenderableType:
    """The ``queue status`` screen: summary, workers, adapters, open replies and running jobs."""
    parts: list[RenderableType] = [_summary_table(status), Text(""), _workers_table(status)]
    if status.components:
        parts += [Text(""), _components_table(status)]
    if status.deliveries.bots:
        parts += [Text(""), _deliveries_table(status.deliveries)]
    if status.running_jobs:
        parts += [Text(""), _running_table(status)]
    return Group(*parts)


# -- jobs and show ------------------------------------------------------------------------------------------------


def _waited(job: JobSummary, now: float) -> float | None:
    if job.created is None:
        return None
    end = job.started or job.finished or now
    return max(0.0, end - job.created)


def _ran(job: JobSummary, now: float) -> float | None:
    if job.started is None:
        return None
    return max(0.0, (job.finished or now) - job.started)


def render_jobs(jobs: list[JobSummary], now: float) -> RenderableType:
    """The ``queue jobs`` table (question previews only)."""
    if not jobs:
        return Text("no jobs")
    columns = ("job", "state", "platform", "channel", "try", "created", "waited", "ran", "worker", "question")
    table = _table("recent jobs", *columns)
    for job in jobs:
        created = f"{seconds(now - job.created)} ago" if job.created else "-"
        _row(
            table,
            job.job_id,
            job.shown_state,
            job.platform,
            job.channel,
            job.attempt,
            created,
            seconds(_waited(job, now)),
            seconds(_ran(job, now)),
            job.worker or "-",
            job.question,
        )
    return table


_SHOWN_FIELDS = (
    "state",
    "attempt",
    "platform",
    "channel",
    "thread",
    "message",
    "user",
    "worker",
    "finish_reason",
    "usage",
    "error_code",
    "error",
    "previous_error",
)


def _record_table(detail: JobDetail) -> Table:
    record = detail.record.public_fields()
    table = _table(f"job {detail.job_id}", "field", "value")
    table.show_header = False
    for key in _SHOWN_FIELDS:
        if record.get(key):
            _row(table, key, record[key])
    if detail.position is not None:
        _row(table, "position", f"{detail.position} job(s) ahead")
    if detail.feedback.total:
        _row(table, "feedback", ratings(detail.feedback.to_json()))
    for key in ("created", "started", "finished", "requeued"):
        if record.get(key):
            _row(table, key, clock(float(record[key])))
    return table


def _event_rows(events: list[Event]) -> list[tuple[str, str]]:
    """One row per event, consecutive deltas merged into one (their text joined)."""
    rows: list[tuple[str, str]] = []
    deltas: list[str] = []
    for event in events:
        if event.type == "delta":
            deltas.append(event.text)
            continue
        if deltas:
            rows.append((f"delta ×{len(deltas)}", "".join(deltas)))
            deltas = []
        rows.append((event.type, _event_text(event)))
    if deltas:
        rows.append((f"delta ×{len(deltas)}", "".join(deltas)))
    return rows


def _event_text(event: Event) -> str:
    if event.type == "start":
        return f"attempt {event.attempt}"
    if event.type == "done":
        usage = f" {json.dumps(event.usage)}" if event.usage else ""
        return f"{event.finish_reason}{usage}"
    return f"{event.code}: {event.message}"


def render_detail(detail: JobDetail) -> RenderableType:
    """The ``queue show`` screen: the record, the whole conversation, then the events so far."""
    parts: list[RenderableType] = [_record_table(detail), Text("")]
    conversation = _table("conversation", "role", "text")
    for turn in detail.conversation:
        _row(conversation, turn["role"], turn["text"])
    events = _table("events", "event", "details")
    for kind, text in _event_rows(detail.events):
        _row(events, kind, text)
    parts += [conversation, Text(""), events if detail.events else Text("no events yet")]
    return Group(*parts)


# -- komt-bot dev settings ------------------------------------------------------------------------------------------


def render_settings(data: dict[str, Any]) -> Table:
    """``dev settings``: one row per setting, named as its environment variable (``data`` is already masked)."""
    table = _table("effective settings (secrets masked; - is unset)", "setting", "value")

    def rows(values: dict[str, Any], prefix: str) -> None:
        for key, value in values.items():
            name = f"{prefix}{key.upper()}"
            if isinstance(value, dict):
                rows(value, name + "__")
            else:
                shown = "-" if value is None else value if isinstance(value, str) else json.dumps(value)
                table.add_row(name, Text(shown))

    rows(data, "KOMT_")
    return table
