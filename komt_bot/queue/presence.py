"""Presence records: who is alive. Workers and adapters each publish one that expires unless refreshed.

A record carries its own ``stale_after`` (what its publisher promised: three of its heartbeat periods), so a reader
never needs to know another process's settings to tell a silent one.
"""

from __future__ import annotations

import json
import time
from typing import TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError

from komt_bot.queue.keys import PresenceKind, QueueKeys
from komt_bot.queue.retry import ride_out

MIN_TTL_SECONDS = 5.0


class PresenceRecord(BaseModel):
    """What every presence record holds."""

    model_config = ConfigDict(extra="allow")

    host: str = "?"
    heartbeat: float = 0.0
    stale_after: float = 15.0

    def age(self, now: float) -> float:
        """Seconds since it was published."""
        return max(0.0, now - self.heartbeat)

    def stale(self, now: float) -> bool:
        """Older than its publisher promised to refresh it."""
        return self.age(now) > self.stale_after


class WorkerRecord(PresenceRecord):
    """A worker's record (published by :meth:`komt_bot.worker.Worker.record`)."""

    name: str = "?"
    pid: int = 0
    model: str = "?"
    adapter: str | None = None
    device: str = "?"
    quantization: str | None = None
    engine: str = "?"
    endpoint: str | None = None  # a remote engine's server (base URL)
    engine_ok: bool | None = None  # whether that server answered the last check (None: no check, or not yet)
    engine_error: str | None = None  # why it did not
    capacity: int = 0
    in_flight: int = 0
    tokens_per_second: float = 0.0
    jobs_done: int = 0
    draining: bool = False


class ComponentRecord(PresenceRecord):
    """An adapter's record (published by :func:`komt_bot.chat.presence.adapter_heartbeat`)."""

    component: str = "?"


R = TypeVar("R", bound=PresenceRecord)


class Presence:
    """Publishes and reads the presence records of one deployment."""

    def __init__(self, redis: aioredis.Redis, keys: QueueKeys, *, outage_seconds: float) -> None:
        self.redis = redis
        self.keys = keys
        self.outage_seconds = outage_seconds

    async def publish(self, kind: PresenceKind, name: str, record: PresenceRecord) -> None:
        """Write ``record`` (stamped when it is written) with a TTL a little past its ``stale_after``."""
        ttl = max(record.stale_after, MIN_TTL_SECONDS)
        key = self.keys.presence(kind, name)

        async def write() -> None:
            stamped = record.model_copy(update={"heartbeat": time.time()})
            await self.redis.set(key, stamped.model_dump_json(), px=int(ttl * 1000))

        await ride_out(write, window=self.outage_seconds, what="publish a heartbeat")

    async def remove(self, kind: PresenceKind, name: str) -> None:
        """Remove a record (clean shutdown)."""
        key = self.keys.presence(kind, name)
        await ride_out(lambda: self.redis.delete(key), window=self.outage_seconds, what="remove a heartbeat")

    async def _raw(self, kind: PresenceKind) -> list[str]:
        async def read() -> list[str]:
            pattern = self.keys.presence(kind, "*")
            keys = sorted([key async for key in self.redis.scan_iter(match=pattern, count=200)])
            values = await self.redis.mget(keys) if keys else []
            return [str(v) for v in values if v]

        return await ride_out(read, window=self.outage_seconds, what="read heartbeats")

    async def workers(self) -> list[WorkerRecord]:
        """Every worker record that has not expired (stale ones included)."""
        return [r for r in (_parse(WorkerRecord, v) for v in await self._raw("worker")) if r]

    async def components(self) -> list[ComponentRecord]:
        """Every adapter record that has not expired (stale ones included)."""
        return [r for r in (_parse(ComponentRecord, v) for v in await self._raw("component")) if r]


def _parse(model: type[R], raw: str) -> R | None:
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None
