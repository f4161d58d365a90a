"""The one path every adapter takes from a question to a finished reply.

An adapter parses its platform's event, then calls :func:`ask` with the conversation and a
:class:`~komt_bot.chat.editor.ReplyEditor` bound to where the answer goes. :func:`ask` submits the job, shows the
queue position, streams the answer as it is written, and always ends the reply with the answer or with a message
saying what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Literal

from komt_bot import messages
from komt_bot.chat.editor import ReplyEditor
from komt_bot.chat.handover import ReplyRecorder, ReplyTakenOver
from komt_bot.errors import EmptyPromptError, KomtError, PromptTooLongError, QueueError
from komt_bot.jobs import Event, JobRequest
from komt_bot.prompt import check_question, question_char_limit
from komt_bot.queue import JobQueue
from komt_bot.settings import LimitSettings

log = logging.getLogger(__name__)

SAVE_ON_EXIT_SECONDS = 2.0  # a reply cancelled by a shutdown records its last messages within this

OutcomeKind = Literal["done", "cancelled", "failed", "timeout", "refused", "duplicate", "queue_down", "handed_over"]
RefusalKind = Literal["not_allowed", "empty", "too_long", "rate_limited", "queue_down"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a question ended, for logs, metrics and tests."""

    kind: OutcomeKind
    job_id: str | None = None
    finish_reason: str | None = None
    text: str = ""
    shown: bool = True  # False when the platform never took the reply's final text


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a question is not asked: ``kind`` for metrics (every adapter's ``requests`` result label), ``text`` for
    the person.

    Adapters make the ``not_allowed`` ones (their allow-lists, DMs off); :func:`admit` and :func:`check` the rest.
    """

    kind: RefusalKind
    text: str


def refusal_for(error: KomtError) -> Refusal:
    """The refusal for an error raised while checking a question: empty, too long, or else the queue."""
    kind: RefusalKind = (
        "empty"
        if isinstance(error, EmptyPromptError)
        else "too_long"
        if isinstance(error, PromptTooLongError)
        else "queue_down"
    )
    return Refusal(kind, messages.for_error(error))


def max_question_chars(limits: LimitSettings) -> int:
    """The longest question adapters accept: ``limits.max_question_chars``, or less where the model's prompt budget
    (``model.max_prompt_tokens``) could never hold a question that long (the rule: :func:`question_char_limit`)."""
    if limits.prompt_tokens is None:
        return limits.max_question_chars
    return min(limits.max_question_chars, question_char_limit(limits.prompt_tokens))


def check(text: str, limits: LimitSettings) -> str | Refusal:
    """The question ready to ask, or why not (empty, too long), without touching the rate limit.

    For an adapter that must answer at once, before it may wait on Redis (a Discord interaction).
    """
    try:
        return check_question(text, max_chars=max_question_chars(limits))
    except KomtError as e:
        return refusal_for(e)


async def admit(queue: JobQueue, limits: LimitSettings, user: str, text: str) -> str | Refusal:
    """The question ready to ask, or why not: empty, too long, asked too often, or the queue unreachable.

    Every adapter checks a question this way before it posts anything for it; ``user`` is the rate-limit key.
    """
    try:
        question = check_question(text, max_chars=max_question_chars(limits))
        wait = await queue.rate_limit(user, limits.rate_limit_per_minute)
    except KomtError as e:
        return refusal_for(e)
    if wait is not None:
        return Refusal("rate_limited", messages.rate_limited(wait))
    return question


async def ask(
    queue: JobQueue,
    request: JobRequest,
    editor: ReplyEditor,
    *,
    idempotency_key: str | None,
    timeout_seconds: float,
    job_id: str | None = None,
    recorder: ReplyRecorder | None = None,
) -> Outcome:
    """Submit ``request`` and stream its answer into ``editor``.

    ``job_id`` is the id an adapter put in the reply's buttons before submitting (the one ``idempotency_key``
    stands for, :func:`~komt_bot.jobs.job_id_for_key`); without it the queue derives or mints one. A redelivered
    platform event (same ``idempotency_key``) returns ``duplicate`` without touching the reply: the first delivery
    owns it.

    With a ``recorder`` (an adapter whose replies outlive it, :mod:`komt_bot.chat.handover`) the reply's delivery
    record is made before its first message is posted, so another process can finish it if this one goes away.
    """
    try:
        submission = await queue.submit(request, job_id=job_id, idempotency_key=idempotency_key)
        if submission.created and recorder is not None:
            await recorder.open()
    except KomtError as e:
        await editor.finish(messages.for_error(e))
        return Outcome("queue_down" if type(e) is QueueError else "refused")
    if not submission.created:
        return Outcome("duplicate", submission.job_id)
    await editor.status(messages.queued(submission.position, await queue.wait_estimate(submission.position)))
    if recorder is not None:
        await _save(recorder, "")  # the placeholder's handle, at once: a successor edits it rather than posting anew
    return await deliver(queue, submission.job_id, editor, timeout_seconds=timeout_seconds, recorder=recorder)


async def deliver(
    queue: JobQueue,
    job_id: str,
    editor: ReplyEditor,
    *,
    timeout_seconds: float,
    recorder: ReplyRecorder | None = None,
) -> Outcome:
    """Follow a job's output stream, from its start, into ``editor`` until its last event, the timeout, or Redis
    going away.

    The outcome's ``shown`` says whether the platform took the reply's final text (it is retried until then). An
    editor restored from a delivery record (a resumed reply) replays the stream into the messages already there.
    With a ``recorder`` the record follows every new message and ends with the reply; a cancelled reply (the
    adapter shutting down) leaves it, and its job, to the next process, and a reply another process has taken over
    ends at once as ``handed_over``.
    """
    return await _deliver(queue, job_id, editor, timeout_seconds=timeout_seconds, recorder=recorder)


async def resume(
    queue: JobQueue, job_id: str, editor: ReplyEditor, *, timeout_seconds: float, recorder: ReplyRecorder
) -> Outcome:
    """Continue a reply another adapter process began (``editor`` restored from its delivery record).

    What the job has written so far is read in one go and shown in the messages already there with one edit each
    (the answer never shrinks back to its first words on the way); then the stream is followed as in
    :func:`deliver`. A job that ended while no adapter ran is finished at once.
    """
    after, started = "0-0", False
    for event in await queue.output(job_id):
        if event.terminal:
            break
        started = await _apply(event, editor, started, flush=False)
        after = event.id
    return await _deliver(
        queue, job_id, editor, timeout_seconds=timeout_seconds, recorder=recorder, after=after, started=started
    )


async def _deliver(
    queue: JobQueue,
    job_id: str,
    editor: ReplyEditor,
    *,
    timeout_seconds: float,
    recorder: ReplyRecorder | None,
    after: str = "0-0",
    started: bool = False,
) -> Outcome:
    try:
        with editor.open():
            if started:
                await editor.flush()
            outcome = await _follow(
                queue, job_id, editor, timeout_seconds=timeout_seconds, recorder=recorder, after=after, started=started
            )
    except ReplyTakenOver:
        return Outcome("handed_over", job_id, text=editor.answer)
    except asyncio.CancelledError:
        if recorder is not None:  # a shutdown: the record keeps every message posted, for the next process
            await _save_on_the_way_out(recorder)
        raise
    except Exception:
        if recorder is not None:  # nothing more can be shown (the adapter stops the job): no one is to resume it
            await recorder.end()
        raise
    if recorder is not None:
        await recorder.end()
    if not editor.shown:
        log.warning("job %s: %s, but its final text could not be shown", job_id, outcome.kind)
        with contextlib.suppress(QueueError):
            await queue.note_reply_unshown(job_id, f"{outcome.kind}: the platform refused the final text")
        return dataclasses.replace(outcome, shown=False)
    return outcome


async def _follow(
    queue: JobQueue,
    job_id: str,
    editor: ReplyEditor,
    *,
    timeout_seconds: float,
    recorder: ReplyRecorder | None,
    after: str,
    started: bool,
) -> Outcome:
    deadline = time.monotonic() + timeout_seconds
    reconnecting = False

    async def on_outage(seconds: float) -> None:
        nonlocal reconnecting
        reconnecting = True
        if not started:
            await editor.status(messages.RECONNECTING)

    events = queue.events(
        job_id, after=after, block_seconds=min(0.5, editor.limits.edit_interval) or 0.5, on_outage=on_outage
    )
    try:
        # aclosing: a reply cancelled mid-stream closes its watch now, not whenever the generator is collected
        async with contextlib.aclosing(events):
            async for event in events:
                if event is None:
                    if time.monotonic() > deadline:
                        await editor.finish(messages.TIMEOUT)
                        return Outcome("timeout", job_id, text=editor.answer)
                    if started or reconnecting:
                        await editor.flush()
                    else:
                        await editor.status(await _waiting(queue, job_id))
                    if recorder is not None:
                        await _save(recorder, "")
                    continue
                reconnecting = False
                started = await _apply(event, editor, started)
                if event.terminal:
                    return await _finish(event, editor, job_id)
                if recorder is not None:
                    await _save(recorder, event.id)
    except QueueError as e:
        log.warning("job %s: lost the queue while streaming: %s", job_id, e)
        await editor.finish(messages.QUEUE_DOWN)
        return Outcome("queue_down", job_id, text=editor.answer)
    raise AssertionError("the output stream ended without a terminal event")  # pragma: no cover


async def _save(recorder: ReplyRecorder, shown_entry: str) -> None:
    """Keep the delivery record in step (a Redis blip is ridden out by the queue; past it the reply goes on)."""
    try:
        await recorder.save(shown_entry)
    except QueueError as e:
        log.warning("job %s: could not update its delivery record: %s", recorder.job_id, e)


async def _save_on_the_way_out(recorder: ReplyRecorder) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(SAVE_ON_EXIT_SECONDS):
            await asyncio.shield(recorder.save())


async def _apply(event: Event, editor: ReplyEditor, started: bool, *, flush: bool = True) -> bool:
    if event.type == "start":
        if started or event.attempt > 1:
            editor.reset()
        if flush:
            await editor.flush()
        return True
    if event.type == "delta":
        editor.append(event.text)
        if flush:
            await editor.flush()
    return started


async def _finish(event: Event, editor: ReplyEditor, job_id: str) -> Outcome:
    if event.type == "error":
        await editor.finish(messages.failed(event.code, event.message))
        return Outcome("failed", job_id, text=editor.answer)
    reason = event.finish_reason
    if reason == "cancelled":
        await editor.finish(messages.STOPPED)
        return Outcome("cancelled", job_id, reason, editor.answer)
    # Only an answer gets the feedback buttons: not an empty one, a stop, an error or a refusal.
    feedback = job_id if editor.answer.strip() else None
    await editor.finish(messages.TRUNCATED if reason == "length" else None, feedback=feedback)
    return Outcome("done", job_id, reason, editor.answer)


async def _waiting(queue: JobQueue, job_id: str) -> str:
    """The waiting message: the job's place in the fair order and the estimated wait."""
    ahead = await queue.position(job_id)
    return messages.queued(ahead, await queue.wait_estimate(ahead))
