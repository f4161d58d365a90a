"""Delivery records: every open reply lives in Redis, so another adapter process can finish it.

A record (``{p}:delivery:{id}``, :class:`~komt_bot.jobs.DeliveryRecord`) says where a reply is and how far it has
been written; one adapter process, its *owner*, holds it under a lease it renews with its heartbeat. Each bot's
records are indexed by lease expiry (``{p}:deliveries:{platform}:{bot}``), so a claim finds the lapsed ones in
O(log n), as ``XAUTOCLAIM`` finds a silent worker's entries. Every write is a script that checks the owner first
(:mod:`.delivery_calls`): a process whose reply was taken over writes nothing. Leases run on Redis's clock.

A record expires ``job_ttl_seconds + job_timeout_seconds`` after it was opened or last claimed: a job's own record
expires ``job_ttl_seconds`` after it ends, and no adapter waits longer than ``job_timeout_seconds`` for it to end.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from typing import Any, cast

from komt_bot.jobs import DeliveryRecord
from komt_bot.queue.base import QueueBase
from komt_bot.queue.delivery_calls import (
    ClaimDeliveries,
    EndDelivery,
    OpenDelivery,
    ReleaseDeliveries,
    RenewDeliveries,
    SaveDelivery,
    lease_text,
)
from komt_bot.queue.views import BotDeliveries, DeliveryCounts

EMPTY_MESSAGES = "[]"
NO_PLACE = ""  # a save that leaves the place as it is


def _seconds(reply: Any) -> float:
    """Redis ``TIME`` (seconds, microseconds) as one number."""
    whole, micro = reply
    return int(whole) + int(micro) / 1_000_000


def _check(platform: str, owner: str) -> None:
    if not platform or ":" in platform:
        raise ValueError(f"a platform name is a word without ':', not {platform!r}")
    if not owner:
        raise ValueError("a delivery's owner is never empty")


class DeliveryOps(QueueBase):
    """Open, save, renew, claim, release and end replies' delivery records; read their counts.

    Every method rides out a Redis outage and raises :class:`~komt_bot.errors.QueueError` past ``outage_seconds``;
    every write is safe to repeat.
    """

    @property
    def delivery_ttl(self) -> int:
        """Seconds a delivery record lives after it was opened or last claimed."""
        return self.settings.job_ttl_seconds + math.ceil(self.settings.job_timeout_seconds)

    async def open_delivery(
        self, job_id: str, *, platform: str, bot: str, owner: str, place: dict[str, Any], lease_seconds: float
    ) -> None:
        """Open the reply's record held by ``owner`` (or refresh its place and lease when ``owner`` holds it).

        A record another process holds, or one released for a successor, is left alone.
        """
        _check(platform, owner)
        call = OpenDelivery(
            job_id=job_id,
            platform=platform,
            bot=bot,
            owner=owner,
            lease_seconds=lease_text(lease_seconds),
            place=json.dumps(place, ensure_ascii=False),
            messages=EMPTY_MESSAGES,
            ttl=self.delivery_ttl,
        )
        await self._ride(lambda: self.scripts.run(call), "open the reply's delivery record")

    async def save_delivery(
        self,
        job_id: str,
        *,
        owner: str,
        messages: list[dict[str, Any]],
        shown_entry: str,
        place: dict[str, Any] | None = None,
    ) -> bool:
        """Record the reply's messages, the last output entry it shows and (when given) its changed place. False,
        with nothing written, when ``owner`` no longer holds it (taken over, released or ended) or it is gone."""
        call = SaveDelivery(
            owner=owner,
            messages=json.dumps(messages, ensure_ascii=False),
            shown_entry=shown_entry,
            place=NO_PLACE if place is None else json.dumps(place, ensure_ascii=False),
            job_id=job_id,
        )
        return await self._ride(lambda: self.scripts.run(call), "save the reply's progress")

    async def renew_deliveries(
        self, platform: str, bot: str, owner: str, job_ids: Sequence[str], lease_seconds: float
    ) -> set[str]:
        """Extend the lease of those of ``job_ids`` ``owner`` still holds (one script call); returns the ids it
        does not hold any more, which it must stop writing at once."""
        if not job_ids:
            return set()
        call = RenewDeliveries(
            platform=platform, bot=bot, owner=owner, lease_seconds=lease_text(lease_seconds), job_ids=tuple(job_ids)
        )
        return await self._ride(lambda: self.scripts.run(call), "renew the replies' leases")

    async def claim_deliveries(
        self, platform: str, bot: str, owner: str, *, lease_seconds: float, limit: int = 50
    ) -> list[DeliveryRecord]:
        """Take up to ``limit`` of this bot's replies whose lease has lapsed, oldest lapse first, under a new lease.

        Atomic: two processes claiming at once never take one record twice. Index entries whose record expired are
        dropped on the way. A process's own lapsed records are returned too (an owner id may outlive a restart): a
        caller skips those it still serves.
        """
        _check(platform, owner)
        if limit <= 0:
            return []
        index = self.keys.deliveries(platform, bot)

        async def lapsed() -> list[str]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.zrange(index, 0, limit - 1, withscores=True)
                now, entries = await pipe.execute()
            return [str(job_id) for job_id, score in entries if float(score) <= _seconds(now)]

        candidates = await self._ride(lapsed, "read the replies waiting for an owner")
        if not candidates:
            return []
        call = ClaimDeliveries(
            owner=owner,
            lease_seconds=lease_text(lease_seconds),
            ttl=self.delivery_ttl,
            token=uuid.uuid4().hex,
            platform=platform,
            bot=bot,
            job_ids=tuple(candidates),
        )
        return await self._ride(lambda: self.scripts.run(call), "claim the replies waiting for an owner")

    async def release_deliveries(self, owner: str, job_ids: Sequence[str]) -> None:
        """Hand these replies over (a deploy): the lease of each one ``owner`` still holds lapses now, so the next
        claim of any process takes it at once."""
        homes = await self._homes(job_ids)
        held = tuple((job_id, self.keys.deliveries(*home)) for job_id, home in homes.items())
        if held:
            call = ReleaseDeliveries(owner=owner, held=held)
            await self._ride(lambda: self.scripts.run(call), "hand the replies over")

    async def end_delivery(self, job_id: str, *, owner: str) -> None:
        """The reply is finished (or stopped): its record and index entry are removed, unless another process
        holds it (then it is left alone)."""
        home = (await self._homes([job_id])).get(job_id)
        if home is None:
            return  # gone already; a stray index entry is dropped by the next claim
        call = EndDelivery(job_id=job_id, owner=owner, platform=home[0], bot=home[1])
        await self._ride(lambda: self.scripts.run(call), "end the reply's delivery record")

    async def delivery(self, job_id: str) -> DeliveryRecord | None:
        """The reply's record as it is now, None when there is none (ended, expired or never opened)."""
        key = self.keys.delivery(job_id)
        fields = await self._ride(lambda: self.redis.hgetall(key), "read the reply's delivery record")
        return DeliveryRecord.from_hash(job_id, cast(dict[str, str], fields)) if fields else None

    async def _homes(self, job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``(platform, bot)`` of each of these records that exists (a record's never changes)."""
        if not job_ids:
            return {}

        async def read() -> list[list[str | None]]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hmget(self.keys.delivery(job_id), ["platform", "bot"])
                return cast(list[list[str | None]], await pipe.execute())

        replies = await self._ride(read, "read the replies' delivery records")
        return {
            job_id: (str(platform), str(bot))
            for job_id, (platform, bot) in zip(job_ids, replies, strict=True)
            if platform is not None and bot is not None
        }

    async def delivery_counts(self) -> DeliveryCounts:
        """Every bot's open replies: how many each adapter process holds, and how many wait for an owner (lease
        lapsed) with the longest wait past its lease."""
        indexes = await self._ride(self._delivery_indexes, "list the delivery indexes")
        if not indexes:
            return DeliveryCounts()

        async def read() -> tuple[float, list[list[tuple[str, float]]]]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.time()
                for index in indexes:
                    pipe.zrange(index, 0, -1, withscores=True)
                now, *entries = await pipe.execute()
            return _seconds(now), [[(str(job_id), float(score)) for job_id, score in e] for e in entries]

        now, entries = await self._ride(read, "read the delivery indexes")
        owners = await self._owners([job_id for bot in entries for job_id, _score in bot])
        bots = [
            _count(*self.keys.parse_deliveries(index), bot, owners, now)
            for index, bot in zip(indexes, entries, strict=True)
        ]
        return DeliveryCounts([bot for bot in bots if bot.open])

    async def _delivery_indexes(self) -> list[str]:
        pattern = self.keys.deliveries_pattern()
        return sorted([str(key) async for key in self.redis.scan_iter(match=pattern, count=200)])

    async def _owners(self, job_ids: list[str]) -> dict[str, str]:
        """The owner of each of these records that exists."""

        async def read() -> list[str | None]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(self.keys.delivery(job_id), "owner")
                return cast(list[str | None], await pipe.execute())

        replies = await self._ride(read, "read the replies' owners") if job_ids else []
        return {job_id: str(owner) for job_id, owner in zip(job_ids, replies, strict=True) if owner is not None}


def _count(
    platform: str, bot: str, entries: list[tuple[str, float]], owners: dict[str, str], now: float
) -> BotDeliveries:
    """One bot's counts; index entries whose record is gone are not replies."""
    held: dict[str, int] = {}
    lapses: list[float] = []
    for job_id, lease_until in entries:
        owner = owners.get(job_id)
        if owner is None:
            continue
        if owner and lease_until > now:
            held[owner] = held.get(owner, 0) + 1
        else:
            lapses.append(round(max(0.0, now - lease_until), 3))
    return BotDeliveries(platform, bot, dict(sorted(held.items())), len(lapses), max(lapses, default=None))
