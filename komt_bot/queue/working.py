"""The queue operations of the working side: claim, heartbeat, publish and end jobs, every write fenced.

A worker's attempt number is its fencing token: every write it makes for a job (text, end, requeue, heartbeat)
runs in a script that first checks the job still runs that attempt. A worker that froze and was taken over gets
``lost`` back, writes nothing, and drops the job. Writes are retried through a Redis outage; each is safe to repeat
(text carries a sequence number, ends check what the same attempt already wrote).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.exceptions import ResponseError

from komt_bot.errors import QueueError
from komt_bot.jobs import ClaimedJob, JobRequest
from komt_bot.queue.base import QueueBase, StreamEntries, now_text
from komt_bot.queue.keys import GROUP, REQUEUED_IDLE_MS
from komt_bot.queue.retry import is_transient

ATTEMPTS_PER_STRIKE = 4  # a job is given up after max_attempts × this many starts, strikes or not
FailOutcome = Literal["retried", "dead", "failed", "lost"]


@dataclass(frozen=True, slots=True)
class TextPiece:
    """Text a worker publishes for one job: the ``seq``-th piece of its current attempt."""

    job: ClaimedJob
    seq: int
    text: str


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
        """Take up to ``count`` jobs: first a dead worker's, then new ones (waiting up to ``block_seconds``).

        Not retried here: the worker's claim loop simply claims again.
        """
        if count <= 0:
            return []
        try:
            entries = await self._take_over(consumer, count)
            if len(entries) < count:
                batches = cast(
                    list[tuple[str, StreamEntries]] | None,
                    await self.redis.xreadgroup(
                        GROUP,
                        consumer,
                        {self.keys.jobs: ">"},
                        count=count - len(entries),
                        block=max(1, int(block_seconds * 1000)) if not entries else None,
                    ),
                )
                for _stream, new_entries in batches or []:
                    entries.extend(new_entries)
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
        args = [entry_id, consumer, now_text(), s.max_attempts, job_id, s.job_ttl_seconds]
        args += [s.max_attempts * ATTEMPTS_PER_STRIKE, start_token]
        status, attempt, *request = await self._run("start", job_id, args)
        if status != "run":
            return None
        return ClaimedJob(job_id, entry_id, int(attempt), JobRequest.model_validate_json(request[0]))

    async def heartbeat(self, consumer: str, jobs: Sequence[ClaimedJob]) -> set[str]:
        """Keep these jobs' entries claimed so nobody takes them over; returns the ids of jobs this worker lost."""
        if not jobs:
            return set()
        keys = [self.keys.jobs, *(self.keys.job(job.job_id) for job in jobs)]
        args: list[Any] = [consumer]
        for job in jobs:
            args += [job.entry_id, job.attempt]
        lost = await self._ride(lambda: self._script("heartbeat")(keys=keys, args=args), "heartbeat")
        return {jobs[int(index) - 1].job_id for index in lost or []}

    async def cancelled(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs someone asked to stop (read once: the watcher asks again soon)."""
        if not job_ids:
            return set()
        try:
            flags = await self.redis.mget([self.keys.cancel(j) for j in job_ids])
        except Exception as e:
            raise QueueError(f"could not read cancel flags: {e}") from e
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    async def publish_text(self, pieces: Sequence[TextPiece]) -> set[str]:
        """Append each piece to its job's output stream in one call; returns the ids of jobs this worker lost."""
        if not pieces:
            return set()
        keys: list[str] = []
        args: list[Any] = []
        for piece in pieces:
            keys += [self.keys.job(piece.job.job_id), self.keys.out(piece.job.job_id)]
            args += [piece.job.attempt, piece.seq, piece.text]
        published = await self._ride(lambda: self._script("publish")(keys=keys, args=args), "publish the answer")
        return {piece.job.job_id for piece, ok in zip(pieces, published, strict=True) if not int(ok)}

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
        ttl = self.settings.job_ttl_seconds
        args = [job.job_id, job.entry_id, state, now_text(), ttl, finish_reason, json.dumps(usage), job.attempt]
        args += [tail.seq, tail.text] if tail else [0, ""]
        outcome = await self._ride(lambda: self._run("finish", job.job_id, args), "finish the job")
        return bool(outcome == "ok")

    async def fail(self, job: ClaimedJob, *, code: str, message: str, retryable: bool) -> FailOutcome:
        """Record a failed attempt: ``retried`` (back to the head of the queue), ``dead`` (dead-lettered after
        ``max_attempts`` strikes), ``failed`` (not retryable: the job ends with its error) or ``lost``."""
        s = self.settings
        args = [job.job_id, job.entry_id, job.attempt, s.max_attempts, code, message]
        args += ["1" if retryable else "0", now_text(), s.job_ttl_seconds, REQUEUED_IDLE_MS]
        outcome = await self._ride(lambda: self._run("fail", job.job_id, args), "record the failure")
        return cast(FailOutcome, str(outcome))

    async def requeue(self, job: ClaimedJob, *, error: str | None = None) -> bool:
        """Put a claimed job back at the head of the queue (drain), ahead of every new job. False when lost."""
        args = [job.job_id, job.entry_id, error or "", REQUEUED_IDLE_MS, job.attempt]
        outcome = await self._ride(lambda: self._run("requeue", job.job_id, args), "requeue the job")
        return bool(outcome == "ok")
