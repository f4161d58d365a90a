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
from typing import Literal

from komt_bot.engine.base import (
    Engine,
    FinishReason,
    GenerationRequest,
    GenerationStream,
    GenerationUpdate,
    SamplingParams,
)
from komt_bot.errors import EmptyPromptError, EnginePromptTooLongError, EngineUnavailableError, PromptError, QueueError
from komt_bot.jobs import ClaimedJob, ErrorCode
from komt_bot.prompt import build_prompt, clean_answer
from komt_bot.queue import JobQueue
from komt_bot.queue.calls import FailOutcome
from komt_bot.settings import Settings
from komt_bot.worker.attempt import Attempt
from komt_bot.worker.hooks import JobOutcome, WorkerHooks
from komt_bot.worker.publisher import Publisher

log = logging.getLogger(__name__)
job_log = logging.getLogger("komt_bot.jobs")

# The prompt builder counts its pieces separately; the engine counts the whole prompt plus BOS. Tokens can merge
# differently across the joins, so the builder aims a little under the engine's hard limit (a prompt that still
# comes out too long ends the job as prompt_too_long, like one the builder refuses).
PROMPT_MARGIN_TOKENS = 8
REQUEUE_GRACE_SECONDS = 3.0  # a stopping worker waits this long to hand a job back; else it is taken over


_FAIL_OUTCOMES: dict[FailOutcome, JobOutcome] = {
    FailOutcome.RETRIED: "retried",
    FailOutcome.DEAD: "dead_letter",
    FailOutcome.FAILED: "failed",
    FailOutcome.LOST: "lost",
}


class _JobLost(Exception):
    """Private control flow of :class:`JobRunner`: the attempt turned out lost (another worker owns the job); it
    unwinds to :meth:`JobRunner.run`, which drops the job without writing anything more."""


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


class JobRunner:
    """Runs attempts on the worker's engine and ends each one exactly once."""

    def __init__(
        self,
        queue: JobQueue,
        engine: Engine,
        settings: Settings,
        publisher: Publisher,
        hooks: WorkerHooks,
        *,
        prompt_margin_tokens: int = PROMPT_MARGIN_TOKENS,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.settings = settings
        self.publisher = publisher
        self.hooks = hooks
        self.prompt_margin_tokens = prompt_margin_tokens
        self.jobs_done = 0
        self._hand_backs: set[asyncio.Future[bool]] = set()  # requeues that outlive their grace

    async def run(self, attempt: Attempt) -> None:
        """The error boundary of one attempt: whatever happens, it ends with an event, goes back, or is dropped."""
        job = attempt.job
        started = time.monotonic()
        try:
            reason = await self._generate(attempt)
            await self._finish(attempt, reason, started)
        except asyncio.CancelledError:
            await self._requeue(attempt)
            raise
        except _JobLost:
            self._ended(attempt, "lost", "job dropped", reason="another worker took it over")
        except (PromptError, EnginePromptTooLongError) as e:  # the same prompt would fail again: not retried
            code = ErrorCode.EMPTY_PROMPT if isinstance(e, EmptyPromptError) else ErrorCode.PROMPT_TOO_LONG
            await self._fail(attempt, code, str(e), retryable=False)
        except EngineUnavailableError as e:  # the engine already waited for its server: retrying would wait again
            log.warning("job %s: %s", job.job_id, e)
            await self._fail(attempt, ErrorCode.ENGINE_UNAVAILABLE, str(e), retryable=False)
        except QueueError as e:
            log.warning("job %s: lost the queue: %s (another worker will take it over)", job.job_id, e)
            self._ended(attempt, "lost", "job dropped", reason="Redis unreachable")
        except Exception as e:  # GenerationFailedError, or a bug: a strike, retried
            log.exception("job %s failed", job.job_id)
            await self._fail(attempt, ErrorCode.ENGINE_ERROR, f"{type(e).__name__}: {e}", retryable=True)

    async def _generate(self, attempt: Attempt) -> FinishReason:
        job = attempt.job
        prompt = build_prompt(
            job.request.conversation,
            max_tokens=self.settings.model.max_prompt_tokens - self.prompt_margin_tokens,
            count_tokens=self.engine.count_tokens,
        )
        stream = self.engine.generate(GenerationRequest(job.job_id, prompt, sampling_for(job, self.settings)))
        try:
            update = await _first_update(stream, attempt)
            while update is not None:
                attempt.record_usage(update.prompt_tokens, update.completion_tokens)
                if attempt.is_lost:
                    raise _JobLost
                text = clean_answer(update.text)  # the one place, before any reader or sink sees it
                if text:
                    self.publisher.wake(first=attempt.add_text(text))
                if update.finished:
                    return update.finish_reason or "stop"
                if attempt.cancel_requested:
                    return "cancelled"
                update = await anext(stream, None)
        finally:
            await stream.aclose()
        return "cancelled" if attempt.cancel_requested else "length"

    async def _finish(self, attempt: Attempt, reason: FinishReason, started: float) -> None:
        state: Literal["done", "cancelled"] = "cancelled" if reason == "cancelled" else "done"
        async with self.publisher.lock:  # after any text already on its way
            if not attempt.begin_finishing():
                raise _JobLost
            tail = attempt.take()
            usage = attempt.usage
            owned = await self.queue.finish(attempt.job, state=state, finish_reason=reason, usage=usage, tail=tail)
        if not owned:
            raise _JobLost
        if tail is not None and tail.seq == 1:
            self.hooks.first_text(attempt.job)
        self.jobs_done += 1
        seconds = round(time.monotonic() - started, 3)
        self._ended(attempt, state, "job finished", finish_reason=reason, seconds=seconds, **usage)

    async def _fail(self, attempt: Attempt, code: ErrorCode, message: str, *, retryable: bool) -> None:
        try:
            outcome = await self.queue.fail(attempt.job, code=code, message=message, retryable=retryable)
        except QueueError as e:
            log.warning("job %s: could not record its failure: %s", attempt.job_id, e)
            self._ended(attempt, "lost", "job dropped", reason="Redis unreachable")
            return
        self._ended(attempt, _FAIL_OUTCOMES[outcome], "job failed", code=str(code))

    async def _requeue(self, attempt: Attempt) -> None:
        """The worker is stopping: hand the job back at the head of the queue, without waiting long for Redis.

        Past the grace the hand-back goes on in the background (the worker exits meanwhile; if it lands, the job
        is back sooner than a takeover would bring it)."""
        error = "worker stopped before the answer was finished"
        hand_back = asyncio.ensure_future(self.queue.requeue(attempt.job, error=error))
        self._hand_backs.add(hand_back)
        hand_back.add_done_callback(self._hand_backs.discard)
        try:
            async with asyncio.timeout(REQUEUE_GRACE_SECONDS):
                owned = await asyncio.shield(hand_back)
        except (QueueError, TimeoutError) as e:
            log.warning("job %s: could not hand it back (%s): another worker takes it over", attempt.job_id, e)
            owned = False
        except asyncio.CancelledError:
            owned = False
        if owned:
            self._ended(attempt, "requeued", "job requeued", reason="drain")
        else:
            self._ended(attempt, "lost", "job dropped", reason="drain")

    def _ended(self, attempt: Attempt, outcome: JobOutcome, message: str, **extra: object) -> None:
        attempt.end(lost=outcome == "lost")
        job = attempt.job
        with contextlib.suppress(Exception):
            self.hooks.ended(job, outcome, attempt.usage.get("completion_tokens", 0))
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


async def _first_update(stream: GenerationStream, attempt: Attempt) -> GenerationUpdate | None:
    """The stream's first update; None when it is empty or a stop is requested first (the engine may be waiting for
    its server to come back, and a stop button must not wait with it). Later updates are checked between tokens."""
    first = asyncio.ensure_future(anext(stream, None))
    stopped = asyncio.ensure_future(attempt.until_cancel_requested())
    try:
        await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not first.done():
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
    return None if first.cancelled() else first.result()
