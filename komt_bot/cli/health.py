"""``komt-bot health``: one yes/no answer for a Docker HEALTHCHECK or a monitor, with one line saying why.

Healthy means: Redis answers, the chosen component has a fresh heartbeat record (by default any serving worker;
with ``host`` only records published from that host, i.e. a container's own process), a worker with the ``openai``
engine last found its model server answering, with ``max_wait`` the job at the head of the queue has waited less
than that, and for an adapter no reply of its platform has waited for an owner longer than ``max_orphan_age`` past
its lease (its adapter died or handed it over, and no process claimed it).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import typer

from komt_bot.errors import ConfigError, KomtError
from komt_bot.queue.inspect import QueueAdmin, open_admin
from komt_bot.queue.views import ComponentView, DeliveryCounts, WorkerView
from komt_bot.settings import Settings, load_settings

COMPONENTS = ("worker", "slack", "discord")
DEFAULT_TIMEOUT_SECONDS = 5.0
# A lapsed lease is normal for a few seconds (the next claim, or a successor starting after a deploy, takes it).
DEFAULT_MAX_ORPHAN_AGE_SECONDS = 30.0


class Component(StrEnum):
    """``health --component``: whose heartbeat to check (a choice: a typo is a usage error, exit 2)."""

    worker = "worker"
    slack = "slack"
    discord = "discord"


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict and the one line that explains it."""

    ok: bool
    reason: str

    @property
    def line(self) -> str:
        """``ok: ...`` or ``unhealthy: ...``."""
        return f"{'ok' if self.ok else 'unhealthy'}: {self.reason}"


def this_host() -> str:
    """The host name heartbeat records carry for processes on this machine (in a container: the container's)."""
    return socket.gethostname()


def _where(host: str | None) -> str:
    return f" on {host}" if host else ""


def judge_workers(workers: list[WorkerView], host: str | None) -> Health:
    """Healthy when at least one worker (on ``host``, if given) is fresh, by its record's own ``stale_after``, and
    not draining."""
    mine = [w for w in workers if host is None or w.record.host == host]
    where = _where(host)
    if not mine:
        return Health(False, f"no worker heartbeat{where}: no worker is running (start one with `komt-bot worker`)")
    serving = [w for w in mine if w.serving]
    answering = [w for w in serving if w.record.engine_ok is not False]  # a remote engine's server answers (or none)
    if serving and not answering:
        return Health(
            False,
            f"{len(serving)} worker(s) serving{where}, but their model server does not answer: "
            + (serving[0].record.engine_error or "no answer"),
        )
    if answering:
        newest = min(w.heartbeat_age for w in answering)
        servers = sorted({w.record.endpoint for w in answering if w.record.endpoint and w.record.engine_ok})
        answers = f"; model server {', '.join(servers)} answers" if servers else ""
        return Health(True, f"{len(answering)} worker(s) serving{where}, newest heartbeat {newest:.1f} s ago{answers}")
    fresh = [w for w in mine if not w.stale]
    if fresh:
        names = ", ".join(w.record.name for w in fresh)
        return Health(False, f"every worker{where} is draining (shutting down): {names}")
    youngest = min(mine, key=lambda w: w.heartbeat_age)
    return Health(
        False,
        f"worker heartbeat{where} is stale: the newest is {youngest.heartbeat_age:.1f} s old "
        f"(limit {youngest.record.stale_after:g} s)",
    )


def judge_component(components: list[ComponentView], component: str, host: str | None) -> Health:
    """Healthy when an adapter of this kind (on ``host``, if given) has a fresh heartbeat record."""
    mine = [c for c in components if c.component == component and (host is None or c.host == host)]
    fresh = [c for c in mine if not c.stale]
    where = _where(host)
    if fresh:
        newest = min(c.heartbeat_age for c in fresh)
        return Health(True, f"{component} adapter alive{where}, heartbeat {newest:.1f} s ago")
    if mine:
        return Health(False, f"{component} adapter heartbeat{where} is stale")
    return Health(False, f"no {component} adapter heartbeat{where}: it is not running or cannot reach Redis")


def judge_deliveries(deliveries: DeliveryCounts, component: str, max_orphan_age: float) -> Health | None:
    """Unhealthy when replies of this platform have waited for an owner longer than ``max_orphan_age`` past their
    lease; None when none has."""
    waiting = [bot for bot in deliveries.of_platform(component).bots if bot.orphaned]
    oldest = max((bot.oldest_lapse_seconds or 0.0 for bot in waiting), default=0.0)
    if oldest <= max_orphan_age:
        return None
    count = sum(bot.orphaned for bot in waiting)
    return Health(
        False,
        f"{count} {component} repl{'y has' if count == 1 else 'ies have'} had no adapter for up to {oldest:.1f} s "
        f"past the lease (limit {max_orphan_age:g} s): no process resumes them",
    )


async def judge(
    admin: QueueAdmin,
    *,
    component: str = "worker",
    host: str | None = None,
    max_wait: float | None = None,
    max_orphan_age: float = DEFAULT_MAX_ORPHAN_AGE_SECONDS,
) -> Health:
    """Check one component's heartbeat (an adapter's: and its platform's replies waiting for an owner), then the
    age of the oldest waiting job."""
    now = time.time()
    if component == "worker":
        verdict = judge_workers(await admin.workers(now=now), host)
    else:
        verdict = judge_component(await admin.components(now=now), component, host)
        if verdict.ok:
            deliveries = await admin.queue.delivery_counts()
            verdict = judge_deliveries(deliveries, component, max_orphan_age) or verdict
    if not verdict.ok or max_wait is None:
        return verdict
    age = await admin.oldest_waiting_age(now=now)
    if age is not None and age >= max_wait:
        return Health(False, f"the oldest waiting job has waited {age:.1f} s (limit {max_wait:g} s)")
    return verdict


async def check_health(
    settings: Settings,
    *,
    component: str = "worker",
    local: bool = False,
    max_wait: float | None = None,
    max_orphan_age: float = DEFAULT_MAX_ORPHAN_AGE_SECONDS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Health:
    """The whole check against the configured Redis. Never raises: every failure is an unhealthy verdict."""
    if component not in COMPONENTS:
        return Health(False, f"unknown component {component!r}: use one of {', '.join(COMPONENTS)}")
    host = this_host() if local else None

    async def run() -> Health:
        async with open_admin(settings) as admin:
            return await judge(admin, component=component, host=host, max_wait=max_wait, max_orphan_age=max_orphan_age)

    try:
        async with asyncio.timeout(timeout):
            return await run()
    except TimeoutError:
        return Health(False, f"Redis did not answer within {timeout:g} s")
    except KomtError as e:
        return Health(False, str(e))


def health_command(
    max_wait: Annotated[
        float | None, typer.Option("--max-wait", help="also unhealthy when the oldest waiting job waited this long (s)")
    ] = None,
    component: Annotated[Component, typer.Option("--component", help="whose heartbeat to check")] = Component.worker,
    local: Annotated[
        bool, typer.Option("--local", help="only heartbeats from this host (a container checking its own process)")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for Redis", min=0.1)] = DEFAULT_TIMEOUT_SECONDS,
    max_orphan_age: Annotated[
        float,
        typer.Option(
            "--max-orphan-age", help="adapters: unhealthy once a reply waits this long for an owner past its lease (s)"
        ),
    ] = DEFAULT_MAX_ORPHAN_AGE_SECONDS,
) -> None:
    """Exit 0 when Redis answers and a heartbeat is fresh (and the queue moves), else 1 with the reason.

    A mistake in the command or the settings exits 2, as on every command (Docker counts any non-zero as unhealthy).
    """
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"unhealthy: configuration error: {e}")
        raise typer.Exit(2) from e
    verdict = asyncio.run(
        check_health(
            settings,
            component=component.value,
            local=local,
            max_wait=max_wait,
            max_orphan_age=max_orphan_age,
            timeout=timeout,
        )
    )
    print(verdict.line)
    sys.stdout.flush()
    raise typer.Exit(0 if verdict.ok else 1)
