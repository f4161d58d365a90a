"""What every queue operation shares: the client, the keys, the scripts and riding out an outage."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from komt_bot.queue import scripts
from komt_bot.queue.keys import QueueKeys
from komt_bot.queue.presence import Presence
from komt_bot.queue.retry import ride_out
from komt_bot.settings import QueueSettings

T = TypeVar("T")
# What redis-py returns for XRANGE-like reads (with decode_responses): [(entry id, {field: value})]
StreamEntries = list[tuple[str, dict[str, str]]]


def now_text() -> str:
    """The wall time as the scripts store it."""
    return f"{time.time():.3f}"


class QueueBase:
    """The Redis client, key names and scripts of one deployment (one prefix).

    ``clock`` gives the wall time the rate limit counts in (tests pass their own).
    """

    def __init__(
        self, redis: aioredis.Redis, settings: QueueSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = QueueKeys(settings.prefix)
        self.presence = Presence(redis, self.keys, outage_seconds=settings.outage_seconds)
        self.clock = clock
        self._scripts: dict[str, AsyncScript] = {}

    def _script(self, name: str) -> AsyncScript:
        if name not in self._scripts:
            self._scripts[name] = self.redis.register_script(scripts.source(name))
        return self._scripts[name]

    async def _run(self, name: str, job_id: str, args: list[Any], *, extra_keys: Iterable[str] = ()) -> Any:
        """Run a job-changing script with the job's standard keys (once: callers wrap it in :meth:`_ride`)."""
        return await self._script(name)(keys=[*self.keys.for_job(job_id), *extra_keys], args=args)

    async def _ride(
        self,
        operation: Callable[[], Awaitable[T]],
        what: str,
        *,
        on_retry: Callable[[float], Awaitable[None]] | None = None,
    ) -> T:
        """``operation``, retried through a Redis outage of up to ``outage_seconds`` (see :mod:`.retry`)."""
        return await ride_out(operation, window=self.settings.outage_seconds, what=what, on_retry=on_retry)
