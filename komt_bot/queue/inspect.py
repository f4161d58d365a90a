"""Operator reads and repairs on the job queue: what ``komt-bot queue ...`` and ``komt-bot health`` use.

Every key name comes from :class:`komt_bot.queue.keys.QueueKeys` and every state change from the queue's scripts;
this module adds the read-only views an operator needs (status, listings, one job with its events) and the few
repairs (requeue of a failed or dead-lettered job, purge of the backlog).

"Running" means claimed by a worker and not yet acknowledged: the consumer group's pending entries. A running job
whose worker has no live heartbeat record is *orphaned*; another worker takes it over once its entry has been idle
for ``claim_idle_seconds``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from redis.exceptions import RedisError, ResponseError

from komt_bot.errors import JobNotFoundError, JobStateError, QueueError
from komt_bot.jobs import FINAL_STATES, ErrorCode, JobRecord
from komt_bot.queue.connection import open_queue
from komt_bot.queue.fairness import fair_order
from komt_bot.queue.jobqueue import JobQueue
from komt_bot.queue.keys import GROUP, REQUEUED_CONSUMER
from komt_bot.queue.views import (
    ComponentView,
    JobDetail,
    JobSummary,
    PurgePlan,
    PurgeResult,
    QueueStatus,
    RequeueResult,
    RunningJob,
    WorkerView,
    age,
    conversation_json,
    summary,
)
from komt_bot.settings import Settings

RECENT_SECONDS = 300.0
MAX_RUNNING_LISTED = 1000
LISTABLE_STATES: tuple[str, ...] = ("queued", "running", *FINAL_STATES, ErrorCode.DEAD_LETTER.value)
REQUEUEABLE_STATES = ("failed", "cancelled")
_PAGE = 200


def _matches(record: JobRecord, state: str | None) -> bool:
    if state is None:
        return True
    if state == ErrorCode.DEAD_LETTER:
        return record.dead_lettered
    return record.state == state


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """XRANGE's reply (a text-mode client) as typed pairs."""
    return [(str(entry_id), {str(k): str(v) for k, v in fields.items()}) for entry_id, fields in reply or []]


class QueueAdmin:
    """Operator views and repairs over one :class:`JobQueue`.

    Every method raises :class:`QueueError` when Redis fails.
    """

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.redis = queue.redis
        self.keys = queue.keys

    # -- reading ----------------------------------------------------------------------------------------------

    async def status(self, *, now: float | None = None) -> QueueStatus:
        """The queue at a glance: backlog, running jobs, dead letters, recent outcomes and every live process."""
        now = time.time() if now is None else now
        try:
            counts = await self._counts(now)
        except RedisError as e:
            raise QueueError(f"could not read the queue status: {e}") from e
        workers = await self.workers(now=now)
        live_names = {w.record.name for w in workers if not w.stale}
        running = await self.running(live_names, now=now)
        components = await self.components(now=now)
        return QueueStatus(
            prefix=self.keys.prefix,
            waiting=counts["waiting"],
            running=len(running),
            oldest_waiting_seconds=await self.oldest_waiting_age(now=now),
            dead_letter=counts["dead_letter"],
            recent_seconds=RECENT_SECONDS,
            recent={state: counts[f"recent_{state}"] for state in FINAL_STATES},
            totals={state: counts[f"total_{state}"] for state in FINAL_STATES},
            workers=workers,
            components=components,
            running_jobs=running,
            feedback=await self.queue.feedback_stats(now),
            deliveries=await self.queue.delivery_counts(),
        )

    async def _counts(self, now: float) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.waiting)
            pipe.xlen(self.keys.dlq)
            pipe.hgetall(self.keys.stats)
            for state in FINAL_STATES:
                pipe.zcount(self.keys.recent(state), now - RECENT_SECONDS, "+inf")
            waiting, dead, totals, *recent = await pipe.execute()
        counts = {"waiting": int(waiting), "dead_letter": int(dead)}
        for state, count in zip(FINAL_STATES, recent, strict=True):
            counts[f"recent_{state}"] = int(count)
            counts[f"total_{state}"] = int(totals.get(state) or 0)
        return counts

    async def oldest_waiting_age(self, *, now: float | None = None) -> float | None:
        """Seconds the job at the head of the queue has waited since it was submitted, None when none waits."""
        now = time.time() if now is None else now
        try:
            head = [str(job_id) for job_id in await self.redis.zrange(self.keys.waiting, 0, 0)]
            created = await self.redis.hget(self.keys.job(head[0]), "created") if head else None
        except RedisError as e:
            raise QueueError(f"could not read the oldest waiting job: {e}") from e
        return age(float(created), now) if head and created else None

    async def workers(self, *, now: float | None = None) -> list[WorkerView]:
        """Every worker heartbeat record that has not expired, stale ones (by the record's own ``stale_after``)
        included and marked."""
        now = time.time() if now is None else now
        return [WorkerView.from_record(r, now) for r in await self.queue.presence.workers()]

    async def components(self, *, now: float | None = None) -> list[ComponentView]:
        """Every adapter heartbeat record that has not expired."""
        now = time.time() if now is None else now
        return [ComponentView.from_record(r, now) for r in await self.queue.presence.components()]

    async def running(self, live_workers: set[str], *, now: float | None = None) -> list[RunningJob]:
        """The claimed, unacknowledged jobs, each marked with whether its worker is live."""
        now = time.time() if now is None else now
        try:
            pending = await self._pending()
            if not pending:
                return []
            job_ids = await self._entry_job_ids([p["message_id"] for p in pending])
            records = await self._records(job_ids, ["platform", "channel", "started"])
        except RedisError as e:
            raise QueueError(f"could not read the running jobs: {e}") from e
        return [
            RunningJob(
                job_id=job_id,
                worker=str(p["consumer"]),
                platform=record.platform,
                channel=record.channel,
                running_seconds=age(record.started, now),
                idle_seconds=round(int(p["time_since_delivered"]) / 1000, 3),
                deliveries=int(p["times_delivered"]),
                worker_live=str(p["consumer"]) in live_workers,
            )
            for p, job_id, record in zip(pending, job_ids, records, strict=True)
            if job_id
        ]

    async def _pending(self) -> list[dict[str, Any]]:
        """Entries a worker holds; a requeued job's entry is pending too, but it waits, so it is left out."""
        try:
            pending = await self.redis.xpending_range(self.keys.jobs, GROUP, "-", "+", MAX_RUNNING_LISTED)
            return [p for p in pending if str(p["consumer"]) != REQUEUED_CONSUMER]
        except ResponseError as e:
            if "NOGROUP" in str(e):  # no worker has ever started: nothing can be running
                return []
            raise

    async def _entry_job_ids(self, entry_ids: list[str]) -> list[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xrange(self.keys.jobs, entry_id, entry_id, count=1)
            replies = await pipe.execute()
        return [reply[0][1].get("job_id", "") if reply else "" for reply in replies]

    async def _records(self, job_ids: list[str], fields: list[str] | None = None) -> list[JobRecord]:
        """The records of these jobs (only ``fields`` of each, when given); an unknown job's record is empty."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                if fields is None:
                    pipe.hgetall(self.keys.job(job_id))
                else:
                    pipe.hmget(self.keys.job(job_id), fields)
            replies = await pipe.execute()
        if fields is None:
            hashes = [dict(r) for r in replies]
        else:
            hashes = [{k: v for k, v in zip(fields, r, strict=True) if v is not None} for r in replies]
        return [JobRecord.from_hash(job_id, h) for job_id, h in zip(job_ids, hashes, strict=True)]

    async def jobs(self, *, state: str | None = None, limit: int = 20) -> list[JobSummary]:
        """The most recent jobs (newest first), optionally only those in ``state`` (see ``LISTABLE_STATES``); the
        queued ones in the order they will start (the fair order, :mod:`.fairness`)."""
        if state is not None and state not in LISTABLE_STATES:
            raise QueueError(f"unknown state {state!r}: use one of {', '.join(LISTABLE_STATES)}")
        if state == "queued":
            try:
                waiting = await self._records(await fair_order(self.redis, self.keys, limit))
            except RedisError as e:
                raise QueueError(f"could not list jobs: {e}") from e
            return [summary(record) for record in waiting if record.raw and record.state == "queued"]
        found: list[JobSummary] = []
        start = 0
        try:
            while len(found) < limit:
                ids = [str(i) for i in await self.redis.zrevrange(self.keys.index, start, start + _PAGE - 1)]
                if not ids:
                    break
                start += len(ids)
                found.extend(await self._matching(ids, state, limit - len(found)))
        except RedisError as e:
            raise QueueError(f"could not list jobs: {e}") from e
        return found

    async def _matching(self, ids: list[str], state: str | None, wanted: int) -> list[JobSummary]:
        heads = await self._records(ids, ["state", "error_code", "created", "seq"])
        matching = [head for head in heads if head.raw and _matches(head, state)]
        matching.sort(key=lambda head: (head.created or 0, head.seq), reverse=True)
        chosen = [head.job_id for head in matching[:wanted]]
        return [summary(record) for record in await self._records(chosen) if record.raw]

    async def detail(self, job_id: str) -> JobDetail:
        """One job in full. Raises :class:`JobNotFoundError` for an unknown (or expired) id."""
        record = await self.queue.job(job_id)
        return JobDetail(
            job_id=job_id,
            record=record,
            conversation=conversation_json(record),
            position=await self.queue.position(job_id),
            events=await self.queue.output(job_id),
            feedback=await self.queue.feedback(job_id),
        )

    # -- acting -----------------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Literal["queued", "running"]:
        """Cancel a queued job, or ask a running one to stop. Returns which it was.

        Raises :class:`JobNotFoundError` for an unknown id and :class:`JobStateError` when the job already ended.
        """
        state = await self.queue.cancel(job_id)
        if state == "queued" or state == "running":
            return state
        raise JobStateError(job_id, state, "it has already ended, there is nothing to cancel")

    async def requeue(self, job_id: str) -> RequeueResult:
        """Queue a failed (dead-lettered included) or cancelled job again, from attempt 0, at the back of the queue.

        Raises :class:`JobNotFoundError` for an unknown id and :class:`JobStateError` for any other state.
        """
        reopened = await self.queue.requeue_ended(job_id)
        if reopened.previous is None:
            raise JobNotFoundError(job_id)
        if reopened.previous not in REQUEUEABLE_STATES:
            raise JobStateError(job_id, reopened.previous, "only failed or cancelled jobs can be requeued")
        return RequeueResult(job_id, reopened.previous, reopened.dead_letter_removed)

    async def dead_letter_ids(self) -> list[str]:
        """The job ids in the dead-letter stream, oldest first, each once."""
        try:
            entries = _entries(await self.redis.xrange(self.keys.dlq))
        except RedisError as e:
            raise QueueError(f"could not read the dead-letter stream: {e}") from e
        return list(dict.fromkeys(fields["job_id"] for _id, fields in entries if fields.get("job_id")))

    async def requeue_dead_letters(self) -> tuple[list[RequeueResult], list[tuple[str, str]]]:
        """Requeue every dead-lettered job. Returns what was requeued and ``(job id, why not)`` for the rest."""
        done: list[RequeueResult] = []
        skipped: list[tuple[str, str]] = []
        for job_id in await self.dead_letter_ids():
            try:
                done.append(await self.requeue(job_id))
            except (JobNotFoundError, JobStateError) as e:
                skipped.append((job_id, str(e)))
        return done, skipped

    async def purge_plan(self) -> PurgePlan:
        """What a purge would touch."""
        try:
            waiting = [str(job_id) for job_id in await self.redis.zrange(self.keys.waiting, 0, -1)]
            dead = int(await self.redis.xlen(self.keys.dlq))
        except RedisError as e:
            raise QueueError(f"could not read the backlog: {e}") from e
        running = [job.job_id for job in await self.running(set())]
        return PurgePlan(waiting=waiting, running=running, dead_letter=dead)

    async def purge(self, plan: PurgePlan, *, force: bool = False, dead_letter: bool = False) -> PurgeResult:
        """Cancel the plan's waiting jobs; with ``force`` also stop its running ones; with ``dead_letter`` empty
        the dead-letter stream. Every cancelled job gets its ``done{cancelled}`` event, so its thread is told.
        """
        cancelled = await self._cancel_waiting(plan.waiting)
        stopped = await self._stop_running(plan.running) if force else 0
        dropped = await self._drop_dead_letters() if dead_letter else 0
        return PurgeResult(cancelled, stopped, dropped, 0 if force else len(plan.running))

    async def _cancel_waiting(self, job_ids: list[str]) -> int:
        count = 0
        for job_id in job_ids:
            with contextlib.suppress(JobNotFoundError):
                count += await self.queue.cancel(job_id, only_if_queued=True) == "queued"
        return count

    async def _stop_running(self, job_ids: list[str]) -> int:
        count = 0
        for job_id in job_ids:
            with contextlib.suppress(JobNotFoundError):
                count += await self.queue.cancel(job_id) in ("queued", "running")
        return count

    async def _drop_dead_letters(self) -> int:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xlen(self.keys.dlq)
                pipe.delete(self.keys.dlq)
                count, _ = await pipe.execute()
        except RedisError as e:
            raise QueueError(f"could not empty the dead-letter stream: {e}") from e
        return int(count)


@contextlib.asynccontextmanager
async def open_admin(settings: Settings) -> AsyncIterator[QueueAdmin]:
    """A :class:`QueueAdmin` on the configured Redis (checked with a PING), closed afterwards.

    Raises :class:`ConfigError` when no Redis is configured and :class:`QueueError` when it does not answer.
    """
    async with open_queue(settings) as queue:
        yield QueueAdmin(queue)
