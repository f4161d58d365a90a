"""The worker: takes jobs from the queue, feeds the engine, publishes the answer as it is written.

One process, one engine, up to ``capacity`` jobs at once (the engine batches them). Around the jobs
(:mod:`.job`) run:

* the publisher (:mod:`.publisher`): all running jobs' new text in one fenced call per coalescing tick;
* a heartbeat loop that keeps this worker's in-flight entries claimed (only those it still owns: a job another
  worker took over is dropped here at once) and its presence record fresh;
* a cancel watcher that reads the cancel flags of running jobs between token batches;
* draining: after :meth:`Worker.stop` (SIGTERM) it takes no new jobs, lets running ones finish until
  ``drain_seconds``, and puts the rest back at the head of the queue; it exits within a few seconds of that
  whatever Redis does (a job it could not hand back is taken over by another worker).

Each running job's state is one :class:`~komt_bot.worker.attempt.Attempt`: the job's task, the publisher and these
loops ask it and move it through its methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

from komt_bot.engine.base import CheckedEngine, Engine
from komt_bot.errors import QueueError
from komt_bot.jobs import ClaimedJob
from komt_bot.queue import JobQueue
from komt_bot.queue.presence import WorkerRecord
from komt_bot.settings import Settings
from komt_bot.worker.attempt import Attempt
from komt_bot.worker.hooks import NoHooks, WorkerHooks
from komt_bot.worker.job import JobRunner
from komt_bot.worker.publisher import Publisher

log = logging.getLogger(__name__)
job_log = logging.getLogger("komt_bot.jobs")

CANCEL_POLL_SECONDS = 0.2  # a stop button's wait; a chat reply is edited about once a second anyway
IDLE_CLAIM_BLOCK_SECONDS = 1.0
STALE_HEARTBEATS = 3  # the worker promises a fresh presence record at least this many heartbeats apart
STOP_GRACE_SECONDS = 3.0  # after the drain, background loops and hand-backs get this long, then the worker exits
PRESENCE_REMOVE_SECONDS = 2.0
LOOP_CALL_TIMEOUT_SECONDS = 5.0  # a cancel-flag read that hangs this long is abandoned and tried again


def default_worker_name() -> str:
    """``host-pid``: unique per process, readable in ``queue status``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Runs jobs from ``queue`` on ``engine`` until stopped (or, in burst mode, until the queue is empty)."""

    def __init__(
        self,
        queue: JobQueue,
        engine: Engine,
        settings: Settings,
        *,
        name: str | None = None,
        hooks: WorkerHooks | None = None,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.settings = settings
        self.name = name or settings.worker.name or default_worker_name()
        self.capacity = settings.worker.capacity or engine.info.capacity
        self.hooks: WorkerHooks = hooks or NoHooks()
        self.publisher = Publisher(
            queue,
            settings.worker.coalesce_ms / 1000,
            lambda: self._attempts.values(),
            on_first_text=self.hooks.first_text,
        )
        self.runner = JobRunner(queue, engine, settings, self.publisher, self.hooks)
        self._attempts: dict[str, Attempt] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tokens_window: list[tuple[float, int]] = []
        self._engine_ok: bool | None = None  # a remote engine's last check (None: not checked)
        self._engine_error: str | None = None

    def stop(self) -> None:
        """Stop taking jobs and drain (what SIGTERM does)."""
        self._stopping.set()
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Jobs running now."""
        return len(self._attempts)

    @property
    def jobs_done(self) -> int:
        """Jobs this worker finished (done or cancelled)."""
        return self.runner.jobs_done

    async def run(self, *, burst: bool = False) -> None:
        """Serve jobs. With ``burst`` return once the queue is empty and nothing runs."""
        await self.queue.ensure_group()
        with contextlib.suppress(QueueError):
            await self._publish_record()
        background = [
            asyncio.create_task(self.publisher.run(), name="publisher"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._cancel_loop(), name="cancel-watch"),
        ]
        if isinstance(self.engine, CheckedEngine):
            background.append(asyncio.create_task(self._engine_check_loop(self.engine), name="engine-check"))
        log.info("worker %s serving %s (capacity %d)", self.name, self.engine.info.model, self.capacity)
        try:
            await self._claim_loop(burst=burst)
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.wait(background, timeout=STOP_GRACE_SECONDS)
            with contextlib.suppress(QueueError, TimeoutError):
                async with asyncio.timeout(PRESENCE_REMOVE_SECONDS):
                    await self.queue.presence.remove("worker", self.name)
            log.info("worker %s stopped after %d jobs", self.name, self.jobs_done)

    async def _claim_loop(self, *, burst: bool) -> None:
        down_since: float | None = None  # when claims began to fail: one warning an outage, not one a second
        while not self._stopping.is_set():
            free = self.capacity - len(self._attempts)
            if free <= 0:
                self._wake.clear()
                await self._wait_for_room()
                continue
            block = 0.05 if burst else (0.01 if self._attempts else IDLE_CLAIM_BLOCK_SECONDS)
            try:
                jobs = await self._claim_unless_stopping(free, block)
            except QueueError as e:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("worker %s: %s; retrying every second", self.name, e)
                await self._sleep_unless_stopping(1.0)
                continue
            if down_since is not None:
                log.info("worker %s: claiming again after %.0f s", self.name, time.monotonic() - down_since)
                down_since = None
            for job in jobs:
                self._start(job)
            if jobs:
                with contextlib.suppress(Exception):
                    await self.hooks.claimed(jobs)
            if burst and not jobs and not self._attempts:
                return
            if not jobs and self._attempts:
                self._wake.clear()
                await self._wait_for_room(0.05)

    async def _claim_unless_stopping(self, count: int, block: float) -> list[ClaimedJob]:
        """Claim, but give up the claim if the worker is told to stop first (a hung Redis must not hold a drain)."""
        claim = asyncio.ensure_future(self.queue.claim(self.name, count, block_seconds=block))
        if claim.done():
            return claim.result()
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({claim, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not claim.done():
            # A claim that is only blocking ends within its block time: let it, so the jobs it has already started
            # are drained and handed back in their place. Only a claim that hangs (Redis frozen) is abandoned; the
            # entries it had taken stay pending and are taken over by another worker.
            await asyncio.wait({claim}, timeout=STOP_GRACE_SECONDS)
        if not claim.done():
            claim.cancel()
            await asyncio.wait({claim}, timeout=STOP_GRACE_SECONDS)
            return []
        return claim.result()

    async def _wait_for_room(self, seconds: float = 1.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    def _start(self, job: ClaimedJob) -> None:
        attempt = Attempt(job)
        self._attempts[job.job_id] = attempt
        task = asyncio.create_task(self.runner.run(attempt), name=f"job-{job.job_id}")
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _t: self._forget(attempt))
        job_log.info(
            "job started",
            extra={"job_id": job.job_id, "attempt": job.attempt, "platform": job.request.origin.platform},
        )

    def _forget(self, attempt: Attempt) -> None:
        if self._attempts.get(attempt.job_id) is attempt:
            self._attempts.pop(attempt.job_id, None)
            self._tasks.pop(attempt.job_id, None)
        self._wake.set()

    async def _drain(self) -> None:
        if not self._tasks:
            return
        tasks = list(self._tasks.values())
        log.info("worker %s draining %d jobs (up to %.0f s)", self.name, len(tasks), self.settings.worker.drain_seconds)
        _done, pending = await asyncio.wait(tasks, timeout=self.settings.worker.drain_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)

    # -- status -----------------------------------------------------------------------------------------------

    def _count_tokens(self) -> None:
        now = time.monotonic()
        for attempt in self._attempts.values():
            if fresh := attempt.new_tokens():
                self._tokens_window.append((now, fresh))

    def tokens_per_second(self, window_seconds: float = 10.0) -> float:
        """Tokens generated per second over the last ``window_seconds``."""
        self._count_tokens()
        cutoff = time.monotonic() - window_seconds
        self._tokens_window = [(t, n) for t, n in self._tokens_window if t >= cutoff]
        return sum(n for _, n in self._tokens_window) / window_seconds

    def record(self) -> WorkerRecord:
        """What this worker publishes in its presence record."""
        info = self.engine.info
        return WorkerRecord(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            stale_after=STALE_HEARTBEATS * self.settings.queue.heartbeat_seconds,
            model=info.model,
            adapter=info.adapter,
            device=info.device,
            quantization=info.quantization,
            engine=info.kind,
            endpoint=info.endpoint,
            engine_ok=self._engine_ok,
            engine_error=self._engine_error,
            capacity=self.capacity,
            in_flight=len(self._attempts),
            tokens_per_second=round(self.tokens_per_second(), 2),
            jobs_done=self.jobs_done,
            draining=self._stopping.is_set(),
        )

    async def _publish_record(self) -> None:
        await self.queue.presence.publish("worker", self.name, self.record())

    # -- background loops -------------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.queue.heartbeat_seconds)
            try:
                attempts = list(self._attempts.values())
                lost = await self.queue.heartbeat(self.name, [attempt.job for attempt in attempts])
                for attempt in attempts:
                    # A job that finished while the heartbeat was on its way is not lost: mark_lost says no to it
                    # (it is finishing or ended), and nothing is reported.
                    if attempt.job_id in lost and attempt.mark_lost():
                        log.warning("worker %s: job %s is another worker's now; dropping it", self.name, attempt.job_id)
                await self._publish_record()
            except QueueError as e:
                log.warning("worker %s: heartbeat failed: %s", self.name, e)

    async def _engine_check_loop(self, engine: CheckedEngine) -> None:
        """Ask a remote engine's server whether it answers, every heartbeat, for the presence record."""
        while True:
            try:
                async with asyncio.timeout(LOOP_CALL_TIMEOUT_SECONDS):
                    problem = await engine.check()
            except TimeoutError:
                problem = f"the model server did not answer a check within {LOOP_CALL_TIMEOUT_SECONDS:g} s"
            if problem and problem != self._engine_error:
                log.warning("worker %s: %s", self.name, problem)
            elif problem is None and self._engine_error:
                log.info("worker %s: the model server answers again", self.name)
            self._engine_ok, self._engine_error = problem is None, problem
            await asyncio.sleep(self.settings.queue.heartbeat_seconds)

    async def _cancel_loop(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not self._attempts:
                continue
            try:
                async with asyncio.timeout(LOOP_CALL_TIMEOUT_SECONDS):  # not wait_for: it can swallow a cancel
                    flagged = await self.queue.cancelled(list(self._attempts))
            except (QueueError, TimeoutError):
                continue
            for job_id in flagged:
                if attempt := self._attempts.get(job_id):
                    attempt.request_cancel()
