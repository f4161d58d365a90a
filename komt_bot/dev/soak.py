"""``komt-bot dev soak``: many concurrent conversations against real workers, with faults, checked end to end.

One run:

1. starts a private ``redis-server`` (append-only file, fsync every second) on a free 127.0.0.1 port;
2. builds the tiny random model (or uses ``--model DIR``) and starts ``--workers`` real ``komt-bot worker``
   processes on it, and waits for their presence records;
3. runs ``--conversations`` conversations, ``--concurrency`` at a time, from this one process through
   :func:`komt_bot.chat.ask.ask` — the flow every chat adapter uses — into recording sinks
   (:mod:`.recording`), while :mod:`.faults` kills, freezes or restarts what it was told to;
4. checks every conversation against its reply and its job's output stream (:mod:`.verdict`) and prints the
   summary (:mod:`.report`).

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
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from komt_bot.chat.ask import ask
from komt_bot.chat.editor import ReplyEditor, ReplyLimits
from komt_bot.dev.faults import FaultInjector, FaultPlan
from komt_bot.dev.processes import (
    OFFLINE,
    Fleet,
    RedisServer,
    WorkerPool,
    free_port,
    tail,
    worker_environment,
)
from komt_bot.dev.recording import Conversation, RecordingSink
from komt_bot.dev.report import SoakSummary, machine_info, summarize
from komt_bot.dev.verdict import Verdict, evidence, judge
from komt_bot.errors import SoakError
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.queue import JobQueue, connect
from komt_bot.settings import QueueSettings, load_settings

ASK_GRACE_SECONDS = 60.0  # past the ask's own timeout, the harness stops waiting for it (counted missing)
MODEL_BUILD_SECONDS = 600.0
PROGRESS_SECONDS = 10.0
FAULTS_SETTLE_SECONDS = 120.0
CLOSE_SECONDS = 10.0  # after the load: a freeze still running, a restart still under way
MAX_EVIDENCE = 10
LOG_TAIL_LINES = 25
QUESTIONS = (
    "한국의 수도는 어디인가요?",
    "김치찌개 끓이는 법을 알려 주세요.",
    "What is the capital of Korea?",
    "파이썬에서 리스트를 정렬하는 방법은?",
    "서울에서 부산까지 기차로 얼마나 걸리나요?",
)


def _quiet(_message: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """One soak run's parameters (the command's options)."""

    conversations: int = 100
    concurrency: int | None = None  # default: all at once
    workers: int = 2
    tokens: int = 64
    model: Path | None = None  # a directory with base/ and lora/ (``komt-bot dev tiny-model DIR``)
    kill_every: float | None = None
    freeze: float | None = None
    restart_redis: bool = False
    claim_idle: float = 5.0
    heartbeat: float = 1.0
    max_backlog: int | None = None  # default: room for every conversation
    ask_timeout: float = 600.0
    max_seconds: float = 3600.0  # the whole load; what has not ended by then is missing
    start_timeout: float = 300.0
    message_size: int = 2000  # Discord's limit, in characters
    busy_ok: bool = False
    threads: int | None = None  # torch threads per worker; default: the cores shared out among the workers
    seed: int = 0
    prefix: str = "soak"
    keep: bool = False  # keep the run's directory (logs, Redis data)

    def check(self) -> None:
        """Refuse options that cannot work."""
        if self.freeze is not None and self.freeze <= self.claim_idle:
            raise SoakError(f"--freeze {self.freeze:g} must exceed --claim-idle {self.claim_idle:g} to be taken over")
        if self.kill_every is not None and self.kill_every <= 0:
            raise SoakError("--kill-every must be positive")
        if min(self.conversations, self.workers, self.tokens, self.concurrency or 1) < 1:
            raise SoakError("--conversations, --workers, --tokens and --concurrency must be at least 1")

    @property
    def backlog(self) -> int:
        """The backlog cap the asks run under."""
        return self.max_backlog or max(100, self.conversations)

    def queue_settings(self) -> QueueSettings:
        """The queue settings of this run (the same in the harness and in every worker)."""
        return QueueSettings(
            prefix=self.prefix,
            max_backlog=self.backlog,
            claim_idle_seconds=self.claim_idle,
            heartbeat_seconds=self.heartbeat,
        )

    def worker_variables(self, redis_url: str, model: Path) -> dict[str, str]:
        """The ``KOMT_*`` variables of every worker."""
        return {
            "KOMT_REDIS_URL": redis_url,
            "KOMT_QUEUE__PREFIX": self.prefix,
            "KOMT_QUEUE__MAX_BACKLOG": str(self.backlog),
            "KOMT_QUEUE__CLAIM_IDLE_SECONDS": str(self.claim_idle),
            "KOMT_QUEUE__HEARTBEAT_SECONDS": str(self.heartbeat),
            "KOMT_MODEL__BASE": str(model / "base"),
            "KOMT_MODEL__ADAPTER": str(model / "lora"),
            "KOMT_GENERATION__MAX_NEW_TOKENS": str(self.tokens),
            "KOMT_LIMITS__RATE_LIMIT_PER_MINUTE": "0",
            "KOMT_WORKER__DRAIN_SECONDS": "5",
            "KOMT_LOG__LEVEL": "WARNING",
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


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
            return await _soak(options, queue, fleet, redis_server, model, say)
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


async def _soak(
    options: SoakOptions,
    queue: JobQueue,
    fleet: Fleet,
    redis_server: RedisServer,
    model: Path,
    say: Callable[[str], None],
) -> SoakSummary:
    threads = options.threads or max(1, (os.cpu_count() or 1) // options.workers)
    pool = WorkerPool(fleet, worker_environment(options.worker_variables(redis_server.url, model), threads))
    for _ in range(options.workers):
        pool.start_new()
    say(f"starting {options.workers} workers ({threads} torch threads each), waiting for their presence records")
    await pool.wait_ready(queue, {w.name for w in pool.workers}, options.start_timeout)

    third, load_done = asyncio.Event(), asyncio.Event()
    conversations = _conversations(options, third)
    started = time.monotonic()
    plan = FaultPlan(options.kill_every, options.freeze, options.restart_redis, options.heartbeat)
    injector = FaultInjector(plan, pool, redis_server, queue, started=started, rng=random.Random(options.seed))
    say(f"{options.conversations} conversations, {options.concurrency or options.conversations} at a time")
    load = asyncio.create_task(_load(queue, conversations, options), name="soak-load")
    faults = asyncio.create_task(injector.run(third, load_done), name="soak-faults")
    progress = asyncio.create_task(_progress(conversations, started, load_done, say), name="soak-progress")
    try:
        await _load_with_faults(load, faults, options.max_seconds)
    except BaseException:  # Ctrl-C, or a fault that could not be injected: stop at once (a freeze thaws)
        for task in (faults, progress):
            task.cancel()
        load_done.set()
        await asyncio.gather(faults, progress, return_exceptions=True)
        raise
    wall = time.monotonic() - started
    load_done.set()
    await _settle(faults, progress, injector)
    for conversation in conversations:
        if conversation.outcome is None and conversation.crash is None:
            conversation.crash = "not finished when the run's time limit passed"
    say(f"load over after {wall:.1f} s; checking {len(conversations)} conversations")
    judged = [await judge(queue, c, options.message_size) for c in conversations]
    summary = summarize(
        [verdict for verdict, _events in judged],
        dead_lettered=int(await queue.redis.xlen(queue.keys.dlq)),
        wall_seconds=wall,
        busy_ok=options.busy_ok,
        faults=injector.records,
        fault_notes=[*injector.notes, *pool.exits_of_their_own()],
        machine=machine_info(str(model), options.tokens, options.workers),
        options=options.as_dict(),
    )
    await _attach_evidence(summary, queue, conversations, judged, fleet, options.busy_ok)
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


def _conversations(options: SoakOptions, third: asyncio.Event) -> list[Conversation]:
    threshold = math.ceil(options.conversations / 3)
    shown = 0

    def on_first_answer() -> None:
        nonlocal shown
        shown += 1
        if shown >= threshold:
            third.set()

    run_id = uuid.uuid4().hex[:8]
    return [
        Conversation(
            index=i,
            idempotency_key=f"soak-{run_id}-{i}",
            question=f"{QUESTIONS[i % len(QUESTIONS)]} ({i})",
            sink=RecordingSink(on_first_answer=on_first_answer),
        )
        for i in range(options.conversations)
    ]


async def _load(queue: JobQueue, conversations: list[Conversation], options: SoakOptions) -> None:
    gate = asyncio.Semaphore(options.concurrency or len(conversations))
    limits = ReplyLimits(max_size=options.message_size)
    await asyncio.gather(*(_converse(queue, c, options, gate, limits) for c in conversations))


async def _converse(
    queue: JobQueue, conversation: Conversation, options: SoakOptions, gate: asyncio.Semaphore, limits: ReplyLimits
) -> None:
    """One person asks one question; the reply goes into the conversation's recording sink."""
    async with gate:
        editor = ReplyEditor(conversation.sink, limits)
        origin = Origin(
            platform="soak", channel="soak", thread=str(conversation.index), user=f"soak-{conversation.index}"
        )
        request = JobRequest(conversation=[Turn(role="user", text=conversation.question)], origin=origin)
        conversation.submitted = time.monotonic()
        try:
            async with asyncio.timeout(options.ask_timeout + ASK_GRACE_SECONDS):
                conversation.outcome = await ask(
                    queue,
                    request,
                    editor,
                    idempotency_key=conversation.idempotency_key,
                    timeout_seconds=options.ask_timeout,
                )
        except TimeoutError:
            conversation.crash = f"ask() did not return within {options.ask_timeout + ASK_GRACE_SECONDS:.0f} s"
        except Exception as e:
            conversation.crash = f"ask() raised {type(e).__name__}: {e}"
        finally:
            conversation.ended = time.monotonic()


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
    conversations: list[Conversation], started: float, done: asyncio.Event, say: Callable[[str], None]
) -> None:
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROGRESS_SECONDS):
                await done.wait()
        ended = sum(c.ended is not None for c in conversations)
        shown = sum(c.sink.first_answer_at is not None for c in conversations)
        say(f"{time.monotonic() - started:6.1f} s: {ended}/{len(conversations)} ended, {shown} showed answer text")


async def _attach_evidence(
    summary: SoakSummary,
    queue: JobQueue,
    conversations: list[Conversation],
    judged: list[tuple[Verdict, list[Any]]],
    fleet: Fleet,
    busy_ok: bool,
) -> None:
    """For the first conversations that went wrong: their reply, events and job hash; and every log's tail."""
    accepted = {"busy"} if busy_ok else set()
    bad = [
        (c, v, events)
        for c, (v, events) in zip(conversations, judged, strict=True)
        if v.missing or v.duplicated or (v.error_kind and v.error_kind not in accepted)
    ]
    for conversation, verdict, events in bad[:MAX_EVIDENCE]:
        job: dict[str, str] = {}
        if verdict.job_id:
            raw = cast(dict[str, str], await queue.redis.hgetall(queue.keys.job(verdict.job_id)))
            job = {k: v for k, v in raw.items() if k != "request"}
        summary.problems.append(evidence(conversation, verdict, events, job))
    if bad or summary.dead_lettered:
        summary.logs = {p.name: tail(p.log_path, LOG_TAIL_LINES) for p in fleet.processes}
