"""The admin CLI: ``komt-bot queue status|jobs|show|cancel|requeue|purge``.

Every verb prints what it found or did (a rich table, or JSON with ``--json``); an unknown job id, a job in the
wrong state or an unreachable Redis is one line on stderr and exit code 1 (2 for bad arguments or a bad setting).
Listings show at
most a preview of a person's question; ``show`` prints it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from komt_bot.cli.boundary import fail
from komt_bot.cli.render import render_detail, render_jobs, render_status, stdout_console
from komt_bot.errors import QueueError, UsageProblem
from komt_bot.queue.connection import redis_url
from komt_bot.queue.inspect import LISTABLE_STATES, QueueAdmin, open_admin
from komt_bot.queue.retry import Backoff
from komt_bot.queue.views import PurgePlan, QueueStatus
from komt_bot.settings import Settings, load_settings

T = TypeVar("T")
MASK = "**********"

queue_app = typer.Typer(help="Look at and act on the job queue.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


# -- running an admin action --------------------------------------------------------------------------------------


def _settings() -> Settings:
    return load_settings()


def _with_admin(settings: Settings, action: Callable[[QueueAdmin], Awaitable[T]]) -> T:
    """Run ``action`` on a fresh event loop with an admin connection; komt-bot's errors become one line."""

    async def main() -> T:
        async with open_admin(settings) as admin:
            return await action(admin)

    return asyncio.run(main())


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def redis_location(settings: Settings) -> str | None:
    """The Redis URL with any password masked, to say which Redis a report is about."""
    url = redis_url(settings)  # KOMT_REDIS_URL, or the embedded Redis of a `komt-bot serve` here
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return parts.geturl()
    host = f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


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
    """Refresh the status every ``interval`` seconds until interrupted (JSON: one object per line).

    A Redis that goes away is waited for (saying so) for up to ``queue.outage_seconds``, like every reader.
    """
    shown = 0
    outage = Backoff(settings.queue.outage_seconds)
    with Live(console=console, auto_refresh=False) if not as_json else contextlib.nullcontext() as live:
        while True:
            try:
                status = await admin.status()
            except QueueError as e:
                if outage.expired():
                    raise
                note = f"reconnecting to Redis ({outage.down_for:.0f} s): {e}"
                if live is None:
                    console.print_json(json.dumps({"reconnecting": True, "error": str(e)}), indent=None)
                else:
                    live.update(Text(note), refresh=True)
                await outage.wait()
                continue
            outage.reset()
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
        stdout_console().print(render_status(status))


def _check_state(state: str | None) -> None:
    if state is not None and state not in LISTABLE_STATES:
        raise UsageProblem(f"unknown state {state!r}: use one of {', '.join(LISTABLE_STATES)}")


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
        stdout_console().print(render_jobs(jobs, time.time()))


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
        stdout_console().print(render_detail(detail))


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
        raise UsageProblem("give a job id or --dead-letter-all (not both)")
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
        fail("purge aborted: nothing changed")
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
