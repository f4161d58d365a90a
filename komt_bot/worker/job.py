"""One job on one worker: build the prompt, generate, hand the text to the publisher, end the attempt.

Whatever happens the attempt ends in exactly one way: finished (done or cancelled), failed (retried, dead-lettered
or failed for good), requeued (the worker stopped), or dropped (the worker lost it to another, or lost Redis for
longer than the outage window: another worker takes it over then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from komt_bot.engine.base import Engine, FinishReason, GenerationRequest, GenerationUpdate, SamplingParams
from komt_bot.errors import EngineUnavailableError, PromptError, PromptTooLongError, QueueError
from komt_bot.jobs import ClaimedJob
from komt_bot.prompt import build_prompt, clean_answer
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from komt_bot.worker.hooks import JobOutcome, WorkerHooks
from komt_bot.worker.publisher import JobText, Publisher

log = logging.getLogger(__name__)
job_log = logging.getLogger("komt_bot.jobs")

# The prompt builder counts its pieces separately; the engine counts the whole prompt plus BOS. Tokens can merge
# differently across the joins, so the builder aims a little under the engine's hard limit.
PROMPT_MARGIN_TOKENS = 8
REQUEUE_GRACE_SECONDS = 3.0  # a stopping worker waits this long to hand a job back; else it is taken over


class JobLost(Exception):
    """Another worker owns the job now (this one froze or was too slow): write nothing more."""


def sampling_for(job: ClaimedJob, settings: Settings) -> SamplingParams:
    """The job's sampling: its own overrides within the deployment's defaults and limits."""
    gen = settings.generation
    req = job.request
    return SamplingParams(
        temperature=gen.temperature if req.temperature is None else req.temperature,
        top_p=gen.top_p if req.top_p is None else req.top_p,
        top_k=gen.top_k if req.top_k is None else req.top_k,
        max_new_tokens=min(req.max_new_tokens or gen.max_new_tokens, gen.max_new_tokens),
        stop=tuple(gen.stop),
    )


@dataclass(eq=False)
class JobRun:
    """The state of one running attempt, shared with the worker's background loops."""

    job: ClaimedJob
    text: JobText
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    tokens: int = 0
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})


class JobRunner:
    """Runs attempts on the worker's engine and ends each one exactly once."""

    def __init__(
        self, queue: JobQueue, engine: Engine, settings: Settings, publisher: Publisher, hooks: WorkerHooks
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.settings = settings
        self.publisher = publisher
        self.hooks = hooks
        self.jobs_done = 0

    async def run(self, run: JobRun) -> None:
        """The error boundary of one attempt: whatever happens, it ends with an event, goes back, or is dropped."""
        job = run.job
        started = time.monotonic()
        try:
            reason = await self._generate(run)
            await self._finish(run, reason, started)
        except asyncio.CancelledError:
            await self._requeue(run)
            raise
        except JobLost:
            self._ended(run, "lost", "job dropped", reason="another worker took it over")
        except PromptError as e:
            code = "prompt_too_long" if isinstance(e, PromptTooLongError) else "empty_prompt"
            await self._fail(run, code, str(e), retryable=False)
        except EngineUnavailableError as e:  # the engine already waited for its server: retrying would wait again
            log.warning("job %s: %s", job.job_id, e)
            await self._fail(run, "engine_unavailable", str(e), retryable=False)
        except QueueError as e:
            log.warning("job %s: lost the queue: %s (another worker will take it over)", job.job_id, e)
            self._ended(run, "lost", "job dropped", reason="Redis unreachable")
        except Exception as e:
            log.exception("job %s failed", job.job_id)
            await self._fail(run, "engine_error", f"{type(e).__name__}: {e}", retryable=True)

    async def _generate(self, run: JobRun) -> FinishReason:
        job = run.job
        prompt = build_prompt(
            job.request.conversation,
            max_tokens=self.settings.model.max_prompt_tokens - PROMPT_MARGIN_TOKENS,
            count_tokens=self.engine.count_tokens,
        )
        stream = self.engine.generate(GenerationRequest(job.job_id, prompt, sampling_for(job, self.settings)))
        try:
            updates = aiter(stream)
            update = await _first_update(updates, run.cancel_requested)
            while update is not None:
                run.usage = {"prompt_tokens": update.prompt_tokens, "completion_tokens": update.completion_tokens}
                if update.error:
                    raise RuntimeError(update.error)
                if run.text.lost.is_set():
                    raise JobLost
                text = clean_answer(update.text)  # the one place, before any reader or sink sees it
                if text:
                    run.text.pending += text
                    self.publisher.wake(first=run.text.seq == 0)
                if update.finished:
                    return update.finish_reason or "stop"
                if run.cancel_requested.is_set():
                    return "cancelled"
                update = await anext(updates, None)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return "cancelled" if run.cancel_requested.is_set() else "length"

    async def _finish(self, run: JobRun, reason: FinishReason, started: float) -> None:
        state: Literal["done", "cancelled"] = "cancelled" if reason == "cancelled" else "done"
        async with self.publisher.lock:  # after any text already on its way
            run.text.finishing = True
            tail = run.text.take()
            if run.text.lost.is_set():
                raise JobLost
            owned = await self.queue.finish(run.job, state=state, finish_reason=reason, usage=run.usage, tail=tail)
        if not owned:
            raise JobLost
        if tail is not None and tail.seq == 1:
            self.hooks.first_text(run.job)
        self.jobs_done += 1
        self._ended(
            run, state, "job finished", finish_reason=reason, seconds=round(time.monotonic() - started, 3), **run.usage
        )

    async def _fail(self, run: JobRun, code: str, message: str, *, retryable: bool) -> None:
        try:
            outcome = await self.queue.fail(run.job, code=code, message=message, retryable=retryable)
        except QueueError as e:
            log.warning("job %s: could not record its failure: %s", run.job.job_id, e)
            self._ended(run, "lost", "job dropped", reason="Redis unreachable")
            return
        shown: JobOutcome = "dead_letter" if outcome == "dead" else outcome
        self._ended(run, shown, "job failed", code=code)

    async def _requeue(self, run: JobRun) -> None:
        """The worker is stopping: hand the job back at the head of the queue, without waiting long for Redis."""
        try:
            owned = await asyncio.wait_for(
                asyncio.shield(self.queue.requeue(run.job, error="worker stopped before the answer was finished")),
                REQUEUE_GRACE_SECONDS,
            )
        except (QueueError, TimeoutError) as e:
            log.warning("job %s: could not hand it back (%s): another worker takes it over", run.job.job_id, e)
            owned = False
        except asyncio.CancelledError:
            owned = False
        self._ended(run, "requeued" if owned else "lost", "job requeued" if owned else "job dropped", reason="drain")

    def _ended(self, run: JobRun, outcome: JobOutcome, message: str, **extra: object) -> None:
        job = run.job
        with contextlib.suppress(Exception):
            self.hooks.ended(job, outcome, run.usage.get("completion_tokens", 0))
        job_log.info(
            message,
            extra={
                "job_id": job.job_id,
                "platform": job.request.origin.platform,
                "attempt": job.attempt,
                "outcome": outcome,
                **extra,
            },
        )


async def _first_update(updates: AsyncIterator[GenerationUpdate], stop: asyncio.Event) -> GenerationUpdate | None:
    """The stream's first update; None when it is empty or ``stop`` is set first (the engine may be waiting for its
    server to come back, and a stop button must not wait with it). Later updates are checked between tokens."""
    first = asyncio.ensure_future(anext(updates, None))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not first.done():
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
    return None if first.cancelled() else first.result()
