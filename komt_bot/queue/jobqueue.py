"""The job queue's operations on Redis Streams: what adapters and workers do with jobs.

Key names live in :mod:`komt_bot.queue.keys`, the typed records in :mod:`komt_bot.jobs`, the Lua that changes a
job's state in ``scripts/``. The output stream is read with XREAD from the start, so a reader that attaches late,
or reconnects, replays it. A worker heartbeats its in-flight entries with ``XCLAIM ... JUSTID``; entries idle longer
than ``claim_idle_seconds`` belong to a dead worker and are taken over with ``XAUTOCLAIM``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from komt_bot.errors import BacklogFullError, JobNotFoundError, QueueError
from komt_bot.jobs import ClaimedJob, Event, EventType, JobRecord, JobRequest, JobState, Submission
from komt_bot.queue import scripts
from komt_bot.queue.keys import GROUP, REQUEUED_IDLE_MS, QueueKeys
from komt_bot.queue.presence import Presence
from komt_bot.settings import QueueSettings

# What redis-py returns for XRANGE-like reads (with decode_responses): [(entry id, {field: value})]
StreamEntries = list[tuple[str, dict[str, str]]]
RATE_WINDOW_SECONDS = 60


def new_job_id() -> str:
    """A short, sortable-enough, unique job id."""
    return uuid.uuid4().hex[:16]


def _now() -> str:
    return f"{time.time():.3f}"


class JobQueue:
    """All queue operations of one deployment. Every method raises :class:`QueueError` when Redis fails.

    ``clock`` gives the wall time the rate limit counts in (tests pass their own).
    """

    def __init__(
        self, redis: aioredis.Redis, settings: QueueSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = QueueKeys(settings.prefix)
        self.presence = Presence(redis, self.keys)
        self.clock = clock
        self._scripts: dict[str, AsyncScript] = {}

    def _script(self, name: str) -> AsyncScript:
        if name not in self._scripts:
            self._scripts[name] = self.redis.register_script(scripts.source(name))
        return self._scripts[name]

    async def _run(self, name: str, job_id: str, args: list[Any], *, extra_keys: Iterable[str] = ()) -> Any:
        """Run a job-changing script with the job's standard keys."""
        return await self._script(name)(keys=[*self.keys.for_job(job_id), *extra_keys], args=args)

    # -- adapters ---------------------------------------------------------------------------------------------

    async def submit(self, request: JobRequest, *, idempotency_key: str | None = None) -> Submission:
        """Queue a job, or return the one this idempotency key already made.

        Raises :class:`BacklogFullError` when the backlog is at its cap.
        """
        job_id = new_job_id()
        idem_key = self.keys.idempotency(idempotency_key) if idempotency_key else self.keys.job(job_id)
        fields = JobRecord.submit_fields(request, created=time.time())
        args: list[Any] = [job_id, self.settings.max_backlog, self.settings.idempotency_ttl_seconds]
        for name, value in fields.items():
            args += [name, value]
        try:
            status, value = await self._run("submit", job_id, args, extra_keys=[idem_key])
        except RedisError as e:
            raise QueueError(f"could not submit the job: {e}") from e
        if int(status) == -1:
            raise BacklogFullError(int(value), self.settings.max_backlog)
        job_id = str(value)
        return Submission(job_id=job_id, created=int(status) == 1, position=await self.position(job_id))

    async def rate_limit(self, user: str, per_minute: int) -> float | None:
        """Count one request of ``user``; return the seconds to wait when over ``per_minute``, else None.

        A fixed one-minute window kept in Redis, so every adapter replica shares it. ``per_minute=0`` is off.
        """
        if per_minute <= 0:
            return None
        now = self.clock()
        window = int(now // RATE_WINDOW_SECONDS)
        key = self.keys.rate(user, window)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 2 * RATE_WINDOW_SECONDS)
                count, _ = await pipe.execute()
        except RedisError as e:
            raise QueueError(f"could not check the rate limit: {e}") from e
        return None if int(count) <= per_minute else (window + 1) * RATE_WINDOW_SECONDS - now

    async def job_for_key(self, idempotency_key: str) -> str | None:
        """The job an idempotency key made, while the key is remembered (``idempotency_ttl_seconds``)."""
        try:
            job_id = await self.redis.get(self.keys.idempotency(idempotency_key))
        except RedisError as e:
            raise QueueError(f"could not look up the job: {e}") from e
        return str(job_id) if job_id else None

    async def position(self, job_id: str) -> int | None:
        """How many jobs are ahead of this one, or None when it is not waiting."""
        try:
            rank = await self.redis.zrank(self.keys.waiting, job_id)
        except RedisError as e:
            raise QueueError(f"could not read the queue position: {e}") from e
        return None if rank is None else int(cast(int, rank))

    async def backlog(self) -> int:
        """How many jobs wait to start."""
        try:
            return int(await self.redis.zcard(self.keys.waiting))
        except RedisError as e:
            raise QueueError(f"could not read the backlog: {e}") from e

    async def events(
        self, job_id: str, *, after: str = "0-0", block_seconds: float = 1.0
    ) -> AsyncIterator[Event | None]:
        """The job's events from the start (or after ``after``), ending with its terminal event.

        Yields None whenever ``block_seconds`` pass without an event, so the caller can update a placeholder or
        give up; the caller decides how long to wait in total.
        """
        key = self.keys.out(job_id)
        last = after
        while True:
            try:
                batches = cast(
                    list[tuple[str, StreamEntries]],
                    await self.redis.xread({key: last}, count=200, block=max(1, int(block_seconds * 1000))),
                )
            except RedisError as e:
                raise QueueError(f"could not read the job's output: {e}") from e
            if not batches:
                yield None
                continue
            for _stream, entries in batches:
                for entry_id, fields in entries:
                    last = entry_id
                    event = Event.decode(entry_id, fields)
                    yield event
                    if event.terminal:
                        return

    async def cancel(self, job_id: str, *, only_if_queued: bool = False) -> JobState:
        """Ask a job to stop. A queued job ends at once; a running one stops at its next token batch.

        With ``only_if_queued`` a running job is left alone (a purge that races a worker starting the job).
        Returns the state the job was in. Raises :class:`JobNotFoundError` for an unknown id.
        """
        ttl = self.settings.job_ttl_seconds
        try:
            state = await self._run("cancel", job_id, [job_id, _now(), ttl, ttl, "1" if only_if_queued else "0"])
        except RedisError as e:
            raise QueueError(f"could not cancel the job: {e}") from e
        if not state:
            raise JobNotFoundError(job_id)
        return cast(JobState, state)

    async def job(self, job_id: str) -> JobRecord:
        """The job's record (state, attempt, origin, times, ...). Raises :class:`JobNotFoundError`."""
        try:
            fields = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        except RedisError as e:
            raise QueueError(f"could not read the job: {e}") from e
        if not fields:
            raise JobNotFoundError(job_id)
        return JobRecord.from_hash(job_id, fields)

    async def output(self, job_id: str) -> list[Event]:
        """Every event the job's output stream holds now."""
        try:
            entries = cast(StreamEntries, await self.redis.xrange(self.keys.out(job_id)))
        except RedisError as e:
            raise QueueError(f"could not read the job's events: {e}") from e
        return [Event.decode(str(entry_id), fields) for entry_id, fields in entries or []]

    # -- workers ----------------------------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if they do not exist yet."""
        try:
            await self.redis.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except RedisError as e:
            if "BUSYGROUP" not in str(e):
                raise QueueError(f"could not create the consumer group: {e}") from e

    async def claim(self, consumer: str, count: int, *, block_seconds: float = 1.0) -> list[ClaimedJob]:
        """Take up to ``count`` jobs: first a dead worker's, then new ones (waiting up to ``block_seconds``)."""
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
            return [job for job in [await self._start_job(consumer, e_id, f) for e_id, f in entries] if job]
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise QueueError(f"could not claim jobs: {e}") from e
            # Redis restarted without its data (or someone deleted the stream): start over with a fresh group.
            await self.ensure_group()
            return []
        except RedisError as e:
            raise QueueError(f"could not claim jobs: {e}") from e

    async def _take_over(self, consumer: str, count: int) -> StreamEntries:
        min_idle = int(self.settings.claim_idle_seconds * 1000)
        reply = await self.redis.xautoclaim(self.keys.jobs, GROUP, consumer, min_idle, "0-0", count=count)
        entries: StreamEntries = [(e_id, f) for e_id, f in reply[1] if f]
        for deleted_id in reply[2] if len(reply) > 2 else []:
            await self.redis.xack(self.keys.jobs, GROUP, deleted_id)
        return entries

    async def _start_job(self, consumer: str, entry_id: str, fields: dict[str, str]) -> ClaimedJob | None:
        job_id = fields.get("job_id", "")
        s = self.settings
        status, attempt = await self._run(
            "start", job_id, [entry_id, consumer, _now(), s.max_attempts, job_id, s.job_ttl_seconds]
        )
        if status != "run":
            return None
        raw = await self.redis.hget(self.keys.job(job_id), "request")
        return ClaimedJob(job_id, entry_id, int(attempt), JobRequest.model_validate_json(raw or "{}"))

    async def heartbeat(self, consumer: str, entry_ids: Iterable[str]) -> None:
        """Reset the idle time of this worker's in-flight entries so nobody takes them over."""
        ids = list(entry_ids)
        if not ids:
            return
        try:
            await self.redis.xclaim(self.keys.jobs, GROUP, consumer, 0, list[Any](ids), justid=True)
        except RedisError as e:
            raise QueueError(f"could not heartbeat: {e}") from e

    async def cancelled(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs someone asked to stop."""
        if not job_ids:
            return set()
        try:
            flags = await self.redis.mget([self.keys.cancel(j) for j in job_ids])
        except RedisError as e:
            raise QueueError(f"could not read cancel flags: {e}") from e
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    async def publish(self, job_id: str, event_type: EventType, **data: Any) -> None:
        """Append an event to the job's output stream."""
        try:
            await self.redis.xadd(self.keys.out(job_id), cast(dict[Any, Any], Event.encode(event_type, **data)))
        except RedisError as e:
            raise QueueError(f"could not publish an event: {e}") from e

    async def finish(
        self,
        job: ClaimedJob,
        *,
        state: Literal["done", "cancelled"],
        finish_reason: str,
        usage: dict[str, int],
    ) -> None:
        """Publish ``done`` and acknowledge the job."""
        ttl = self.settings.job_ttl_seconds
        args = [job.job_id, job.entry_id, state, _now(), ttl, finish_reason, json.dumps(usage)]
        try:
            await self._run("finish", job.job_id, args)
        except RedisError as e:
            raise QueueError(f"could not finish the job: {e}") from e

    async def fail(self, job: ClaimedJob, *, code: str, message: str, retryable: bool) -> bool:
        """Record a failed attempt. Returns True when the job was put back for another attempt.

        A retryable failure with attempts left goes back to the front of the queue; otherwise the job ends with an
        ``error`` event (and, after ``max_attempts`` retryable failures, a copy in the dead-letter stream).
        """
        s = self.settings
        args = [
            job.job_id,
            job.entry_id,
            job.attempt,
            s.max_attempts,
            code,
            message,
            "1" if retryable else "0",
            _now(),
            s.job_ttl_seconds,
            REQUEUED_IDLE_MS,
        ]
        try:
            outcome = await self._run("fail", job.job_id, args)
        except RedisError as e:
            raise QueueError(f"could not record the failure: {e}") from e
        return bool(outcome == "retried")

    async def requeue(self, job: ClaimedJob, *, error: str | None = None) -> None:
        """Put a claimed job back at the head of the queue (drain), ahead of every new job."""
        try:
            await self._run("requeue", job.job_id, [job.job_id, job.entry_id, error or "", REQUEUED_IDLE_MS])
        except RedisError as e:
            raise QueueError(f"could not requeue the job: {e}") from e

    async def requeue_ended(self, job_id: str) -> tuple[str, int]:
        """Queue a failed or cancelled job again from attempt 0 (admin). Returns (previous state, DLQ entries
        removed); the previous state is "" for an unknown job and the job is left alone unless it had ended."""
        try:
            previous, removed = await self._run("requeue_ended", job_id, [job_id, _now()])
        except RedisError as e:
            raise QueueError(f"could not requeue the job: {e}") from e
        return str(previous), int(removed)
