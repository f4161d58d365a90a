"""The worker: takes jobs from the queue, feeds the engine, publishes the answer as it is written.

One process, one engine, up to ``capacity`` jobs at once (the engine batches them). Around it:

* a heartbeat loop that keeps this worker's in-flight entries claimed and its ``worker`` record fresh;
* a cancel watcher that reads the cancel flags of running jobs between token batches;
* one error boundary per job: a failing job gets an ``error`` event (or a retry) and the worker goes on;
* draining: after :meth:`Worker.stop` (SIGTERM) it takes no new jobs, lets running ones finish until
  ``drain_seconds``, and puts the rest back at the head of the queue for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Literal

from komt_bot.engine.base import Engine, FinishReason, GenerationRequest, SamplingParams
from komt_bot.errors import PromptError, PromptTooLongError, QueueError
from komt_bot.jobs import ClaimedJob
from komt_bot.prompt import build_prompt
from komt_bot.queue import JobQueue
from komt_bot.queue.presence import WorkerRecord
from komt_bot.settings import Settings

log = logging.getLogger(__name__)
job_log = logging.getLogger("komt_bot.jobs")

CANCEL_POLL_SECONDS = 0.1
# The prompt builder counts its pieces separately; the engine counts the whole prompt plus BOS. Tokens can merge
# differently across the joins, so the builder aims a little under the engine's hard limit.
PROMPT_MARGIN_TOKENS = 8
IDLE_CLAIM_BLOCK_SECONDS = 1.0
STALE_HEARTBEATS = 3  # the worker promises a fresh presence record at least this many heartbeats apart


def default_worker_name() -> str:
    """``host-pid``: unique per process, readable in ``queue status``."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class _Running:
    job: ClaimedJob
    task: asyncio.Task[None]
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    tokens: int = 0


class DeltaCoalescer:
    """Collects text and says when enough time has passed to publish it as one ``delta`` event."""

    def __init__(self, interval_seconds: float) -> None:
        self.interval = interval_seconds
        self.pending = ""
        self._last = time.monotonic()

    def add(self, text: str) -> bool:
        """Buffer ``text``; True when the buffer is due to be published."""
        self.pending += text
        return bool(self.pending) and time.monotonic() - self._last >= self.interval

    def take(self) -> str:
        """Empty the buffer."""
        text, self.pending = self.pending, ""
        self._last = time.monotonic()
        return text


class Worker:
    """Runs jobs from ``queue`` on ``engine`` until stopped (or, in burst mode, until the queue is empty)."""

    def __init__(self, queue: JobQueue, engine: Engine, settings: Settings, *, name: str | None = None) -> None:
        self.queue = queue
        self.engine = engine
        self.settings = settings
        self.name = name or settings.worker.name or default_worker_name()
        self.capacity = settings.worker.capacity or engine.info.capacity
        self.jobs_done = 0
        self._running: dict[str, _Running] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tokens_window: list[tuple[float, int]] = []

    def stop(self) -> None:
        """Stop taking jobs and drain (what SIGTERM does)."""
        self._stopping.set()
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Jobs running now."""
        return len(self._running)

    async def run(self, *, burst: bool = False) -> None:
        """Serve jobs. With ``burst`` return once the queue is empty and nothing runs."""
        await self.queue.ensure_group()
        await self._publish_status()
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._cancel_loop(), name="cancel-watch"),
        ]
        log.info("worker %s serving %s (capacity %d)", self.name, self.engine.info.model, self.capacity)
        try:
            await self._claim_loop(burst=burst)
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(QueueError):
                await self.queue.presence.remove("worker", self.name)
            log.info("worker %s stopped after %d jobs", self.name, self.jobs_done)

    async def _claim_loop(self, *, burst: bool) -> None:
        while not self._stopping.is_set():
            free = self.capacity - len(self._running)
            if free <= 0:
                self._wake.clear()
                await self._wait_for_room()
                continue
            block = 0.05 if burst else (0.01 if self._running else IDLE_CLAIM_BLOCK_SECONDS)
            try:
                jobs = await self.queue.claim(self.name, free, block_seconds=block)
            except QueueError as e:
                log.warning("worker %s: %s; retrying in 1 s", self.name, e)
                await self._sleep_unless_stopping(1.0)
                continue
            for job in jobs:
                self._start(job)
            if burst and not jobs and not self._running:
                return
            if not jobs and self._running:
                self._wake.clear()
                await self._wait_for_room(0.05)

    async def _wait_for_room(self, seconds: float = 1.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _start(self, job: ClaimedJob) -> None:
        running = _Running(job, asyncio.create_task(self._run_job(job), name=f"job-{job.job_id}"))
        self._running[job.job_id] = running
        running.task.add_done_callback(lambda _t: self._forget(job.job_id))
        job_log.info(
            "job started",
            extra={"job_id": job.job_id, "attempt": job.attempt, "platform": job.request.origin.platform},
        )

    def _forget(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self._wake.set()

    async def _drain(self) -> None:
        if not self._running:
            return
        tasks = [r.task for r in self._running.values()]
        log.info("worker %s draining %d jobs (up to %.0f s)", self.name, len(tasks), self.settings.worker.drain_seconds)
        _done, pending = await asyncio.wait(tasks, timeout=self.settings.worker.drain_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- one job ----------------------------------------------------------------------------------------------

    def _sampling(self, job: ClaimedJob) -> SamplingParams:
        gen = self.settings.generation
        req = job.request
        return SamplingParams(
            temperature=gen.temperature if req.temperature is None else req.temperature,
            top_p=gen.top_p if req.top_p is None else req.top_p,
            top_k=gen.top_k if req.top_k is None else req.top_k,
            max_new_tokens=min(req.max_new_tokens or gen.max_new_tokens, gen.max_new_tokens),
            stop=tuple(gen.stop),
        )

    async def _run_job(self, job: ClaimedJob) -> None:
        """The error boundary of one job: whatever happens, the job ends with an event or goes back."""
        started = time.monotonic()
        try:
            reason, usage = await self._generate(job)
        except asyncio.CancelledError:
            with contextlib.suppress(QueueError):
                await self.queue.requeue(job, error="worker stopped before the answer was finished")
            job_log.info("job requeued", extra={"job_id": job.job_id, "reason": "drain"})
            raise
        except PromptError as e:
            code = "prompt_too_long" if isinstance(e, PromptTooLongError) else "empty_prompt"
            await self._fail(job, code, str(e), retryable=False)
        except QueueError as e:
            log.warning("job %s: lost the queue: %s (another worker will take it over)", job.job_id, e)
        except Exception as e:
            log.exception("job %s failed", job.job_id)
            await self._fail(job, "engine_error", f"{type(e).__name__}: {e}", retryable=True)
        else:
            state: Literal["done", "cancelled"] = "cancelled" if reason == "cancelled" else "done"
            try:
                await self.queue.finish(job, state=state, finish_reason=reason, usage=usage)
            except QueueError as e:
                log.warning("job %s: could not record its end: %s", job.job_id, e)
                return
            self.jobs_done += 1
            job_log.info(
                "job finished",
                extra={
                    "job_id": job.job_id,
                    "platform": job.request.origin.platform,
                    "attempt": job.attempt,
                    "outcome": state,
                    "finish_reason": reason,
                    "seconds": round(time.monotonic() - started, 3),
                    **usage,
                },
            )

    async def _fail(self, job: ClaimedJob, code: str, message: str, *, retryable: bool) -> None:
        try:
            retried = await self.queue.fail(job, code=code, message=message, retryable=retryable)
        except QueueError as e:
            log.warning("job %s: could not record its failure: %s", job.job_id, e)
            return
        job_log.info(
            "job failed",
            extra={
                "job_id": job.job_id,
                "platform": job.request.origin.platform,
                "attempt": job.attempt,
                "code": code,
                "outcome": "retried" if retried else "failed",
            },
        )

    async def _generate(self, job: ClaimedJob) -> tuple[FinishReason, dict[str, int]]:
        prompt = build_prompt(
            job.request.conversation,
            max_tokens=self.settings.model.max_prompt_tokens - PROMPT_MARGIN_TOKENS,
            count_tokens=self.engine.count_tokens,
        )
        request = GenerationRequest(job.job_id, prompt, self._sampling(job))
        coalescer = DeltaCoalescer(self.settings.worker.coalesce_ms / 1000)
        running = self._running[job.job_id]
        reason: FinishReason = "length"
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        stream = self.engine.generate(request)
        try:
            async for update in stream:
                usage = {"prompt_tokens": update.prompt_tokens, "completion_tokens": update.completion_tokens}
                self._count_tokens(running, update.completion_tokens)
                if update.error:
                    raise RuntimeError(update.error)
                if coalescer.add(update.text) or update.finished:
                    text = coalescer.take()
                    if text:
                        await self.queue.publish(job.job_id, "delta", text=text)
                if update.finished:
                    reason = update.finish_reason or "stop"
                    break
                if running.cancel_requested.is_set():
                    reason = "cancelled"
                    break
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if reason == "cancelled" and coalescer.pending:
            await self.queue.publish(job.job_id, "delta", text=coalescer.take())
        return reason, usage

    def _count_tokens(self, running: _Running, total: int) -> None:
        new = total - running.tokens
        if new > 0:
            running.tokens = total
            self._tokens_window.append((time.monotonic(), new))

    # -- background loops -------------------------------------------------------------------------------------

    def tokens_per_second(self, window_seconds: float = 10.0) -> float:
        """Tokens generated per second over the last ``window_seconds``."""
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
            capacity=self.capacity,
            in_flight=len(self._running),
            tokens_per_second=round(self.tokens_per_second(), 2),
            jobs_done=self.jobs_done,
            draining=self._stopping.is_set(),
        )

    async def _publish_status(self) -> None:
        await self.queue.presence.publish("worker", self.name, self.record())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.queue.heartbeat_seconds)
            try:
                await self.queue.heartbeat(self.name, [r.job.entry_id for r in self._running.values()])
                await self._publish_status()
            except QueueError as e:
                log.warning("worker %s: heartbeat failed: %s", self.name, e)

    async def _cancel_loop(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not self._running:
                continue
            try:
                flagged = await self.queue.cancelled(list(self._running))
            except QueueError:
                continue
            for job_id in flagged:
                running = self._running.get(job_id)
                if running:
                    running.cancel_requested.set()
