"""The admin CLI: ``komt-bot queue status|jobs|show|cancel|requeue|purge`` and ``komt-bot health``.

Every verb prints what it found or did (a rich table, or JSON with ``--json``); an unknown job id, a job in the
wrong state or an unreachable Redis is one line on stderr and exit code 1 (2 for a bad setting). Listings show at
most a preview of a person's question; ``show`` prints it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from komt_bot.cli.health import COMPONENTS, DEFAULT_TIMEOUT_SECONDS, check_health
from komt_bot.errors import ConfigError, KomtError
from komt_bot.jobs import Event
from komt_bot.queue.inspect import LISTABLE_STATES, QueueAdmin, open_admin
from komt_bot.queue.views import JobDetail, JobSummary, PurgePlan, QueueStatus, RunningJob, WorkerView
from komt_bot.settings import Settings, load_settings

T = TypeVar("T")
MASK = "**********"

queue_app = typer.Typer(help="Look at and act on the job queue.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


# -- running an admin action --------------------------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True).print(Text(message), highlight=False)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as e:
        _fail(f"configuration error: {e}", 2)


def _with_admin(settings: Settings, action: Callable[[QueueAdmin], Awaitable[T]]) -> T:
    """Run ``action`` on a fresh event loop with an admin connection; komt-bot's errors become one line."""

    async def main() -> T:
        async with open_admin(settings) as admin:
            return await action(admin)

    try:
        return asyncio.run(main())
    except ConfigError as e:
        _fail(f"configuration error: {e}", 2)
    except KomtError as e:
        _fail(f"error: {e}")


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def redis_location(settings: Settings) -> str | None:
    """The Redis URL with any password masked, to say which Redis a report is about."""
    if settings.redis_url is None:
        return None
    parts = urlsplit(settings.redis_url.get_secret_value())
    if parts.password is None:
        return parts.geturl()
    host = f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


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


_FLEXIBLE = frozenset({"model", "question", "text", "details", "value"})  # these give way (cut or wrapped) when narrow
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
    return table


def _worker_state(worker: WorkerView, stale_after: float) -> str:
    if worker.stale:
        return f"STALE (no heartbeat for > {stale_after:g}s)"
    return "draining" if worker.draining else "ok"


def _workers_table(status: QueueStatus) -> RenderableType:
    if not status.workers:
        return Text("no live worker: waiting jobs stay queued until one starts (komt-bot worker)")
    table = _table("workers", "name", "host", "model", "capacity", "in flight", "tokens/s", "heartbeat", "state")
    for w in status.workers:
        state = _worker_state(w, status.stale_after_seconds)
        age = f"{seconds(w.heartbeat_age)} ago"
        _row(table, w.name, w.host, w.model, w.capacity, w.in_flight, f"{w.tokens_per_second:g}", age, state)
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


def render_status(status: QueueStatus) -> RenderableType:
    """The ``queue status`` screen: summary, workers, adapters and running jobs."""
    parts: list[RenderableType] = [_summary_table(status), Text(""), _workers_table(status)]
    if status.components:
        parts += [Text(""), _components_table(status)]
    if status.running_jobs:
        parts += [Text(""), _running_table(status)]
    return Group(*parts)


def status_json(status: QueueStatus, settings: Settings) -> dict[str, Any]:
    """``queue status --json``: the status plus which Redis it came from (password masked)."""
    return {"redis": redis_location(settings), "time": round(time.time(), 3), **status.to_json()}


async def watch_status(
    admin: QueueAdmin,
    settings: Settings,
    console: Console,
    *,
    interval: float,
    as_json: bool = False,
    iterations: int | None = None,
) -> None:
    """Refresh the status every ``interval`` seconds until interrupted (JSON: one object per line)."""
    shown = 0
    with Live(console=console, auto_refresh=False) if not as_json else contextlib.nullcontext() as live:
        while True:
            status = await admin.status()
            if live is None:
                console.print_json(json.dumps(status_json(status, settings), default=str), indent=None)
            else:
                live.update(render_status(status), refresh=True)
            shown += 1
            if iterations is not None and shown >= iterations:
                return
            await asyncio.sleep(interval)


@queue_app.command("status")
def status_command(
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes with --watch", min=0.1)] = 2.0,
) -> None:
    """Jobs waiting and running, dead letters, recent outcomes, and every live worker and adapter."""
    settings = _settings()
    if watch:
        console = Console()
        try:
            _with_admin(settings, lambda a: watch_status(a, settings, console, interval=interval, as_json=as_json))
        except KeyboardInterrupt:
            return
        return
    status = _with_admin(settings, lambda a: a.status())
    if as_json:
        _print_json(status_json(status, settings))
    else:
        Console().print(render_status(status))


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


def _check_state(state: str | None) -> None:
    if state is not None and state not in LISTABLE_STATES:
        _fail(f"error: unknown state {state!r}: use one of {', '.join(LISTABLE_STATES)}")


@queue_app.command("jobs")
def jobs_command(
    state: Annotated[str | None, typer.Option(help=f"only jobs in this state: {', '.join(LISTABLE_STATES)}")] = None,
    limit: Annotated[int, typer.Option(help="at most this many jobs", min=1)] = 20,
    as_json: JsonOption = False,
) -> None:
    """Recent jobs, newest first: origin, state, times and a preview of the question."""
    _check_state(state)
    settings = _settings()
    jobs = _with_admin(settings, lambda a: a.jobs(state=state, limit=limit))
    if as_json:
        _print_json([job.to_json() for job in jobs])
    else:
        Console().print(render_jobs(jobs, time.time()))


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


@queue_app.command("show")
def show_command(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    as_json: JsonOption = False,
) -> None:
    """One job: its origin, state, times, the whole question and its events so far."""
    settings = _settings()
    detail = _with_admin(settings, lambda a: a.detail(job_id))
    if as_json:
        _print_json(detail.to_json())
    else:
        Console().print(render_detail(detail))


# -- acting on jobs -----------------------------------------------------------------------------------------------


@queue_app.command("cancel")
def cancel_command(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    as_json: JsonOption = False,
) -> None:
    """Cancel a waiting job, or ask a running one to stop at its next token batch."""
    settings = _settings()
    was = _with_admin(settings, lambda a: a.cancel(job_id))
    action = "cancelled" if was == "queued" else "stop_requested"
    if as_json:
        _print_json({"job_id": job_id, "was": was, "action": action})
    elif was == "queued":
        print(f"cancelled job {job_id} (it was waiting; its thread is told)")
    else:
        print(f"asked running job {job_id} to stop (it stops at its next token batch)")


async def _requeue_all(admin: QueueAdmin) -> dict[str, Any]:
    done, skipped = await admin.requeue_dead_letters()
    return {
        "requeued": [r.job_id for r in done],
        "skipped": [{"job_id": job_id, "reason": reason} for job_id, reason in skipped],
    }


def _print_requeue_all(result: dict[str, Any]) -> None:
    if not result["requeued"] and not result["skipped"]:
        print("no dead-lettered jobs")
        return
    for job_id in result["requeued"]:
        print(f"requeued job {job_id}")
    for skip in result["skipped"]:
        print(f"skipped job {skip['job_id']}: {skip['reason']} (purge --dead-letter drops it)")
    print(f"requeued {len(result['requeued'])} dead-lettered job(s)")


@queue_app.command("requeue")
def requeue_command(
    job_id: Annotated[str | None, typer.Argument(help="a failed (or dead-lettered) or cancelled job")] = None,
    dead_letter_all: Annotated[bool, typer.Option("--dead-letter-all", help="requeue every dead-lettered job")] = False,
    as_json: JsonOption = False,
) -> None:
    """Queue a failed or cancelled job again, from attempt 0, at the back of the queue."""
    if (job_id is None) == (not dead_letter_all):
        _fail("error: give a job id or --dead-letter-all (not both)")
    settings = _settings()
    if job_id is None:
        result = _with_admin(settings, _requeue_all)
        _print_json(result) if as_json else _print_requeue_all(result)
        return
    wanted = job_id
    one = _with_admin(settings, lambda a: a.requeue(wanted))
    if as_json:
        _print_json({"job_id": one.job_id, "was": one.previous_state, "dead_letter_removed": one.dead_letter_removed})
        return
    removed = f"; removed {one.dead_letter_removed} dead-letter entry" if one.dead_letter_removed else ""
    print(f"requeued job {job_id} (it was {one.previous_state}{removed})")


def _purge_question(plan: PurgePlan, *, force: bool, dead_letter: bool) -> str:
    parts = [f"cancel {len(plan.waiting)} waiting job(s)"]
    if force and plan.running:
        parts.append(f"stop {len(plan.running)} running job(s)")
    if dead_letter and plan.dead_letter:
        parts.append(f"drop {plan.dead_letter} dead-letter entry(ies)")
    return "Purge: " + ", ".join(parts) + "?"


def _nothing_to_purge(plan: PurgePlan, *, force: bool, dead_letter: bool) -> bool:
    return not plan.waiting and not (force and plan.running) and not (dead_letter and plan.dead_letter)


@queue_app.command("purge")
def purge_command(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    force: Annotated[bool, typer.Option("--force", help="also stop the running jobs")] = False,
    dead_letter: Annotated[bool, typer.Option("--dead-letter", help="also empty the dead-letter stream")] = False,
    as_json: JsonOption = False,
) -> None:
    """Cancel every waiting job (running jobs only with --force). Asks first unless --yes."""
    settings = _settings()
    plan = _with_admin(settings, lambda a: a.purge_plan())
    if _nothing_to_purge(plan, force=force, dead_letter=dead_letter):
        left = f"; {len(plan.running)} running job(s) left alone (--force stops them)" if plan.running else ""
        print(f"nothing to purge: no waiting jobs{left}")
        return
    if not yes and not typer.confirm(_purge_question(plan, force=force, dead_letter=dead_letter), err=True):
        _fail("purge aborted: nothing changed")
    result = _with_admin(settings, lambda a: a.purge(plan, force=force, dead_letter=dead_letter))
    if as_json:
        _print_json(dataclasses.asdict(result))
        return
    print(f"cancelled {result.cancelled_waiting} waiting job(s)")
    if force:
        print(f"asked {result.stopped_running} running job(s) to stop")
    elif result.running_left:
        print(f"left {result.running_left} running job(s) alone (--force stops them)")
    if dead_letter:
        print(f"dropped {result.dead_letter_dropped} dead-letter entry(ies)")


# -- health -------------------------------------------------------------------------------------------------------


def health_command(
    max_wait: Annotated[
        float | None, typer.Option("--max-wait", help="also unhealthy when the oldest waiting job waited this long (s)")
    ] = None,
    component: Annotated[
        str, typer.Option("--component", help=f"whose heartbeat to check: {', '.join(COMPONENTS)}")
    ] = "worker",
    local: Annotated[
        bool, typer.Option("--local", help="only heartbeats from this host (a container checking its own process)")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for Redis", min=0.1)] = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Exit 0 when Redis answers and a heartbeat is fresh (and the queue moves), else 1 with the reason."""
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"unhealthy: configuration error: {e}")
        raise typer.Exit(1) from e
    verdict = asyncio.run(check_health(settings, component=component, local=local, max_wait=max_wait, timeout=timeout))
    print(verdict.line)
    sys.stdout.flush()
    raise typer.Exit(0 if verdict.ok else 1)
