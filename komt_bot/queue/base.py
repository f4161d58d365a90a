"""What every queue operation shares: the client, the keys, the scripts' callers and riding out an outage."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from komt_bot.queue.calls import Scripts
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
    """The Redis client, key names and scripts (:mod:`.calls`) of one deployment (one prefix).

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
        self.scripts = Scripts(redis, self.keys)

    async def _ride(
        self,
        operation: Callable[[], Awaitable[T]],
        what: str,
        *,
        on_retry: Callable[[float], Awaitable[None]] | None = None,
    ) -> T:
        """``operation``, retried through a Redis outage of up to ``outage_seconds`` (see :mod:`.retry`)."""
        return await ride_out(operation, window=self.settings.outage_seconds, what=what, on_retry=on_retry)
