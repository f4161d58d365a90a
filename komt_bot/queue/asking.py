"""The queue operations of the asking side: adapters, the terminal chat, the admin CLI."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import cast

from komt_bot.errors import BacklogFullError, JobNotFoundError, QueueError
from komt_bot.jobs import Event, JobRecord, JobRequest, JobState, Submission, job_id_for_key, new_job_id
from komt_bot.queue.base import QueueBase, StreamEntries, now_text
from komt_bot.queue.calls import CANCELLED_EVENT, Cancel, Reopened, RequeueEnded, Submit, SubmitStatus
from komt_bot.queue.fairness import ESTIMATE_SAMPLE, Position, wait_estimate
from komt_bot.queue.reader import Outage, OutputReader

RATE_WINDOW_SECONDS = 60


class AskingOps(QueueBase):
    """Submit, follow, cancel and look up jobs. Every method raises :class:`QueueError` when Redis stays away."""

    _reader: OutputReader | None = None

    @property
    def reader(self) -> OutputReader:
        """This queue's multiplexed output reader (one per process in practice)."""
        if self._reader is None:
            self._reader = OutputReader(self.redis, self.keys, outage_seconds=self.settings.outage_seconds)
        return self._reader

    async def submit(
        self, request: JobRequest, *, job_id: str | None = None, idempotency_key: str | None = None
    ) -> Submission:
        """Queue a job, or return the one this idempotency key (or job id) already made.

        The job id is the caller's when given, else the one ``idempotency_key`` stands for
        (:func:`~komt_bot.jobs.job_id_for_key`), else a new one: an adapter knows it before submitting, so its
        buttons carry it. A redelivered event finds its job made already (``created`` False); a retry of this same
        call, whose first try landed, is still ``created``. Raises :class:`BacklogFullError` at the backlog cap.
        """
        if job_id is None:
            job_id = job_id_for_key(idempotency_key) if idempotency_key else new_job_id()
        call = Submit(
            job_id=job_id,
            max_backlog=self.settings.max_backlog,
            idempotency_ttl=self.settings.idempotency_ttl_seconds,
            submit_token=uuid.uuid4().hex,
            idempotency_key=self.keys.idempotency(idempotency_key) if idempotency_key else self.keys.job(job_id),
            fields=tuple(JobRecord.submit_fields(request, created=self.clock()).items()),
        )
        reply = await self._ride(lambda: self.scripts.run(call), "submit the job")
        if reply.status is SubmitStatus.REFUSED:
            raise BacklogFullError(reply.backlog, self.settings.max_backlog)
        created = reply.status is SubmitStatus.CREATED
        return Submission(job_id=reply.job_id, created=created, position=await self.position(reply.job_id))

    async def rate_limit(self, user: str, per_minute: int) -> float | None:
        """Count one request of ``user``; return the seconds to wait when over ``per_minute``, else None.

        A fixed one-minute window kept in Redis, so every adapter replica shares it. ``per_minute=0`` is off. Each
        request is counted by an id of its own, so a retry after a lost reply never counts it twice.
        """
        if per_minute <= 0:
            return None
        now = self.clock()
        window = int(now // RATE_WINDOW_SECONDS)
        key = self.keys.rate(user, window)
        request_id = uuid.uuid4().hex

        async def count() -> int:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {request_id: now})
                pipe.expire(key, 2 * RATE_WINDOW_SECONDS)
                pipe.zcard(key)
                _added, _expire, total = await pipe.execute()
            return int(total)

        total = await self._ride(count, "check the rate limit")
        return None if total <= per_minute else (window + 1) * RATE_WINDOW_SECONDS - now

    async def first_delivery(self, platform: str, event_key: str) -> bool:
        """True for the first delivery of a platform event, False for a redelivery (kept ``idempotency_ttl``).

        Safe to retry: the mark carries an id of this call, so a retry whose first try landed still says True.
        """
        mark = self.keys.adapter(platform, "seen", event_key)
        token = uuid.uuid4().hex

        async def claim() -> bool:
            if await self.redis.set(mark, token, nx=True, ex=self.settings.idempotency_ttl_seconds):
                return True
            return bool(await self.redis.get(mark) == token)

        return await self._ride(claim, "check for a redelivered event")

    async def remember(self, platform: str, *parts: str, ttl: int) -> None:
        """Keep an adapter's mark (e.g. a thread it answers in) for ``ttl`` seconds."""
        key = self.keys.adapter(platform, *parts)
        await self._ride(lambda: self.redis.set(key, "1", ex=ttl), "remember a thread")

    async def remembered(self, platform: str, *parts: str) -> bool:
        """Whether an adapter's mark is there."""
        key = self.keys.adapter(platform, *parts)
        return bool(await self._ride(lambda: self.redis.exists(key), "look up a thread"))

    async def note_reply_unshown(self, job_id: str, reason: str) -> None:
        """Record on the job that its reply's final text never reached the platform (``queue show`` shows it)."""
        key = self.keys.job(job_id)
        await self._ride(lambda: self.redis.hset(key, "reply_unshown", reason[:200]), "note an unshown reply")

    async def job_for_key(self, idempotency_key: str) -> str | None:
        """The job an idempotency key made, while the key is remembered (``idempotency_ttl_seconds``)."""
        job_id = await self._ride(lambda: self.redis.get(self.keys.idempotency(idempotency_key)), "look up the job")
        return str(job_id) if job_id else None

    async def position(self, job_id: str) -> int | None:
        """How many jobs will start before this one in the fair order, or None when it is not waiting."""
        call = Position(job_id=job_id)
        return await self._ride(lambda: self.scripts.run(call), "read the queue position")

    async def wait_estimate(self, ahead: int | None) -> float | None:
        """Seconds a job with ``ahead`` jobs before it will likely wait, from recent completions (None: unknown)."""
        if not ahead:
            return None
        key = self.keys.recent("done")
        rows = cast(
            list[tuple[str, float]],
            await self._ride(
                lambda: self.redis.zrevrange(key, 0, ESTIMATE_SAMPLE - 1, withscores=True), "read recent completions"
            ),
        )
        return wait_estimate(ahead, [float(score) for _member, score in rows], now=self.clock())

    async def backlog(self) -> int:
        """How many jobs wait to start."""
        return int(await self._ride(lambda: self.redis.zcard(self.keys.waiting), "read the backlog"))

    async def events(
        self,
        job_id: str,
        *,
        after: str = "0-0",
        block_seconds: float = 1.0,
        on_outage: Callable[[float], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[Event | None, None]:
        """The job's events from the start (or after ``after``), ending with its terminal event.

        Yields None whenever ``block_seconds`` pass without an event, so the caller can update a placeholder or
        give up; the caller decides how long to wait in total. While Redis is unreachable ``on_outage`` is told for
        how long (and None is yielded); reading resumes where it was once Redis answers. Raises
        :class:`QueueError` once Redis has been away for ``outage_seconds``.
        """
        async with self.reader.watch(job_id, after=after) as watch:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that meets an event
                    async with asyncio.timeout(block_seconds):
                        item = await watch.inbox.get()
                except TimeoutError:
                    yield None
                    continue
                if isinstance(item, QueueError):
                    raise item
                if isinstance(item, Outage):
                    if on_outage is not None:
                        await on_outage(item.seconds)
                    yield None
                    continue
                yield item
                if item.terminal:
                    return

    async def cancel(self, job_id: str, *, only_if_queued: bool = False) -> JobState:
        """Ask a job to stop. A queued job ends at once; a running one stops at its next token batch.

        With ``only_if_queued`` a running job is left alone (a purge that races a worker starting the job).
        Returns the state the job was in. Raises :class:`JobNotFoundError` for an unknown id.
        """
        ttl = self.settings.job_ttl_seconds
        call = Cancel(
            job_id=job_id,
            now=now_text(),
            ttl=ttl,
            cancel_ttl=ttl,
            only_if_queued=only_if_queued,
            cancelled_event=CANCELLED_EVENT,
        )
        state = await self._ride(lambda: self.scripts.run(call), "cancel the job")
        if state is None:
            raise JobNotFoundError(job_id)
        return state

    async def job(self, job_id: str) -> JobRecord:
        """The job's record (state, attempt, origin, times, ...). Raises :class:`JobNotFoundError`."""
        fields = cast(
            dict[str, str], await self._ride(lambda: self.redis.hgetall(self.keys.job(job_id)), "read the job")
        )
        if not fields:
            raise JobNotFoundError(job_id)
        return JobRecord.from_hash(job_id, fields)

    async def output(self, job_id: str) -> list[Event]:
        """Every event the job's output stream holds now."""
        entries = cast(
            StreamEntries, await self._ride(lambda: self.redis.xrange(self.keys.out(job_id)), "read the job's events")
        )
        return [Event.decode(str(entry_id), fields) for entry_id, fields in entries or []]

    async def requeue_ended(self, job_id: str) -> Reopened:
        """Queue a failed or cancelled job again from attempt 0 (admin). Returns the previous state (None for an
        unknown job) and the dead-letter entries removed; the job is left alone unless it had ended."""
        call = RequeueEnded(job_id=job_id, now=now_text())
        return await self._ride(lambda: self.scripts.run(call), "requeue the job")
