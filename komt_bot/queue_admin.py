"""Admin operations on the job queue: what ``komt-bot queue ...`` and ``komt-bot health`` read and do.

Every key name comes from :class:`komt_bot.queue.QueueKeys`; the protocol itself (submit, claim, cancel, ...) stays in
:mod:`komt_bot.queue`. This module adds the read-only views an operator needs (status, listings, one job with its
events) and the few repairs (requeue of a failed or dead-lettered job, purge of the backlog).

"Running" means claimed by a worker and not yet acknowledged: the consumer group's pending entries. A running job
whose worker has no live heartbeat record is *orphaned*; another worker takes it over once its entry has been idle
for ``claim_idle_seconds``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from komt_bot.errors import JobNotFoundError, QueueError
from komt_bot.queue import FINAL_STATES, GROUP, REQUEUED_CONSUMER, Event, JobQueue, JobRequest, decode_event, open_queue
from komt_bot.settings import Settings

RECENT_SECONDS = 300.0
PREVIEW_CHARS = 40
STALE_HEARTBEATS = 3  # a worker record older than this many heartbeat periods is stale
COMPONENT_STALE_SECONDS = 15.0  # komt_bot.heartbeat publishes every 5 s with a TTL of 3 periods
MAX_RUNNING_LISTED = 1000
DEAD_LETTER_STATE = "dead_letter"  # not a job state: a failed job whose error_code says it was dead-lettered
LISTABLE_STATES = ("queued", "running", "done", "failed", "cancelled", DEAD_LETTER_STATE)
REQUEUEABLE_STATES = ("failed", "cancelled")
_PAGE = 200

# Make a failed or cancelled job queued again, as submit does: new sequence number (back of the queue), attempt 0,
# a fresh jobs-stream entry, its old output and dead-letter entries gone (a reader replays the new attempt only).
# KEYS: job hash, waiting, jobs, out, cancel, seq, dlq, index
# ARGV: job id, now
# Returns {previous state or "", dead-letter entries removed}.
_REQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'', 0} end
if state ~= 'failed' and state ~= 'cancelled' then return {state, 0} end
local previous_error = redis.call('HGET', KEYS[1], 'error')
redis.call('HDEL', KEYS[1], 'worker', 'started', 'finished', 'entry', 'error', 'error_code', 'finish_reason', 'usage')
local seq = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', 0, 'seq', seq, 'requeued', ARGV[2])
if previous_error then redis.call('HSET', KEYS[1], 'previous_error', previous_error) end
redis.call('PERSIST', KEYS[1])
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
local created = redis.call('HGET', KEYS[1], 'created')
if created then redis.call('ZADD', KEYS[8], created, ARGV[1]) end
local removed = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[7], '-', '+', 'COUNT', 10000)) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'job_id' and fields[i + 1] == ARGV[1] then
      redis.call('XDEL', KEYS[7], entry[1])
      removed = removed + 1
    end
  end
end
redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[1])
return {state, removed}
"""


class JobStateError(QueueError):
    """The job exists but is in a state the operation does not apply to."""

    def __init__(self, job_id: str, state: str, wanted: str) -> None:
        super().__init__(f"job {job_id} is {state}: {wanted}")
        self.job_id = job_id
        self.state = state


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The first ``limit`` characters of ``text`` on one line, with an ellipsis when cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _age(then: float | None, now: float) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker heartbeat record, as ``queue status`` shows it."""

    name: str
    host: str
    model: str
    adapter: str | None
    device: str
    capacity: int
    in_flight: int
    tokens_per_second: float
    jobs_done: int
    draining: bool
    heartbeat_age: float
    stale: bool

    @classmethod
    def from_record(cls, record: dict[str, Any], now: float, stale_after: float) -> WorkerView:
        """Read a record written by :meth:`komt_bot.worker.Worker.status` (tolerating missing fields)."""
        age = max(0.0, now - float(record.get("heartbeat") or 0.0))
        return cls(
            name=str(record.get("name", "?")),
            host=str(record.get("host", "?")),
            model=str(record.get("model", "?")),
            adapter=record.get("adapter"),
            device=str(record.get("device", "?")),
            capacity=int(record.get("capacity") or 0),
            in_flight=int(record.get("in_flight") or 0),
            tokens_per_second=float(record.get("tokens_per_second") or 0.0),
            jobs_done=int(record.get("jobs_done") or 0),
            draining=bool(record.get("draining", False)),
            heartbeat_age=round(age, 3),
            stale=age > stale_after,
        )

    @property
    def serving(self) -> bool:
        """Fresh and taking jobs."""
        return not self.stale and not self.draining


@dataclass(frozen=True, slots=True)
class ComponentView:
    """One adapter heartbeat record (``component:{name}``)."""

    component: str
    host: str
    heartbeat_age: float
    stale: bool

    @classmethod
    def from_record(cls, record: dict[str, Any], now: float) -> ComponentView:
        """Read a record written by :func:`komt_bot.heartbeat.component_heartbeat`."""
        age = max(0.0, now - float(record.get("heartbeat") or 0.0))
        return cls(
            component=str(record.get("component", "?")),
            host=str(record.get("host", "?")),
            heartbeat_age=round(age, 3),
            stale=age > COMPONENT_STALE_SECONDS,
        )


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job a worker has claimed and not yet acknowledged."""

    job_id: str
    worker: str
    platform: str
    channel: str
    running_seconds: float | None
    idle_seconds: float
    deliveries: int
    worker_live: bool


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Everything ``komt-bot queue status`` shows."""

    prefix: str
    waiting: int
    running: int
    oldest_waiting_seconds: float | None
    dead_letter: int
    recent_seconds: float
    recent: dict[str, int]
    totals: dict[str, int]
    stale_after_seconds: float
    workers: list[WorkerView] = field(default_factory=list)
    components: list[ComponentView] = field(default_factory=list)
    running_jobs: list[RunningJob] = field(default_factory=list)

    @property
    def orphaned(self) -> list[RunningJob]:
        """Running jobs whose worker has no fresh heartbeat record."""
        return [job for job in self.running_jobs if not job.worker_live]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (no secrets in it)."""
        return {**asdict(self), "orphaned": len(self.orphaned)}


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One line of ``komt-bot queue jobs``: never more than a preview of the question."""

    job_id: str
    state: str
    platform: str
    channel: str
    attempt: int
    worker: str
    error_code: str
    created: float | None
    started: float | None
    finished: float | None
    question: str

    @property
    def shown_state(self) -> str:
        """The state, with ``dead_letter`` spelled out for dead-lettered failures."""
        return DEAD_LETTER_STATE if self.error_code == DEAD_LETTER_STATE else self.state

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {**asdict(self), "shown_state": self.shown_state}


@dataclass(frozen=True, slots=True)
class JobDetail:
    """One job in full: its record, the conversation and its events so far."""

    job_id: str
    record: dict[str, str]
    conversation: list[dict[str, str]]
    position: int | None
    events: list[Event]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (the raw request is replaced by the parsed conversation)."""
        return {
            "job_id": self.job_id,
            "record": {k: v for k, v in self.record.items() if k != "request"},
            "conversation": self.conversation,
            "position": self.position,
            "events": [e.model_dump(exclude_defaults=True) for e in self.events],
        }


@dataclass(frozen=True, slots=True)
class RequeueResult:
    """What one requeue did."""

    job_id: str
    previous_state: str
    dead_letter_removed: int


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """What a purge would touch, for the confirmation question."""

    waiting: list[str]
    running: list[str]
    dead_letter: int


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge did."""

    cancelled_waiting: int
    stopped_running: int
    dead_letter_dropped: int
    running_left: int


def _summary(job_id: str, record: dict[str, str]) -> JobSummary:
    return JobSummary(
        job_id=job_id,
        state=record.get("state", "?"),
        platform=record.get("platform", ""),
        channel=record.get("channel", ""),
        attempt=int(record.get("attempt") or 0),
        worker=record.get("worker", ""),
        error_code=record.get("error_code", ""),
        created=_float(record.get("created")),
        started=_float(record.get("started")),
        finished=_float(record.get("finished")),
        question=preview(_question(record)),
    )


def _conversation(record: dict[str, str]) -> list[dict[str, str]]:
    try:
        request = JobRequest.model_validate_json(record.get("request") or "{}")
    except ValidationError:
        return []
    return [{"role": turn.role, "text": turn.text} for turn in request.conversation]


def _question(record: dict[str, str]) -> str:
    turns = _conversation(record)
    return turns[-1]["text"] if turns else ""


def _matches(record: dict[str, str], state: str | None) -> bool:
    if state is None:
        return True
    if state == DEAD_LETTER_STATE:
        return record.get("error_code") == DEAD_LETTER_STATE
    return record.get("state") == state


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
        self.stale_after = STALE_HEARTBEATS * queue.settings.heartbeat_seconds
        self._requeue = queue.redis.register_script(_REQUEUE)

    # -- reading ----------------------------------------------------------------------------------------------

    async def status(self, *, now: float | None = None) -> QueueStatus:
        """The queue at a glance: backlog, running jobs, dead letters, recent outcomes and every live process."""
        now = time.time() if now is None else now
        try:
            counts = await self._counts(now)
        except RedisError as e:
            raise QueueError(f"could not read the queue status: {e}") from e
        workers = await self.workers(now=now)
        live_names = {w.name for w in workers if not w.stale}
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
            stale_after_seconds=self.stale_after,
            workers=workers,
            components=components,
            running_jobs=running,
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

    async def waiting_count(self) -> int:
        """How many jobs wait to start."""
        try:
            return int(await self.redis.zcard(self.keys.waiting))
        except RedisError as e:
            raise QueueError(f"could not read the backlog: {e}") from e

    async def oldest_waiting_age(self, *, now: float | None = None) -> float | None:
        """Seconds the job at the head of the queue has waited since it was submitted, None when none waits."""
        now = time.time() if now is None else now
        try:
            head = [str(job_id) for job_id in await self.redis.zrange(self.keys.waiting, 0, 0)]
            created = await self.redis.hget(self.keys.job(head[0]), "created") if head else None
        except RedisError as e:
            raise QueueError(f"could not read the oldest waiting job: {e}") from e
        return _age(_float(created), now) if head else None

    async def workers(self, *, now: float | None = None) -> list[WorkerView]:
        """Every worker heartbeat record that has not expired, stale ones included (marked)."""
        now = time.time() if now is None else now
        records = await self.queue.live("worker")
        return [WorkerView.from_record(r, now, self.stale_after) for r in records]

    async def components(self, *, now: float | None = None) -> list[ComponentView]:
        """Every adapter heartbeat record that has not expired."""
        now = time.time() if now is None else now
        return [ComponentView.from_record(r, now) for r in await self.queue.live("component")]

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
                platform=record.get("platform") or "",
                channel=record.get("channel") or "",
                running_seconds=_age(_float(record.get("started")), now),
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

    async def _records(self, job_ids: list[str], fields: list[str] | None = None) -> list[dict[str, str]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                if fields is None:
                    pipe.hgetall(self.keys.job(job_id))
                else:
                    pipe.hmget(self.keys.job(job_id), fields)
            replies = await pipe.execute()
        if fields is None:
            return [dict(r) for r in replies]
        return [{k: v for k, v in zip(fields, r, strict=True) if v is not None} for r in replies]

    async def jobs(self, *, state: str | None = None, limit: int = 20) -> list[JobSummary]:
        """The most recent jobs (newest first), optionally only those in ``state`` (see ``LISTABLE_STATES``)."""
        if state is not None and state not in LISTABLE_STATES:
            raise QueueError(f"unknown state {state!r}: use one of {', '.join(LISTABLE_STATES)}")
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
        matching = [(head, job_id) for job_id, head in zip(ids, heads, strict=True) if head and _matches(head, state)]
        matching.sort(
            key=lambda pair: (_float(pair[0].get("created")) or 0, int(pair[0].get("seq") or 0)), reverse=True
        )
        chosen = [job_id for _head, job_id in matching[:wanted]]
        records = await self._records(chosen)
        return [_summary(job_id, record) for job_id, record in zip(chosen, records, strict=True) if record]

    async def detail(self, job_id: str) -> JobDetail:
        """One job in full. Raises :class:`JobNotFoundError` for an unknown (or expired) id."""
        record = await self.queue.job(job_id)
        try:
            entries = _entries(await self.redis.xrange(self.keys.out(job_id)))
        except RedisError as e:
            raise QueueError(f"could not read the job's events: {e}") from e
        return JobDetail(
            job_id=job_id,
            record=record,
            conversation=_conversation(record),
            position=await self.queue.position(job_id),
            events=[decode_event(entry_id, fields) for entry_id, fields in entries],
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
        k = self.keys
        try:
            previous, removed = await self._requeue(
                keys=[k.job(job_id), k.waiting, k.jobs, k.out(job_id), k.cancel(job_id), k.seq, k.dlq, k.index],
                args=[job_id, f"{time.time():.3f}"],
            )
        except RedisError as e:
            raise QueueError(f"could not requeue the job: {e}") from e
        if not previous:
            raise JobNotFoundError(job_id)
        if previous not in REQUEUEABLE_STATES:
            raise JobStateError(job_id, str(previous), "only failed or cancelled jobs can be requeued")
        return RequeueResult(job_id, str(previous), int(removed))

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
