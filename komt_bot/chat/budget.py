"""One rate budget per platform connection, shared by every open reply: the platforms limit apps, not messages.

Slack counts calls "per API method per workspace per app" (``chat.update`` about 50 a minute with bursts,
``chat.appendStream`` about 100, posting about one a second per channel); Discord about 5 edits per 5 s per channel.
A :class:`PlatformBudget` keeps one token bucket per limit (a :class:`RateBucket`: a method in a workspace, a route in
a channel) and every platform call of every reply in the process goes through it, by :class:`Priority`:

* ``FIRST``: a new message and an answer's first words (replacing its placeholder) -- people see the answer start;
* ``FINAL``: an ended answer's final text -- people see all of it as soon as the budget allows;
* ``EDIT``: intermediate edits. They never wait: an edit is sent only while the bucket holds more than its reserve
  (the tokens kept for first words and finals), else it is skipped and the next flush sends the newer text, so
  stale edits never queue. With many answers open each answer is edited less often; see
  :meth:`PlatformBudget.edit_interval`.

A 429 slows the whole bucket at once (:meth:`RateBucket.throttled`): nobody calls until its ``Retry-After`` has
passed, and the bucket refills at half its rate, recovering gradually as calls succeed. Each process has its own
buckets; replicas that share a workspace split the documented limits by ``share`` (see docs/SLACK.md), and the 429
adaptation absorbs what is left over.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

T = TypeVar("T")

EDIT_RESERVE_SHARE = 0.75  # intermediate edits leave this share of a bucket's burst to first words and finals
SLOWEST_SHARE = 0.1  # a bucket slowed by 429s never drops below this share of its documented rate
RECOVERY_CALLS = 10  # successful calls that bring a slowed bucket back by one tenth of its documented rate
MAX_THROTTLED_TRIES = 8  # 429s in a row on one call before it is given up (the caller retries or reports)


class Priority(IntEnum):
    """Who is served first when a bucket runs short (lower first)."""

    FIRST = 0
    FINAL = 1
    EDIT = 2


@dataclass(frozen=True, slots=True)
class Tier:
    """A documented limit: ``rate`` calls a second on average, ``burst`` at once."""

    rate: float
    burst: int

    @classmethod
    def per_minute(cls, calls: float, burst: int) -> Tier:
        """A limit written the way Slack documents its tiers."""
        return cls(calls / 60, burst)


class EditSkipped(Exception):
    """An intermediate edit found no spare budget: the editor sends the newer text at a later flush."""


class Throttled(Exception):
    """A platform answered 429 (``retry_after`` seconds) -- raised by a platform's classifier, not by the budget."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.1f} s")
        self.retry_after = retry_after


class RateBucket:
    """One platform limit, shared by every reply that calls it: a token bucket with priorities (module docstring)."""

    def __init__(self, name: str, tier: Tier, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.tier = tier
        self.clock = clock
        self.rate = tier.rate
        self.tokens = float(tier.burst)
        self.updated = clock()
        self.paused_until = 0.0
        self.throttles = 0  # 429s seen
        self._successes = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def reserve(self) -> float:
        """Tokens intermediate edits leave alone."""
        return self.tier.burst * EDIT_RESERVE_SHARE

    def _refill(self) -> None:
        now = self.clock()
        start = max(self.updated, self.paused_until)
        if now > start:
            self.tokens = min(float(self.tier.burst), self.tokens + (now - start) * self.rate)
        self.updated = now

    def try_take(self, priority: Priority = Priority.EDIT) -> bool:
        """Take a token now if ``priority`` may have one (an edit only above the reserve, nobody ahead waiting)."""
        self._refill()
        if self.clock() < self.paused_until or any(w[0] <= priority for w in self._waiters):
            return False
        floor = 1 + (self.reserve if priority is Priority.EDIT else 0)
        if self.tokens < floor:
            return False
        self.tokens -= 1
        return True

    async def take(self, priority: Priority) -> None:
        """Wait for a token; waiters are served by priority, then in arrival order."""
        if not self._waiters and self.try_take(priority):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (int(priority), next(self._order), future)
        heapq.heappush(self._waiters, entry)
        self._schedule()
        try:
            await future
        except asyncio.CancelledError:
            if entry in self._waiters:
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            elif future.done() and not future.cancelled():
                self.tokens += 1  # granted just as the caller gave up: give the token back
            self._schedule()
            raise

    def throttled(self, retry_after: float) -> None:
        """The platform said 429: pause every caller for ``retry_after`` and halve the refill rate."""
        self.throttles += 1
        self._refill()
        self.tokens = 0.0
        self.paused_until = max(self.paused_until, self.clock() + max(retry_after, 0.0))
        self.rate = max(self.rate / 2, self.tier.rate * SLOWEST_SHARE)
        self._successes = 0
        self._schedule()

    def succeeded(self) -> None:
        """A call went through: a slowed bucket recovers its documented rate gradually."""
        if self.rate >= self.tier.rate:
            return
        self._successes += 1
        if self._successes >= RECOVERY_CALLS:
            self._successes = 0
            self.rate = min(self.tier.rate, self.rate + self.tier.rate * 0.1)

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._grant()
        if not self._waiters:
            return
        self._refill()
        wait = max(self.paused_until - self.clock(), 0.0) + max(1 - self.tokens, 0.0) / self.rate
        self._timer = asyncio.get_running_loop().call_later(max(wait, 0.001), self._schedule)

    def _grant(self) -> None:
        self._refill()
        while self._waiters and self.clock() >= self.paused_until and self.tokens >= 1:
            _priority, _order, future = heapq.heappop(self._waiters)
            if not future.done():
                self.tokens -= 1
                future.set_result(None)


class PlatformBudget:
    """Every rate limit of one platform connection, shared by all its open replies (module docstring).

    ``tiers`` maps a method (or route) name to its documented limit; a name not in it is not limited here.
    ``share`` is this process's part of each limit (1.0 alone; 0.5 for one of two replicas on one workspace).
    """

    def __init__(
        self,
        tiers: Mapping[str, Tier],
        *,
        share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tiers = {name: Tier(tier.rate * share, max(1, int(tier.burst * share))) for name, tier in tiers.items()}
        self.clock = clock
        self.open_replies = 0
        self._buckets: dict[tuple[str, str], RateBucket] = {}

    def bucket(self, method: str, scope: str = "") -> RateBucket | None:
        """The bucket of ``method`` in ``scope`` (a workspace, a channel), None when ``method`` is not limited."""
        tier = self.tiers.get(method)
        if tier is None:
            return None
        key = (method, scope)
        if key not in self._buckets:
            self._buckets[key] = RateBucket(f"{method}@{scope}" if scope else method, tier, clock=self.clock)
        return self._buckets[key]

    def buckets(self) -> list[RateBucket]:
        """Every bucket used so far (for metrics)."""
        return list(self._buckets.values())

    @contextmanager
    def reply(self) -> Iterator[None]:
        """Count one open reply while the block runs (it stretches every reply's edit interval)."""
        self.open_replies += 1
        try:
            yield
        finally:
            self.open_replies -= 1

    def edit_interval(self, method: str, base: float) -> float:
        """How often one answer may be edited so that all open answers' edits fit ``method``'s spare rate."""
        tier = self.tiers.get(method)
        if tier is None or self.open_replies <= 1:
            return base
        return max(base, self.open_replies / tier.rate)

    def can_take(self, method: str, scope: str = "") -> bool:
        """Take a first-words token of ``method`` now if one is free (e.g. to open a native stream), else False."""
        bucket = self.bucket(method, scope)
        return bucket is None or bucket.try_take(Priority.FIRST)

    async def call(
        self,
        method: str,
        scope: str,
        priority: Priority,
        send: Callable[[], Awaitable[T]],
        *,
        retry_after: Callable[[Exception], float | None],
    ) -> T:
        """Make one platform call within the budget: wait for a token (an edit never waits: :class:`EditSkipped`),
        send, and on a 429 (``retry_after`` gives its seconds, None for any other error) slow the bucket and try
        again. Any other error goes up to the caller."""
        bucket = self.bucket(method, scope)
        for _ in range(MAX_THROTTLED_TRIES):
            if bucket is not None:
                if priority is Priority.EDIT:
                    if not bucket.try_take(priority):
                        raise EditSkipped(method)
                else:
                    await bucket.take(priority)
            try:
                result = await send()
            except Exception as e:
                wait = retry_after(e)
                if wait is None:
                    raise
                if bucket is not None:
                    bucket.throttled(wait)
                if priority is Priority.EDIT:
                    raise EditSkipped(method) from e
                if bucket is None:
                    await asyncio.sleep(wait)
                continue
            if bucket is not None:
                bucket.succeeded()
            return result
        raise Throttled(bucket.paused_until - self.clock() if bucket else 0.0)
