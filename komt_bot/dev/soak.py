"""``komt-bot dev soak``: many concurrent conversations against real workers, with faults, checked end to end.

One run:

1. starts a private ``redis-server`` (append-only file, fsync every second) on a free 127.0.0.1 port;
2. builds the tiny random model (or uses ``--model DIR``) and starts ``--workers`` real ``komt-bot worker``
   processes on it, and waits for their presence records;
3. runs ``--conversations`` conversations, ``--concurrency`` at a time, while :mod:`.faults` kills, freezes or
   restarts what it was told to. By default (``--via ask``, :mod:`.ask_load`) they run from this one process
   through :func:`komt_bot.chat.ask.ask` -- the flow every chat adapter uses -- into recording sinks; with
   ``--via slack`` (:mod:`.slack_load`) each is a mention in a fake Slack delivered to real ``komt-bot slack``
   processes, and the reply is read in the fake's thread;
4. checks every conversation against its reply and its job's output stream (:mod:`.verdict`,
   :mod:`.slack_verdict`) and prints the summary (:mod:`.report`).

Everything it started is stopped at the end, on an error and on Ctrl-C too; it talks only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from komt_bot.dev.ask_load import AskLoad
from komt_bot.dev.faults import FaultInjector, FaultPlan
from komt_bot.dev.options import SoakOptions
from komt_bot.dev.processes import OFFLINE, Fleet, RedisServer, WorkerPool, free_port, tail, worker_environment
from komt_bot.dev.report import SoakSummary, machine_info, summarize
from komt_bot.dev.verdict import Verdict
from komt_bot.errors import SoakError
from komt_bot.jobs import Event
from komt_bot.queue import JobQueue, connect
from komt_bot.settings import load_settings

if TYPE_CHECKING:
    from komt_bot.dev.slack_rig import AdapterPool

__all__ = ["SoakOptions", "run_soak"]

MODEL_BUILD_SECONDS = 600.0
PROGRESS_SECONDS = 10.0
FAULTS_SETTLE_SECONDS = 120.0
CLOSE_SECONDS = 10.0  # after the load: a freeze still running, a restart still under way
MAX_EVIDENCE = 10
LOG_TAIL_LINES = 25
C = TypeVar("C")


class Load(Protocol[C]):
    """One mode's conversations (:class:`~.ask_load.AskLoad`, :class:`~.slack_load.SlackLoad`)."""

    async def run(self) -> None:
        """Run every conversation to its end."""

    def counts(self) -> tuple[int, int]:
        """(conversations ended, conversations that showed answer text)."""

    def give_up(self, why: str) -> None:
        """Count every conversation still open as not finished."""

    async def judge(self) -> list[tuple[C, Verdict, list[Event]]]:
        """Each conversation, its verdict and its job's events."""

    async def platform(self, verdicts: list[Verdict]) -> dict[str, Any]:
        """What was measured at the platform (nothing in-process)."""

    async def evidence(self, conversation: C, verdict: Verdict, events: list[Event]) -> dict[str, Any]:
        """What to show about one conversation that went wrong."""


def _quiet(_message: str) -> None:
    return None


async def build_model(directory: Path, say: Callable[[str], None]) -> Path:
    """Build the tiny model in a child process (the harness itself never imports torch)."""
    say(f"building the tiny model in {directory}")
    argv = [sys.executable, "-m", "komt_bot", "dev", "tiny-model", str(directory)]
    child = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **OFFLINE}
    )
    try:
        async with asyncio.timeout(MODEL_BUILD_SECONDS):
            output, _ = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise SoakError(f"building the tiny model failed: {output.decode(errors='replace')[-500:]}")
    return directory


async def run_soak(
    options: SoakOptions, *, say: Callable[[str], None] = _quiet, fleet: Fleet | None = None
) -> SoakSummary:
    """One soak run (see the module docstring). Everything it starts is stopped before it returns or raises."""
    options.check()
    own_fleet = fleet is None
    fleet = fleet or Fleet.create()
    try:
        redis_server = RedisServer(fleet, free_port())
        await redis_server.ready()
        say(f"redis-server on 127.0.0.1:{redis_server.port} (append-only, fsync every second) in {fleet.workdir}")
        model = options.model or await build_model(fleet.workdir / "model", say)
        if not (model / "base" / "config.json").is_file():
            raise SoakError(f"--model {model}: no base/config.json there (make one with komt-bot dev tiny-model)")
        settings = load_settings(redis_url=redis_server.url, queue=options.queue_settings().model_dump())
        client = connect(settings)
        queue = JobQueue(client, settings.queue)
        try:
            return await _soak(Run(options, queue, fleet, redis_server, model, say))
        finally:
            await _bounded(queue.close(), "closing the queue's output reader", say)
            await _bounded(client.aclose(), "closing the Redis client", say)
    finally:
        if own_fleet:
            fleet.close(keep=options.keep)
        else:
            fleet.stop_all()


async def _bounded(step: Awaitable[None], what: str, say: Callable[[str], None]) -> None:
    """One cleanup step, given at most ``CLOSE_SECONDS``: cleanup must never hang the harness."""
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await step
    except TimeoutError:
        say(f"{what} did not finish within {CLOSE_SECONDS:.0f} s: going on")


class Run:
    """What one run has started: its options, queue, processes, and how it reports progress."""

    def __init__(
        self,
        options: SoakOptions,
        queue: JobQueue,
        fleet: Fleet,
        redis: RedisServer,
        model: Path,
        say: Callable[[str], None],
    ) -> None:
        self.options = options
        self.queue = queue
        self.fleet = fleet
        self.redis = redis
        self.model = model
        self.say = say
        threads = options.threads or max(1, (os.cpu_count() or 1) // options.workers)
        self.threads = threads
        self.pool = WorkerPool(fleet, worker_environment(options.worker_variables(redis.url, model), threads))
        self.third = asyncio.Event()  # a third of the conversations have shown answer text
        self._shown = 0

    def on_answer(self) -> None:
        """A conversation showed answer text for the first time."""
        self._shown += 1
        if self._shown >= math.ceil(self.options.conversations / 3):
            self.third.set()

    def plan(self) -> FaultPlan:
        """The faults the options ask for."""
        o = self.options
        return FaultPlan(
            o.kill_every,
            o.freeze,
            o.restart_redis,
            o.heartbeat,
            kill_adapter_every=o.kill_adapter_every,
            restart_adapter_every=o.restart_adapter_every,
            no_adapter_replace=o.no_adapter_replace,
            adapter_start_seconds=o.start_timeout,
        )


async def _soak(run: Run) -> SoakSummary:
    options, say = run.options, run.say
    for _ in range(options.workers):
        run.pool.start_new()
    say(f"starting {options.workers} workers ({run.threads} torch threads each), waiting for their presence records")
    await run.pool.wait_ready(run.queue, {w.name for w in run.pool.members}, options.start_timeout)
    if options.via == "ask":
        return await _run_load(run, AskLoad(options, run.queue, run.on_answer))
    try:
        from komt_bot.dev.slack_load import SlackLoad
    except ImportError as e:  # aiohttp, from the slack extra
        raise SoakError(f"--via slack needs the slack extra (pip install 'komt-bot[slack]'): {e}") from e
    async with SlackLoad(options, run.queue, run.fleet, run.redis.url, run.on_answer) as load:
        adapters = await load.start_adapters(say)
        try:
            return await _run_load(run, load, adapters=adapters, held=load.held)
        finally:
            await load.stop_adapters()


async def _run_load(
    run: Run,
    load: Load[C],
    *,
    adapters: AdapterPool | None = None,
    held: Callable[[], Awaitable[dict[str, int]]] | None = None,
) -> SoakSummary:
    """Run the load with its faults, then judge every conversation and add it all up."""
    options, queue, say = run.options, run.queue, run.say
    load_done = asyncio.Event()
    started = time.monotonic()
    rng = random.Random(options.seed)
    injector = FaultInjector(
        run.plan(), run.pool, run.redis, queue, started=started, rng=rng, adapters=adapters, held=held
    )
    via = f" via {options.via}" if options.via != "ask" else ""
    say(f"{options.conversations} conversations{via}, {options.concurrency or options.conversations} at a time")
    loading = asyncio.create_task(load.run(), name="soak-load")
    faults = asyncio.create_task(injector.run(run.third, load_done), name="soak-faults")
    progress = asyncio.create_task(
        _progress(load, options.conversations, started, load_done, say), name="soak-progress"
    )
    try:
        await _load_with_faults(loading, faults, options.max_seconds)
    except BaseException:  # Ctrl-C, or a fault that could not be injected: stop at once (a freeze thaws)
        for task in (faults, progress):
            task.cancel()
        load_done.set()
        await asyncio.gather(faults, progress, return_exceptions=True)
        raise
    wall = time.monotonic() - started
    load_done.set()
    await _settle(faults, progress, injector)
    load.give_up("not finished when the run's time limit passed")
    say(f"load over after {wall:.1f} s; checking {options.conversations} conversations")
    judged = await load.judge()
    verdicts = [verdict for _c, verdict, _events in judged]
    exits = [*run.pool.exits_of_their_own(), *(adapters.exits_of_their_own() if adapters else [])]
    summary = summarize(
        verdicts,
        dead_lettered=int(await queue.redis.xlen(queue.keys.dlq)),
        wall_seconds=wall,
        busy_ok=options.busy_ok,
        faults=injector.records,
        fault_notes=[*injector.notes, *exits],
        machine=machine_info(str(run.model), options.tokens, options.workers),
        options=options.as_dict(),
        via=options.via,
        platform=await load.platform(verdicts),
    )
    summary.missed_faults = list(injector.missed)
    for kind in injector.missed:
        say(f"fault missed the load: {kind} hit no running or waiting job, so it proves nothing (the run fails)")
    bad = [(c, v, events) for c, v, events in judged if summary.failed(v)]
    summary.problems = [await load.evidence(c, v, events) for c, v, events in bad[:MAX_EVIDENCE]]
    if bad or summary.dead_lettered:
        summary.logs = {p.name: tail(p.log_path, LOG_TAIL_LINES) for p in run.fleet.processes}
    return summary


async def _settle(faults: asyncio.Task[None], progress: asyncio.Task[None], injector: FaultInjector) -> None:
    """Let a fault still under way end (a freeze thaws and its worker's heartbeat is seen) before the checks."""
    settling = asyncio.gather(faults, progress, return_exceptions=True)
    try:
        async with asyncio.timeout(FAULTS_SETTLE_SECONDS):
            await settling
    except TimeoutError:
        settling.cancel()  # the timeout's cancel reached it already; this says so: what still runs is stopped
        injector.notes.append(f"faults still under way {FAULTS_SETTLE_SECONDS:.0f} s after the load: stopped")
    if faults.done() and not faults.cancelled() and faults.exception() is not None:
        injector.notes.append(f"a fault failed after the load: {faults.exception()}")


async def _load_with_faults(load: asyncio.Task[None], faults: asyncio.Task[None], max_seconds: float) -> None:
    """Wait for the load, at most ``max_seconds``; a fault that could not be injected stops the run."""
    try:
        async with asyncio.timeout(max_seconds):
            while not load.done():
                await asyncio.wait([load] if faults.done() else [load, faults], return_when=asyncio.FIRST_COMPLETED)
                if faults.done() and not faults.cancelled() and faults.exception() is not None:
                    raise SoakError(f"a fault could not be injected: {faults.exception()}")
    except TimeoutError:
        pass
    finally:
        if not load.done():
            load.cancel()
        await asyncio.gather(load, return_exceptions=True)


async def _progress(
    load: Load[Any], total: int, started: float, done: asyncio.Event, say: Callable[[str], None]
) -> None:
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROGRESS_SECONDS):
                await done.wait()
        ended, shown = load.counts()
        say(f"{time.monotonic() - started:6.1f} s: {ended}/{total} ended, {shown} showed answer text")
