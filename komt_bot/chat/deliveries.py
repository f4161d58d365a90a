"""Telling a platform's first delivery of an event from its redeliveries.

Redis holds the mark every adapter replica shares (:meth:`komt_bot.queue.JobQueue.first_delivery`); this process
also remembers the keys it has seen, so a redelivery that arrives while Redis is away (or while the first delivery
still waits for it) is recognised at once and never answered twice.
"""

from __future__ import annotations

from collections import OrderedDict

from komt_bot.queue import JobQueue

REMEMBERED_KEYS = 10_000


class Deliveries:
    """First-delivery checks for one platform."""

    def __init__(self, queue: JobQueue, platform: str, *, capacity: int = REMEMBERED_KEYS) -> None:
        self.queue = queue
        self.platform = platform
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def first(self, event_key: str) -> bool:
        """True for the first delivery of ``event_key``. Raises QueueError when Redis stays away (outage window)."""
        if event_key in self._seen:
            self._seen.move_to_end(event_key)
            return False
        self._seen[event_key] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return await self.queue.first_delivery(self.platform, event_key)
