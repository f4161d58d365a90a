"""The job queue protocol: every key name, the wire format, and the operations on them (Redis Streams).

Keys (``{p}`` is ``settings.queue.prefix``)::

    {p}:jobs            stream of job ids; consumer group "workers"; entries are XDEL'd when acknowledged
    {p}:waiting         sorted set job id -> submission sequence: the jobs not yet started (queue position)
    {p}:seq             counter behind that sequence
    {p}:job:{id}        hash: state, attempt, request, origin fields, times, worker, usage, error
    {p}:out:{id}        stream of the job's events: start{attempt} / delta{text} / done{...} / error{...}
    {p}:cancel:{id}     set when someone asks to stop the job
    {p}:idem:{key}      idempotency key -> job id (a redelivered platform event makes no second job)
    {p}:dlq             stream of dead-lettered jobs with their last error
    {p}:index           sorted set job id -> created time (recent jobs, for the admin CLI)
    {p}:stats           hash of totals per final state
    {p}:recent:{state}  sorted set job id -> finish time (last hour, per final state)
    {p}:{platform}:...  an adapter's own marks (e.g. Slack's delivered messages, threads it answers in)
    {p}:rate:{user}:{w} requests of one person in one minute window (per-user rate limit)
    {p}:worker:{name}   a live worker's heartbeat (JSON, with a TTL)
    {p}:component:{n}   a live adapter's heartbeat (JSON, with a TTL)

The output stream is read with XREAD from the start, so a reader that attaches late, or reconnects, replays it.
A worker heartbeats its in-flight entries with ``XCLAIM ... JUSTID``; entries idle longer than
``claim_idle_seconds`` belong to a dead worker and are taken over with ``XAUTOCLAIM``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from redis.exceptions import RedisError, ResponseError

from komt_bot.errors import BacklogFullError, ConfigError, JobNotFoundError, QueueError
from komt_bot.settings import QueueSettings, Settings

log = logging.getLogger(__name__)

GROUP = "workers"
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL_STATES: tuple[JobState, ...] = ("done", "failed", "cancelled")
EventType = Literal["start", "delta", "done", "error"]
RECENT_WINDOW_SECONDS = 3600
REQUEUED_CONSUMER = "requeued"  # holds entries put back for another worker
REQUEUED_IDLE_MS = 10**10  # "idle for months": any worker's next claim takes such an entry over first
# What redis-py returns for XRANGE-like reads (with decode_responses): [(entry id, {field: value})]
StreamEntries = list[tuple[str, dict[str, str]]]


class Turn(BaseModel):
    """One message of a conversation."""

    role: Literal["user", "assistant"]
    text: str


class Origin(BaseModel):
    """Where a job came from, so replies and the admin CLI can point back at it."""

    platform: str
    channel: str | None = None
    thread: str | None = None
    message: str | None = None
    user: str | None = None


class JobRequest(BaseModel):
    """What an adapter asks for: a conversation whose last turn is the question, and optional overrides."""

    conversation: list[Turn] = Field(min_length=1)
    origin: Origin
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)


class Event(BaseModel):
    """One entry of a job's output stream."""

    id: str = ""
    type: EventType
    attempt: int = 0
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    code: str | None = None
    message: str | None = None

    @property
    def terminal(self) -> bool:
        """True for the job's last event (``done`` or ``error``)."""
        return self.type in ("done", "error")


@dataclass(frozen=True, slots=True)
class Submission:
    """The answer to :meth:`JobQueue.submit`."""

    job_id: str
    created: bool  # False when the idempotency key had already made this job
    position: int | None  # jobs ahead of it, None once it started


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker has taken."""

    job_id: str
    entry_id: str
    attempt: int
    request: JobRequest


class QueueKeys:
    """Every Redis key name of one deployment (one prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.jobs = f"{prefix}:jobs"
        self.waiting = f"{prefix}:waiting"
        self.seq = f"{prefix}:seq"
        self.dlq = f"{prefix}:dlq"
        self.index = f"{prefix}:index"
        self.stats = f"{prefix}:stats"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def out(self, job_id: str) -> str:
        return f"{self.prefix}:out:{job_id}"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def recent(self, state: str) -> str:
        return f"{self.prefix}:recent:{state}"

    def adapter(self, platform: str, *parts: str) -> str:
        """A key an adapter keeps for itself (Slack's delivered-message and thread marks)."""
        return ":".join([self.prefix, platform, *parts])

    def rate(self, user: str, window: int) -> str:
        return f"{self.prefix}:rate:{user}:{window}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def component(self, name: str) -> str:
        return f"{self.prefix}:component:{name}"


# KEYS: idem, waiting, jobs, job hash, index, seq, out
# ARGV: job id, cap, idem ttl, created, request json, platform, channel, thread, message, user
_SUBMIT = """
if KEYS[1] ~= KEYS[4] then
  local existing = redis.call('GET', KEYS[1])
  if existing then return {0, existing} end
end
local backlog = redis.call('ZCARD', KEYS[2])
if backlog >= tonumber(ARGV[2]) then return {-1, tostring(backlog)} end
if KEYS[1] ~= KEYS[4] then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3]) end
local seq = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[4], 'state', 'queued', 'attempt', 0, 'seq', seq, 'created', ARGV[4],
  'request', ARGV[5], 'platform', ARGV[6], 'channel', ARGV[7], 'thread', ARGV[8], 'message', ARGV[9],
  'user', ARGV[10])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[1])
return {1, ARGV[1]}
"""

# KEYS: job hash, waiting, jobs, cancel, out, dlq, stats, recent prefix (without state)
# ARGV: entry id, worker, now, max attempts, job id, job ttl
# Returns {status, attempt}: status "run", "skip" (gone or final), "cancelled", "dead".
_START = """
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'done' or state == 'failed' or state == 'cancelled' then
  redis.call('XACK', KEYS[3], 'workers', ARGV[1]); redis.call('XDEL', KEYS[3], ARGV[1])
  return {'skip', 0}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
local final = nil
if redis.call('EXISTS', KEYS[4]) == 1 then
  final = 'cancelled'
  redis.call('XADD', KEYS[5], '*', 'type', 'done', 'data', '{"finish_reason":"cancelled"}')
elseif attempt > tonumber(ARGV[4]) then
  final = 'failed'
  local err = redis.call('HGET', KEYS[1], 'error') or 'worker lost'
  redis.call('HSET', KEYS[1], 'error', err, 'error_code', 'dead_letter')
  redis.call('XADD', KEYS[6], '*', 'job_id', ARGV[5], 'attempts', attempt - 1, 'error', err)
  redis.call('XADD', KEYS[5], '*', 'type', 'error',
    'data', cjson.encode({code='dead_letter', message=err, attempt=attempt - 1}))
end
if final then
  redis.call('HSET', KEYS[1], 'state', final, 'finished', ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('HINCRBY', KEYS[7], final, 1)
  redis.call('ZADD', KEYS[8] .. final, ARGV[3], ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[6]); redis.call('EXPIRE', KEYS[5], ARGV[6])
  redis.call('XACK', KEYS[3], 'workers', ARGV[1]); redis.call('XDEL', KEYS[3], ARGV[1])
  if final == 'cancelled' then return {'cancelled', attempt} end
  return {'dead', attempt}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[2], 'started', ARGV[3], 'entry', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[5])
redis.call('XADD', KEYS[5], '*', 'type', 'start', 'data', cjson.encode({attempt=attempt}))
return {'run', attempt}
"""

# KEYS: job hash, waiting, out, cancel, stats, recent prefix
# ARGV: job id, now, job ttl, cancel ttl, "1" = only a queued job (leave a running one alone)
# Returns the state the job was in (or "" when unknown).
_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('XADD', KEYS[3], '*', 'type', 'done', 'data', '{"finish_reason":"cancelled"}')
  redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
  redis.call('ZADD', KEYS[6] .. 'cancelled', ARGV[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3]); redis.call('EXPIRE', KEYS[3], ARGV[3])
elseif state == 'running' and ARGV[5] ~= '1' then
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[4])
end
return state
"""


def connect(settings: Settings) -> aioredis.Redis:
    """A client for the configured Redis (text responses). Raises ConfigError when none is configured."""
    if settings.redis_url is None:
        raise ConfigError("KOMT_REDIS_URL: no Redis is configured (or run `komt-bot serve`, which embeds one)")
    return aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
    )


def embedded_redis() -> aioredis.Redis:
    """An in-process Redis (fakeredis with Lua) for a single-process `serve` without a Redis server."""
    import fakeredis

    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)


@contextlib.asynccontextmanager
async def open_queue(settings: Settings, *, embedded_ok: bool = False) -> AsyncIterator[JobQueue]:
    """A JobQueue on the configured Redis (checked with a PING), closed afterwards."""
    if settings.redis_url is None and embedded_ok:
        log.info("no KOMT_REDIS_URL: using an embedded in-process Redis (jobs live only in this process)")
        client = embedded_redis()
    else:
        client = connect(settings)
    try:
        try:
            await client.ping()
        except Exception as e:
            raise QueueError(f"Redis does not answer: {e}") from e
        yield JobQueue(client, settings.queue)
    finally:
        await client.aclose()


def new_job_id() -> str:
    """A short, sortable-enough, unique job id."""
    return uuid.uuid4().hex[:16]


def decode_event(entry_id: str, fields: dict[str, str]) -> Event:
    """One output-stream entry as an :class:`Event`."""
    data = json.loads(fields.get("data") or "{}")
    return Event.model_validate({**data, "id": entry_id, "type": fields.get("type", "error")})


class JobQueue:
    """All queue operations of one deployment. Every method raises :class:`QueueError` when Redis fails."""

    def __init__(self, redis: aioredis.Redis, settings: QueueSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = QueueKeys(settings.prefix)
        self._submit = redis.register_script(_SUBMIT)
        self._start = redis.register_script(_START)
        self._cancel = redis.register_script(_CANCEL)

    # -- adapters ---------------------------------------------------------------------------------------------

    async def submit(self, request: JobRequest, *, idempotency_key: str | None = None) -> Submission:
        """Queue a job, or return the one this idempotency key already made.

        Raises :class:`BacklogFullError` when the backlog is at its cap.
        """
        job_id = new_job_id()
        k = self.keys
        job_key = k.job(job_id)
        idem_key = k.idempotency(idempotency_key) if idempotency_key else job_key
        origin = request.origin
        try:
            status, value = await self._submit(
                keys=[idem_key, k.waiting, k.jobs, job_key, k.index, k.seq, k.out(job_id)],
                args=[
                    job_id,
                    self.settings.max_backlog,
                    self.settings.idempotency_ttl_seconds,
                    f"{time.time():.3f}",
                    request.model_dump_json(),
                    origin.platform,
                    origin.channel or "",
                    origin.thread or "",
                    origin.message or "",
                    origin.user or "",
                ],
            )
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
        now = time.time()
        window = int(now // 60)
        key = self.keys.rate(user, window)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 120)
                count, _ = await pipe.execute()
        except RedisError as e:
            raise QueueError(f"could not check the rate limit: {e}") from e
        return None if int(count) <= per_minute else (window + 1) * 60 - now

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
                    event = decode_event(entry_id, fields)
                    yield event
                    if event.terminal:
                        return

    async def cancel(self, job_id: str, *, only_if_queued: bool = False) -> JobState:
        """Ask a job to stop. A queued job ends at once; a running one stops at its next token batch.

        With ``only_if_queued`` a running job is left alone (a purge that races a worker starting the job).
        Returns the state the job was in. Raises :class:`JobNotFoundError` for an unknown id.
        """
        k = self.keys
        ttl = self.settings.job_ttl_seconds
        try:
            state = await self._cancel(
                keys=[k.job(job_id), k.waiting, k.out(job_id), k.cancel(job_id), k.stats, k.recent("")],
                args=[job_id, f"{time.time():.3f}", ttl, ttl, "1" if only_if_queued else "0"],
            )
        except RedisError as e:
            raise QueueError(f"could not cancel the job: {e}") from e
        if not state:
            raise JobNotFoundError(job_id)
        return state  # type: ignore[no-any-return]

    async def job(self, job_id: str) -> dict[str, str]:
        """The job's record (state, attempt, origin, times, ...). Raises :class:`JobNotFoundError`."""
        try:
            record = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        except RedisError as e:
            raise QueueError(f"could not read the job: {e}") from e
        if not record:
            raise JobNotFoundError(job_id)
        return record

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

    async def _take_over(self, consumer: str, count: int) -> list[tuple[str, dict[str, str]]]:
        min_idle = int(self.settings.claim_idle_seconds * 1000)
        reply = await self.redis.xautoclaim(self.keys.jobs, GROUP, consumer, min_idle, "0-0", count=count)
        entries: list[tuple[str, dict[str, str]]] = [(e_id, f) for e_id, f in reply[1] if f]
        for deleted_id in reply[2] if len(reply) > 2 else []:
            await self.redis.xack(self.keys.jobs, GROUP, deleted_id)
        return entries

    async def _start_job(self, consumer: str, entry_id: str, fields: dict[str, str]) -> ClaimedJob | None:
        job_id = fields.get("job_id", "")
        k = self.keys
        status, attempt = await self._start(
            keys=[k.job(job_id), k.waiting, k.jobs, k.cancel(job_id), k.out(job_id), k.dlq, k.stats, k.recent("")],
            args=[
                entry_id,
                consumer,
                f"{time.time():.3f}",
                self.settings.max_attempts,
                job_id,
                self.settings.job_ttl_seconds,
            ],
        )
        if status != "run":
            return None
        raw = await self.redis.hget(k.job(job_id), "request")
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
            await self.redis.xadd(self.keys.out(job_id), {"type": event_type, "data": json.dumps(data)})
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
        await self._end(
            job,
            state,
            {"type": "done", "data": json.dumps({"finish_reason": finish_reason, "usage": usage})},
            {"finish_reason": finish_reason, "usage": json.dumps(usage)},
        )

    async def fail(self, job: ClaimedJob, *, code: str, message: str, retryable: bool) -> bool:
        """Record a failed attempt. Returns True when the job was put back for another attempt.

        A retryable failure with attempts left goes back to the front of the queue; otherwise the job ends with an
        ``error`` event (and, after ``max_attempts`` retryable failures, a copy in the dead-letter stream).
        """
        if retryable and job.attempt < self.settings.max_attempts:
            await self.requeue(job, error=message)
            return True
        if retryable:
            code = "dead_letter"
            try:
                await self.redis.xadd(
                    self.keys.dlq, {"job_id": job.job_id, "attempts": str(job.attempt), "error": message}
                )
            except RedisError as e:
                raise QueueError(f"could not dead-letter the job: {e}") from e
        event = {"type": "error", "data": json.dumps({"code": code, "message": message, "attempt": job.attempt})}
        await self._end(job, "failed", event, {"error": message, "error_code": code})
        return False

    async def requeue(self, job: ClaimedJob, *, error: str | None = None) -> None:
        """Put a claimed job back at the head of the queue (drain, retry), ahead of every new job.

        A stream cannot take an entry at its front, so the entry stays pending and is marked as idle for ages:
        the next worker's claim takes pending entries over before it reads new ones.
        """
        k = self.keys
        try:
            seq = await self.redis.hget(k.job(job.job_id), "seq")
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    k.job(job.job_id), mapping={"state": "queued", "worker": "", **({"error": error} if error else {})}
                )
                pipe.zadd(k.waiting, {job.job_id: float(seq or 0)})
                pipe.xclaim(k.jobs, GROUP, REQUEUED_CONSUMER, 0, [job.entry_id], idle=REQUEUED_IDLE_MS, justid=True)
                await pipe.execute()
        except RedisError as e:
            raise QueueError(f"could not requeue the job: {e}") from e

    async def _end(self, job: ClaimedJob, state: JobState, event: dict[str, str], fields: dict[str, str]) -> None:
        k = self.keys
        now = time.time()
        ttl = self.settings.job_ttl_seconds
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(k.out(job.job_id), cast(dict[Any, Any], event))
                record: dict[Any, Any] = {"state": state, "finished": f"{now:.3f}", **fields}
                pipe.hset(k.job(job.job_id), mapping=record)
                pipe.expire(k.job(job.job_id), ttl)
                pipe.expire(k.out(job.job_id), ttl)
                pipe.delete(k.cancel(job.job_id))
                pipe.xack(k.jobs, GROUP, job.entry_id)
                pipe.xdel(k.jobs, job.entry_id)
                pipe.hincrby(k.stats, state, 1)
                pipe.zadd(k.recent(state), {job.job_id: now})
                pipe.zremrangebyscore(k.recent(state), 0, now - RECENT_WINDOW_SECONDS)
                pipe.zremrangebyscore(k.index, 0, now - ttl)
                await pipe.execute()
        except RedisError as e:
            raise QueueError(f"could not finish the job: {e}") from e

    async def register(
        self, kind: Literal["worker", "component"], name: str, status: dict[str, Any], ttl: float
    ) -> None:
        """Publish a heartbeat record that expires after ``ttl`` seconds."""
        key = self.keys.worker(name) if kind == "worker" else self.keys.component(name)
        try:
            await self.redis.set(key, json.dumps({**status, "heartbeat": time.time()}), px=int(ttl * 1000))
        except RedisError as e:
            raise QueueError(f"could not publish a heartbeat: {e}") from e

    async def live(self, kind: Literal["worker", "component"]) -> list[dict[str, Any]]:
        """The heartbeat records that have not expired, each with its ``heartbeat`` time."""
        pattern = self.keys.worker("*") if kind == "worker" else self.keys.component("*")
        try:
            keys = sorted([key async for key in self.redis.scan_iter(match=pattern, count=200)])
            values = await self.redis.mget(keys) if keys else []
        except RedisError as e:
            raise QueueError(f"could not read heartbeats: {e}") from e
        return [json.loads(v) for v in values if v]

    async def unregister(self, kind: Literal["worker", "component"], name: str) -> None:
        """Remove a heartbeat record (clean shutdown)."""
        key = self.keys.worker(name) if kind == "worker" else self.keys.component(name)
        try:
            await self.redis.delete(key)
        except RedisError as e:
            raise QueueError(f"could not remove a heartbeat: {e}") from e
