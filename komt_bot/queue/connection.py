"""Connections to Redis, with every choice that matters for a long-lived chat service stated once.

* A **blocking pool** of ``queue.max_connections``: when all are busy a command waits for one (up to
  ``POOL_WAIT_SECONDS``) instead of failing with "Too many connections"; open replies share one multiplexed
  reader (:mod:`.reader`), so a thousand of them need one connection, not a thousand.
* A **socket timeout** well above the longest blocking read komt-bot makes (the reader blocks 5 s), so a slow,
  loaded machine is not mistaken for a dead Redis.
* **No retries inside redis-py**: komt-bot retries itself, only where repeating is safe, for up to
  ``queue.outage_seconds`` (:mod:`.retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from komt_bot.errors import ConfigError, QueueError
from komt_bot.logs import scrub
from komt_bot.queue.embedded import discover
from komt_bot.queue.jobqueue import JobQueue
from komt_bot.queue.retry import Backoff, is_transient
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

POOL_WAIT_SECONDS = 10.0
SOCKET_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 30
WAIT_LOG_SECONDS = 5.0
STILL_WAITING_SECONDS = 60.0  # after this long the wait is worded as a likely mistake, every STILL_LOG_SECONDS
STILL_LOG_SECONDS = 30.0


def connect(settings: Settings, *, name: str | None = None) -> aioredis.Redis:
    """A client for the configured Redis (text responses), its connections named ``name`` in ``CLIENT LIST``.

    Without ``KOMT_REDIS_URL`` it is the embedded Redis of a ``komt-bot serve`` running on this machine
    (:mod:`.embedded`). Raises ConfigError when there is neither.
    """
    url = redis_url(settings)
    if url is None:
        raise ConfigError(
            "KOMT_REDIS_URL: no Redis is configured and no `komt-bot serve` runs its embedded Redis here: "
            "start `komt-bot serve` (or ./scripts/demo), or set KOMT_REDIS_URL=redis://HOST:6379/0"
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.queue.max_connections,
        timeout=POOL_WAIT_SECONDS,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_SECONDS,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
    )
    return aioredis.Redis.from_pool(pool)


def redis_url(settings: Settings) -> str | None:
    """``KOMT_REDIS_URL``, else the URL of the embedded Redis that a ``komt-bot serve`` here runs, else None."""
    return settings.redis_url.get_secret_value() if settings.redis_url is not None else discover(settings)


def embedded_redis() -> aioredis.Redis:
    """An in-process Redis (fakeredis with Lua): `serve`'s fallback where no ``redis-server`` is installed."""
    import fakeredis

    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)


async def wait_for_redis(client: aioredis.Redis, where: str) -> None:
    """Return once Redis answers a PING, saying every few seconds that it waits (a worker started before Redis), and
    after the first minute that it still does (``where`` names the setting and its value: a typo waits forever)."""
    backoff = Backoff(window=float("inf"))
    next_said = 0.0  # seconds into the wait when it is said next
    while True:
        try:
            await client.ping()
        except Exception as e:
            if not is_transient(e):
                raise QueueError(f"Redis at {where} refuses komt-bot: {e}") from e
            waited = backoff.down_for
            if waited >= next_said:
                next_said = _say_waiting(where, e, waited)
            await backoff.wait()
            continue
        if backoff.since is not None:
            log.info("Redis at %s answers after %.0f s", where, backoff.down_for)
        return


def _say_waiting(where: str, error: Exception, waited: float) -> float:
    """Log the wait; returns when (seconds into it) to say it next."""
    if waited < STILL_WAITING_SECONDS:
        log.warning("waiting for Redis at %s (%s)", where, error)
        return min(waited + WAIT_LOG_SECONDS, STILL_WAITING_SECONDS)
    log.warning(
        "still waiting for Redis at %s after %.0f s (%s): it keeps waiting until Redis answers; if the address is "
        "wrong, fix it and restart",
        where,
        waited,
        error,
    )
    return waited + STILL_LOG_SECONDS


@contextlib.asynccontextmanager
async def open_queue(
    settings: Settings, *, embedded_ok: bool = False, wait: bool = False, name: str | None = None
) -> AsyncIterator[JobQueue]:
    """A JobQueue on the configured Redis, closed afterwards.

    It checks Redis with a PING: without ``wait`` a Redis that does not answer is a :class:`QueueError` at once;
    with ``wait`` (long-running processes) it waits for Redis to come up, however long that takes.
    """
    if settings.redis_url is None and embedded_ok:
        log.info("no KOMT_REDIS_URL and no redis-server: using an embedded in-process Redis (fakeredis)")
        client = embedded_redis()
    else:
        client = connect(settings, name=name)
    queue = JobQueue(client, settings.queue)
    try:
        if wait:
            await wait_for_redis(client, _where(settings))
        else:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS + 1):
                    await client.ping()
            except Exception as e:
                raise QueueError(f"Redis does not answer: {e}") from e
        yield queue
    finally:
        await queue.close()
        await client.aclose()


def _where(settings: Settings) -> str:
    """Where the queue's Redis is and which setting says so, the password masked."""
    url = redis_url(settings)
    if url is None:
        return "the embedded Redis"
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    address = f"{parts.hostname or parts.path}:{parts.port or 6379}"
    if settings.redis_url is None:
        return f"{address} (the embedded Redis of `komt-bot serve`)"
    return f"{address} (KOMT_REDIS_URL={scrub(url)})"
