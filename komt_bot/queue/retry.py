"""Riding out a Redis outage: retry what failed for a connection reason, with backoff, for a bounded window.

Only connection-level failures are retried (refused, reset, timed out, Redis still loading its data after a
restart, no pooled connection free). A command error is a bug or a bad state and is raised at once. Every
operation retried here is safe to repeat: the scripts check what they already did (submit by job id, publish by
sequence number, ends by state and attempt) and the rate limit counts a request by its own id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from komt_bot.errors import QueueError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.05
MAX_DELAY_SECONDS = 2.0
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says Redis could not be reached (worth retrying), not that a command was wrong."""
    return isinstance(error, TRANSIENT)


class Backoff:
    """Delays that double from 50 ms up to 2 s, and the time since the first failure."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.since: float | None = None
        self._delay = FIRST_DELAY_SECONDS

    @property
    def down_for(self) -> float:
        """Seconds since the first failure (0 while nothing failed)."""
        return 0.0 if self.since is None else time.monotonic() - self.since

    def expired(self) -> bool:
        """True once failures have lasted longer than the window."""
        return self.since is not None and self.down_for > self.window

    async def wait(self) -> None:
        """Note a failure and sleep before the next try."""
        if self.since is None:
            self.since = time.monotonic()
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, MAX_DELAY_SECONDS)

    def reset(self) -> None:
        """Redis answered again."""
        self.since = None
        self._delay = FIRST_DELAY_SECONDS


async def ride_out(
    operation: Callable[[], Awaitable[T]],
    *,
    window: float,
    what: str,
    on_retry: Callable[[float], Awaitable[None]] | None = None,
) -> T:
    """Run ``operation``; on a connection failure retry with backoff for up to ``window`` seconds.

    Raises :class:`QueueError` ("could not {what}") when the window passes, or at once for any other Redis error.
    ``on_retry`` is told the seconds Redis has been unreachable before each retry (to show "reconnecting").
    """
    backoff = Backoff(window)
    while True:
        try:
            return await operation()
        except QueueError:
            raise
        except Exception as e:
            if not is_transient(e) or backoff.expired():
                raise QueueError(f"could not {what}: {e}") from e
            if backoff.since is None:
                log.warning("Redis unreachable (%s): retrying for up to %.0f s", e, window)
            await backoff.wait()
            if on_retry is not None:
                await on_retry(backoff.down_for)
