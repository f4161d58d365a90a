"""One multiplexed reader of output streams per process: a thousand open replies cost one connection.

Every open reply registers a :class:`Watch` (a job id and the last entry it saw). One task sends a single blocking
``XREAD`` over all watched streams and hands each entry to its watch's queue. A new watch wakes the blocking read
at once through a wake stream of the reader's own, so the first event of a new job is not delayed. When Redis is
unreachable the reader keeps every watch and resumes each from its last entry id once Redis answers, for up to
``outage_seconds``; watches are told how long Redis has been down meanwhile, and get a :class:`QueueError` only
when the window passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from komt_bot.errors import QueueError
from komt_bot.jobs import Event
from komt_bot.queue.base import StreamEntries
from komt_bot.queue.keys import QueueKeys
from komt_bot.queue.retry import Backoff, is_transient

log = logging.getLogger(__name__)

BLOCK_MS = 5_000  # an idle reader wakes this often; new watches wake it at once
MAX_ENTRIES_PER_STREAM = 200
WAKE_TTL_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Outage:
    """Redis has been unreachable for ``seconds``; the reader keeps trying."""

    seconds: float


@dataclass(eq=False)
class Watch:
    """One reader of one job's output stream."""

    job_id: str
    last_id: str
    inbox: asyncio.Queue[Event | Outage | QueueError] = field(default_factory=asyncio.Queue)


class OutputReader:
    """Reads the output streams of every watched job with one ``XREAD`` at a time (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, keys: QueueKeys, *, outage_seconds: float) -> None:
        self.redis = redis
        self.keys = keys
        self.outage_seconds = outage_seconds
        self._watches: dict[str, list[Watch]] = {}
        self._wake_key = keys.reader_wake(uuid.uuid4().hex[:12])
        self._wake_last = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._reading = False
        self.reads = 0  # XREAD calls made, for tests and benchmarks

    @property
    def watching(self) -> int:
        """Open watches."""
        return sum(len(w) for w in self._watches.values())

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str, *, after: str = "0-0") -> AsyncIterator[Watch]:
        """Watch ``job_id``'s output stream from ``after`` for the duration of the block."""
        watch = Watch(job_id, after)
        self._watches.setdefault(job_id, []).append(watch)
        self._ensure_running()
        await self._wake()
        try:
            yield watch
        finally:
            watches = self._watches.get(job_id, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._watches.pop(job_id, None)
            if not self._watches:
                await self._wake()  # let the reading task see it has nothing left to read, and end

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="output-reader")

    async def _wake(self) -> None:
        if not self._reading:
            return
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": "1"}, maxlen=10, approximate=True)
                pipe.expire(self._wake_key, WAKE_TTL_SECONDS)
                await pipe.execute()

    async def close(self) -> None:
        """Stop the reading task (watches still open get nothing more)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        backoff = Backoff(self.outage_seconds)
        while self._watches:
            streams = {
                self.keys.out(job_id): min((w.last_id for w in ws), key=_entry_key)
                for job_id, ws in self._watches.items()
                if ws
            }
            streams[self._wake_key] = self._wake_last
            try:
                self._reading = True
                self.reads += 1
                reply = await self.redis.xread(
                    cast(dict[Any, Any], streams), count=MAX_ENTRIES_PER_STREAM, block=BLOCK_MS
                )
            except Exception as e:
                self._reading = False
                if not is_transient(e):
                    self._fail_all(QueueError(f"could not read the jobs' output: {e}"))
                    return
                await self._outage(backoff, e)
                continue
            self._reading = False
            if backoff.since is not None:
                log.info("Redis answers again after %.1f s: replies resume where they were", backoff.down_for)
                backoff.reset()
            self._dispatch(cast(list[tuple[str, StreamEntries]], reply or []))

    async def _outage(self, backoff: Backoff, error: BaseException) -> None:
        if backoff.expired():
            self._fail_all(QueueError(f"could not read the jobs' output: Redis unreachable: {error}"))
            backoff.reset()
            return
        if backoff.since is None:
            log.warning("Redis unreachable while %d replies are open (%s): reconnecting", self.watching, error)
        await backoff.wait()
        for watches in self._watches.values():
            for watch in watches:
                watch.inbox.put_nowait(Outage(backoff.down_for))

    def _fail_all(self, error: QueueError) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.inbox.put_nowait(error)
        self._watches.clear()

    def _dispatch(self, batches: list[tuple[str, StreamEntries]]) -> None:
        prefix = self.keys.out("")
        for stream, entries in batches:
            if stream == self._wake_key:
                self._wake_last = entries[-1][0] if entries else self._wake_last
                continue
            job_id = stream[len(prefix) :]
            for watch in list(self._watches.get(job_id, [])):
                for entry_id, fields in entries:
                    if _after(entry_id, watch.last_id):
                        watch.last_id = entry_id
                        watch.inbox.put_nowait(Event.decode(entry_id, fields))


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _after(entry_id: str, last_id: str) -> bool:
    """Whether stream entry ``entry_id`` comes after ``last_id`` (ids are ``ms-seq``)."""
    return _entry_key(entry_id) > _entry_key(last_id)
