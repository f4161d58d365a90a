"""The faults a soak run injects while the conversations run, each optional:

* **kill** (``--kill-every S``): every S seconds SIGKILL a random serving worker and start a replacement under a new
  name. Its running jobs are taken over once idle for ``claim_idle_seconds``; their replies restart in place.
* **freeze** (``--freeze S``): once, at about a third of the run, SIGSTOP the worker holding the most jobs for S
  seconds, then SIGCONT. Its jobs are taken over meanwhile; when it wakes, its fenced writes must all be refused.
* **restart** (``--restart-redis``): once, at about a third of the run, SIGTERM Redis (it flushes its append-only
  file) and start the same command on the same port and directory. Everyone rides out the outage.
* **kill-adapter** (``--kill-adapter-every S``, Slack mode): every S seconds SIGKILL the ``komt-bot slack`` that took
  the most conversations still open (a crash, an OOM kill) and start a new one at once on a new port; the load
  balancer sends later events to the live ones. Its open replies must be resumed by the others.
* **restart-adapter** (``--restart-adapter-every S``, Slack mode): the same adapter gets SIGTERM (a deploy); a new one
  starts once it has exited. Its open replies must be handed over.
  With ``--no-adapter-replace`` neither starts a new adapter, and the last one left is never taken down.

"About a third of the run" is when a third of the conversations have shown answer text.

A fault must hit the load. Freeze and restart wait, once due, until a job is running or waiting; one that finds
none before the load ends, or a fault that never lands, proves nothing. Each such fault kind is noted as "fault
missed the load" in ``missed``, and the run fails. A kind given every S seconds counts once any of its injections
met jobs in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from komt_bot.dev.processes import STOP_SECONDS, ManagedProcess, RedisServer, WorkerPool
from komt_bot.queue import GROUP, JobQueue

if TYPE_CHECKING:
    from komt_bot.dev.slack_rig import AdapterPool

FaultKind = Literal["kill", "freeze", "restart", "kill-adapter", "restart-adapter"]
THAW_SIGNAL_EXTRA_SECONDS = 10.0
IN_FLIGHT_POLL_SECONDS = 0.05  # a fault due while no job is in flight waits this long between looks


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which faults to inject."""

    kill_every: float | None = None
    freeze: float | None = None
    restart_redis: bool = False
    heartbeat_seconds: float = 1.0
    kill_adapter_every: float | None = None
    restart_adapter_every: float | None = None
    no_adapter_replace: bool = False
    adapter_start_seconds: float = 300.0  # a new adapter must serve within this

    @property
    def any(self) -> bool:
        """Whether any fault is planned."""
        adapters = self.kill_adapter_every or self.restart_adapter_every
        return bool(self.kill_every or self.freeze or self.restart_redis or adapters)


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One injected fault: what, when (seconds after the load began), on what, for how long."""

    kind: FaultKind
    at: float
    target: str
    seconds: float | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


async def first_of(*events: asyncio.Event) -> None:
    """Return as soon as any of ``events`` is set."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class FaultInjector:
    """Runs the planned faults against the run's workers and Redis, and records each one."""

    def __init__(
        self,
        plan: FaultPlan,
        pool: WorkerPool,
        redis: RedisServer,
        queue: JobQueue,
        *,
        started: float,
        rng: random.Random,
        adapters: AdapterPool | None = None,
        held: Callable[[], Awaitable[dict[str, int]]] | None = None,
    ) -> None:
        self.plan = plan
        self.pool = pool
        self.adapters = adapters
        self.held = held  # open replies per adapter
        self.redis = redis
        self.queue = queue
        self.started = started
        self.rng = rng
        self.records: list[FaultRecord] = []
        self.notes: list[str] = []
        self.missed: list[FaultKind] = []  # the planned fault kinds that hit no job
        self._hit: set[FaultKind] = set()

    def _now(self) -> float:
        return time.monotonic() - self.started

    async def run(self, third: asyncio.Event, load_done: asyncio.Event) -> None:
        """Inject every planned fault; return when the last has ended (after ``load_done`` for the kill loop)."""
        tasks = []
        if self.plan.kill_every:
            tasks.append(self._kill_loop(self.plan.kill_every, load_done))
        if self.plan.freeze:
            tasks.append(self._freeze(self.plan.freeze, third, load_done))
        if self.plan.restart_redis:
            tasks.append(self._restart(third, load_done))
        if self.plan.kill_adapter_every:
            tasks.append(self._adapter_loop(self.plan.kill_adapter_every, load_done, deploy=False))
        if self.plan.restart_adapter_every:
            tasks.append(self._adapter_loop(self.plan.restart_adapter_every, load_done, deploy=True))
        await asyncio.gather(*tasks)

    def _miss(self, kind: FaultKind, why: str) -> None:
        """Note that a planned fault kind hit nothing, once per kind."""
        if kind not in self.missed:
            self.missed.append(kind)
            self.notes.append(f"{kind}: fault missed the load ({why})")

    async def _in_flight(self) -> tuple[int, int]:
        """Jobs running (delivered, not acknowledged) and waiting now: what a fault can hit."""
        running = sum((await self._pending()).values())
        return running, int(await self.queue.redis.zcard(self.queue.keys.waiting))

    async def _landed(self, kind: FaultKind, load_done: asyncio.Event) -> tuple[int, int] | None:
        """The jobs in flight when a fault lands: at once if there are any, else as soon as some are, while the load
        lasts. None (and a miss) when the load ends with nothing to hit."""
        while True:
            running, waiting = await self._in_flight()
            if running + waiting and not load_done.is_set():
                self._hit.add(kind)
                return running, waiting
            if load_done.is_set():
                self._miss(kind, f"at {self._now():.1f} s the load was over: {running} jobs running, {waiting} waiting")
                return None
            await asyncio.sleep(IN_FLIGHT_POLL_SECONDS)

    def _ended(self, kind: FaultKind, every: float) -> None:
        """A periodic fault's loop is over: it missed the load unless one of its injections hit jobs."""
        if kind in self._hit:
            return
        injected = any(record.kind == kind for record in self.records)
        self._miss(kind, "no injection hit a job" if injected else f"the load ended within the first {every:g} s")

    async def _pending(self) -> dict[str, int]:
        """Jobs each consumer holds now (entries delivered and not yet acknowledged)."""
        summary = await self.queue.redis.xpending(self.queue.keys.jobs, GROUP)
        return {str(c["name"]): int(c["pending"]) for c in (summary or {}).get("consumers") or []}

    async def _kill_loop(self, every: float, load_done: asyncio.Event) -> None:
        while True:  # until the load is done (then: did any injection hit it?)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await load_done.wait()
            if load_done.is_set():
                self._ended("kill", every)
                return
            serving = await self.pool.serving(self.queue)
            candidates = [w for w in self.pool.live() if w.name in serving and not w.frozen] or [
                w for w in self.pool.live() if not w.frozen
            ]
            if not candidates:
                if not any(note.startswith("kill: no live worker") for note in self.notes):
                    self.notes.append(f"kill: no live worker to kill from {self._now():.1f} s on")
                continue
            victim = self.rng.choice(candidates)
            held = (await self._pending()).get(victim.name, 0)
            if sum(await self._in_flight()):
                self._hit.add("kill")
            at = self._now()
            self.pool.kill(victim)
            replacement = self.pool.start_new()
            detail = f"held {held} jobs; {'serving' if victim.name in serving else 'still loading'}"
            self.records.append(FaultRecord("kill", at, victim.name, None, f"{detail}; replaced by {replacement.name}"))

    async def _busiest(self) -> ManagedProcess | None:
        pending = await self._pending()
        live = [w for w in self.pool.live() if not w.frozen]
        return max(live, key=lambda w: pending.get(w.name, 0), default=None)

    async def _freeze(self, seconds: float, third: asyncio.Event, load_done: asyncio.Event) -> None:
        await first_of(third, load_done)
        if not third.is_set():
            self._miss("freeze", "not injected: the load ended first")
            return
        if await self._landed("freeze", load_done) is None:
            return
        victim = await self._busiest()
        if victim is None:
            self._miss("freeze", "not injected: no live worker")
            return
        held = (await self._pending()).get(victim.name, 0)
        at = self._now()
        victim.freeze()
        try:
            await asyncio.sleep(seconds)  # the fault itself: the worker stays stopped this long
        finally:
            thawed_wall = time.time()
            victim.thaw()
        woke = await self._heartbeat_after(victim.name, thawed_wall)
        detail = f"held {held} jobs; " + ("heartbeat seen after SIGCONT" if woke else "no heartbeat after SIGCONT")
        self.records.append(FaultRecord("freeze", at, victim.name, seconds, detail))

    async def _heartbeat_after(self, name: str, wall: float) -> bool:
        """Wait for the thawed worker's first presence record stamped after ``wall``: by then its heartbeat has run
        the fencing check and it has dropped every job it lost."""
        deadline = time.monotonic() + 3 * self.plan.heartbeat_seconds + THAW_SIGNAL_EXTRA_SECONDS
        while time.monotonic() < deadline:
            records = {r.name: r for r in await self.queue.presence.workers()}
            record = records.get(name)
            if record is not None and record.heartbeat > wall + self.plan.heartbeat_seconds:
                return True
            await asyncio.sleep(0.1)
        return False

    async def _restart(self, third: asyncio.Event, load_done: asyncio.Event) -> None:
        await first_of(third, load_done)
        if not third.is_set():
            self._miss("restart", "not injected: the load ended first")
            return
        in_flight = await self._landed("restart", load_done)
        if in_flight is None:
            return
        pending, waiting = in_flight
        at = self._now()
        seconds = await self.redis.restart()
        detail = f"SIGTERM, same port and dir; {pending} jobs running, {waiting} waiting"
        self.records.append(FaultRecord("restart", at, "redis", seconds, detail))

    async def _adapter_loop(self, every: float, load_done: asyncio.Event, *, deploy: bool) -> None:
        kind: FaultKind = "restart-adapter" if deploy else "kill-adapter"
        adapters = self.adapters
        if adapters is None:
            raise RuntimeError(f"{kind} needs the Slack adapters (--via slack)")
        while True:  # until the load is done (then: did any injection hit it?)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await load_done.wait()
            if load_done.is_set():
                self._ended(kind, every)
                return
            candidates = adapters.routable()
            if not candidates or (self.plan.no_adapter_replace and len(candidates) < 2):
                if not any(note.startswith(f"{kind}: not injected") for note in self.notes):
                    self.notes.append(f"{kind}: not injected from {self._now():.1f} s on (no adapter to spare)")
                continue
            held = await self.held() if self.held else {}
            most = max(held.get(a.name, 0) for a in candidates)
            victim = self.rng.choice([a for a in candidates if held.get(a.name, 0) == most])
            if most or sum(await self._in_flight()):
                self._hit.add(kind)
            await self._take_down(kind, victim, held.get(victim.name, 0), adapters)

    async def _take_down(self, kind: FaultKind, victim: ManagedProcess, held: int, adapters: AdapterPool) -> None:
        """SIGKILL, or SIGTERM and wait for the exit; then a new adapter unless told not to, and record it."""
        at = self._now()
        seconds: float | None = None
        if kind == "kill-adapter":
            adapters.kill(victim)
            detail = f"SIGKILL; it held {held} open replies"
        else:
            seconds = await adapters.restart(victim, STOP_SECONDS)
            exited = "killed after 25 s" if seconds is None else f"exited after {seconds:.1f} s"
            detail = f"SIGTERM, {exited}; it held {held} open replies"
        if self.plan.no_adapter_replace:
            self.records.append(FaultRecord(kind, at, victim.name, seconds, f"{detail}; not replaced"))
            return
        replacement = adapters.start_new()
        began = time.monotonic()
        detail += f"; replaced by {replacement.name}"
        try:
            await adapters.wait_ready(self.queue, {replacement.name}, self.plan.adapter_start_seconds)
            detail += f", serving {time.monotonic() - began:.1f} s later"
        finally:
            self.records.append(FaultRecord(kind, at, victim.name, seconds, detail))
