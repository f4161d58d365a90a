"""The queue operations of the working side: claim, heartbeat, publish and end jobs, every write fenced.

A worker's attempt number is its fencing token: every write it makes for a job (text, end, requeue, heartbeat)
runs in a script that first checks the job still runs that attempt. A worker that froze and was taken over gets
``lost`` back, writes nothing, and drops the job. Writes are retried through a Redis outage; each is safe to repeat
(text carries a sequence number, ends check what the same attempt already wrote). Each script is run through its
typed caller in :mod:`.calls`; the events it appends are encoded here, by :class:`~komt_bot.jobs.Event`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from redis.exceptions import RedisError, ResponseError

from komt_bot.errors import QueueError
from komt_bot.jobs import ClaimedJob, ErrorCode, Event, JobRequest, TextPiece
from komt_bot.queue.base import QueueBase, StreamEntries, now_text
from komt_bot.queue.calls import (
    CANCELLED_EVENT,
    NO_EVENT,
    START_EVENT,
    Fail,
    FailOutcome,
    Finish,
    Heartbeat,
    Publish,
    Requeue,
    Start,
    StartStatus,
)
from komt_bot.queue.fairness import Claim
from komt_bot.queue.keys import GROUP
from komt_bot.queue.retry import TRANSIENT, is_transient

__all__ = ["FailOutcome", "TextPiece", "WorkingOps"]

ATTEMPTS_PER_STRIKE = 4  # a job is given up after max_attempts × this many starts, strikes or not
GIVE_UP_TRIES = 3  # start calls for one entry whose give-up verdict keeps changing (another writer in between)


class WorkingOps(QueueBase):
    """What workers do with jobs. Every method raises :class:`QueueError` when Redis stays away too long."""

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if they do not exist yet."""

        async def create() -> None:
            try:
                await self.redis.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

        await self._ride(create, "create the consumer group")

    async def claim(self, consumer: str, count: int, *, block_seconds: float = 1.0) -> list[ClaimedJob]:
        """Take up to ``count`` jobs: first a dead worker's (or requeued ones), then new ones in the fair order
        (:mod:`.fairness`), waiting up to ``block_seconds`` for one to be queued when there is none.

        Not retried here: the worker's claim loop simply claims again.
        """
        if count <= 0:
            return []
        try:
            entries = await self._take_over(consumer, count)
            if len(entries) < count:
                entries += await self._claim_new(consumer, count - len(entries), block_seconds if not entries else 0)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise QueueError(f"could not claim jobs: {e}") from e
            # Redis restarted without its data (or someone deleted the stream): start over with a fresh group.
            await self.ensure_group()
            return []
        except Exception as e:
            if is_transient(e):
                raise QueueError(f"could not claim jobs: {e}") from e
            raise
        # Entries are ours now: starting them must not be lost to a blip, or they would wait for a takeover.
        started: list[ClaimedJob] = []
        for entry_id, fields in entries:
            token = uuid.uuid4().hex
            job = await self._ride(
                lambda: self._start_job(consumer, entry_id, fields, token),  # noqa: B023
                "start a job",
            )
            if job is not None:
                started.append(job)
        return started

    async def _claim_new(self, consumer: str, count: int, block_seconds: float) -> StreamEntries:
        """New jobs in the fair order; with none, block on the wake stream once and claim again."""
        call = Claim(consumer=consumer, count=count, max_running=self.settings.max_running_per_person)
        claimed = await self.scripts.run(call)
        if not claimed.entries and block_seconds > 0:
            woken = await self.redis.xread({self.keys.wake: claimed.wake_id}, block=max(1, int(block_seconds * 1000)))
            if woken:
                claimed = await self.scripts.run(call)
        return [(entry_id, {"job_id": job_id}) for entry_id, job_id in claimed.entries]

    async def _take_over(self, consumer: str, count: int) -> StreamEntries:
        min_idle = int(self.settings.claim_idle_seconds * 1000)
        reply = await self.redis.xautoclaim(self.keys.jobs, GROUP, consumer, min_idle, "0-0", count=count)
        entries: StreamEntries = [(e_id, f) for e_id, f in reply[1] if f]
        for deleted_id in reply[2] if len(reply) > 2 else []:
            await self.redis.xack(self.keys.jobs, GROUP, deleted_id)
        return entries

    async def _start_job(
        self, consumer: str, entry_id: str, fields: dict[str, str], start_token: str
    ) -> ClaimedJob | None:
        job_id = fields.get("job_id", "")
        s = self.settings
        call = Start(
            job_id=job_id,
            entry_id=entry_id,
            worker=consumer,
            now=now_text(),
            ttl=s.job_ttl_seconds,
            max_strikes=s.max_attempts,
            max_attempts=s.max_attempts * ATTEMPTS_PER_STRIKE,
            start_token=start_token,
            start_event=START_EVENT,
            cancelled_event=CANCELLED_EVENT,
        )
        for _ in range(GIVE_UP_TRIES):
            reply = await self.scripts.run(call)
            if reply.status is StartStatus.RUN:
                return ClaimedJob(job_id, entry_id, reply.attempt, JobRequest.model_validate_json(reply.request))
            if reply.status is not StartStatus.GIVE_UP:
                return None
            # To be dead-lettered: this is where its error event is encoded; the script writes it if nothing changed.
            event = Event(type="error", code=ErrorCode.DEAD_LETTER, message=reply.error)
            call = replace(call, give_up_event=event.encode(), give_up_attempt=reply.attempt, give_up_error=reply.error)
        return None  # the verdict kept changing: the entry stays pending and is taken over later

    async def heartbeat(self, consumer: str, jobs: Sequence[ClaimedJob]) -> set[str]:
        """Keep these jobs' entries claimed so nobody takes them over; returns the ids of jobs this worker lost."""
        if not jobs:
            return set()
        call = Heartbeat(worker=consumer, jobs=tuple(jobs))
        return await self._ride(lambda: self.scripts.run(call), "heartbeat")

    async def cancelled(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs someone asked to stop (read once: the watcher asks again soon)."""
        if not job_ids:
            return set()
        try:
            flags = await self.redis.mget([self.keys.cancel(j) for j in job_ids])
        except (RedisError, *TRANSIENT) as e:
            raise QueueError(f"could not read cancel flags: {e}") from e
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    async def publish_text(self, pieces: Sequence[TextPiece]) -> set[str]:
        """Append each piece to its job's output stream in one call; returns the ids of jobs this worker lost."""
        if not pieces:
            return set()
        call = Publish(pieces=tuple(pieces))
        return await self._ride(lambda: self.scripts.run(call), "publish the answer")

    async def finish(
        self,
        job: ClaimedJob,
        *,
        state: Literal["done", "cancelled"],
        finish_reason: str,
        usage: dict[str, int],
        tail: TextPiece | None = None,
    ) -> bool:
        """Publish the last text (``tail``) and ``done``, and acknowledge the job. False when the job was lost."""
        call = Finish(
            job_id=job.job_id,
            entry_id=job.entry_id,
            attempt=job.attempt,
            state=state,
            now=now_text(),
            ttl=self.settings.job_ttl_seconds,
            finish_reason=finish_reason,
            usage=json.dumps(usage),
            tail_seq=tail.seq if tail else 0,
            tail_event=Event(type="delta", text=tail.text).encode() if tail and tail.text else NO_EVENT,
            done_event=Event(type="done", finish_reason=finish_reason, usage=usage).encode(),
        )
        return await self._ride(lambda: self.scripts.run(call), "finish the job")

    async def fail(self, job: ClaimedJob, *, code: ErrorCode, message: str, retryable: bool) -> FailOutcome:
        """Record a failed attempt: ``retried`` (back to the head of the queue), ``dead`` (dead-lettered after
        ``max_attempts`` strikes), ``failed`` (not retryable: the job ends with its error) or ``lost``."""
        call = Fail(
            job_id=job.job_id,
            entry_id=job.entry_id,
            attempt=job.attempt,
            max_strikes=self.settings.max_attempts,
            code=code,
            message=message,
            retryable=retryable,
            now=now_text(),
            ttl=self.settings.job_ttl_seconds,
            failed_event=Event(type="error", code=code, message=message).encode(),
            dead_event=Event(type="error", code=ErrorCode.DEAD_LETTER, message=message).encode(),
        )
        return await self._ride(lambda: self.scripts.run(call), "record the failure")

    async def requeue(self, job: ClaimedJob, *, error: str | None = None) -> bool:
        """Put a claimed job back at the head of the queue (drain), ahead of every new job. False when lost."""
        call = Requeue(job_id=job.job_id, entry_id=job.entry_id, attempt=job.attempt, error=error or "")
        return await self._ride(lambda: self.scripts.run(call), "requeue the job")
