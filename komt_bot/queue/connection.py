"""Connections to Redis: the configured server, or an in-process one for a single-process ``serve``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from komt_bot.errors import ConfigError, QueueError
from komt_bot.queue.jobqueue import JobQueue
from komt_bot.settings import Settings

log = logging.getLogger(__name__)


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
