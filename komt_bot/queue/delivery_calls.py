"""The typed callers of the delivery scripts (``scripts/delivery_*.lua``), shaped like those of :mod:`.calls`.

A delivery record is an open reply (:class:`~komt_bot.jobs.DeliveryRecord`); its owner is the adapter process that
holds its lease, and every write is fenced by that owner. Leases are set and compared in Redis's clock (``TIME``
inside the scripts), so a caller passes a lease's length, never a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from komt_bot.jobs import DeliveryRecord
from komt_bot.queue.calls import NOT_ARGV, Arg, ScriptCall
from komt_bot.queue.keys import QueueKeys


@dataclass(frozen=True, slots=True)
class OpenDelivery(ScriptCall[bool]):
    """``delivery_open.lua``: open a reply's record (or refresh this owner's); False when another process holds it."""

    SCRIPT = "delivery_open"
    KEY_NAMES = ("record", "index")
    job_id: str
    platform: str
    bot: str
    owner: str
    lease_seconds: str
    place: str  # JSON
    messages: str  # JSON: a new record's (empty) messages
    ttl: int

    def keys(self, keys: QueueKeys) -> list[str]:
        return [keys.delivery(self.job_id), keys.deliveries(self.platform, self.bot)]

    def reply(self, raw: Any) -> bool:
        return bool(int(raw))


@dataclass(frozen=True, slots=True)
class SaveDelivery(ScriptCall[bool]):
    """``delivery_save.lua``: how far the reply has been written; False (nothing written) when not the owner's."""

    SCRIPT = "delivery_save"
    KEY_NAMES = ("record",)
    owner: str
    messages: str  # JSON
    shown_entry: str
    place: str  # JSON, or "" to leave it as it is
    job_id: str = field(metadata=NOT_ARGV)

    def keys(self, keys: QueueKeys) -> list[str]:
        return [keys.delivery(self.job_id)]

    def reply(self, raw: Any) -> bool:
        return bool(int(raw))


@dataclass(frozen=True, slots=True)
class RenewDeliveries(ScriptCall[set[str]]):
    """``delivery_renew.lua``: extend the leases this owner still holds; the reply is the ids it no longer holds."""

    SCRIPT = "delivery_renew"
    KEY_NAMES = ("index",)
    platform: str
    bot: str
    owner: str
    lease_seconds: str
    job_ids: tuple[str, ...] = field(metadata=NOT_ARGV)

    def keys(self, keys: QueueKeys) -> list[str]:
        return [keys.deliveries(self.platform, self.bot), *(keys.delivery(job_id) for job_id in self.job_ids)]

    def batch(self) -> list[Arg]:
        return list(self.job_ids)

    def reply(self, raw: Any) -> set[str]:
        return {self.job_ids[int(position) - 1] for position in raw or []}


@dataclass(frozen=True, slots=True)
class ClaimDeliveries(ScriptCall[list[DeliveryRecord]]):
    """``delivery_claim.lua``: take the candidates whose lease has lapsed; the reply is the records taken."""

    SCRIPT = "delivery_claim"
    KEY_NAMES = ("index",)
    owner: str
    lease_seconds: str
    ttl: int
    token: str  # unique per claim: a retry whose first try landed gets the same records back
    platform: str = field(metadata=NOT_ARGV)
    bot: str = field(metadata=NOT_ARGV)
    job_ids: tuple[str, ...] = field(metadata=NOT_ARGV)

    def keys(self, keys: QueueKeys) -> list[str]:
        return [keys.deliveries(self.platform, self.bot), *(keys.delivery(job_id) for job_id in self.job_ids)]

    def batch(self) -> list[Arg]:
        return list(self.job_ids)

    def reply(self, raw: Any) -> list[DeliveryRecord]:
        records = []
        for job_id, *flat in raw or []:
            fields = {str(k): str(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
            records.append(DeliveryRecord.from_hash(str(job_id), fields))
        return records


@dataclass(frozen=True, slots=True)
class ReleaseDeliveries(ScriptCall[int]):
    """``delivery_release.lua``: hand over the deliveries this owner holds (each ``(job id, its bot's index)``)."""

    SCRIPT = "delivery_release"
    owner: str
    held: tuple[tuple[str, str], ...] = field(metadata=NOT_ARGV)

    def keys(self, keys: QueueKeys) -> list[str]:
        return [key for job_id, index in self.held for key in (keys.delivery(job_id), index)]

    def batch(self) -> list[Arg]:
        return [job_id for job_id, _index in self.held]

    def reply(self, raw: Any) -> int:
        return int(raw)


@dataclass(frozen=True, slots=True)
class EndDelivery(ScriptCall[bool]):
    """``delivery_end.lua``: remove a finished reply's record; False when another process holds it."""

    SCRIPT = "delivery_end"
    KEY_NAMES = ("record", "index")
    job_id: str
    owner: str
    platform: str
    bot: str

    def keys(self, keys: QueueKeys) -> list[str]:
        return [keys.delivery(self.job_id), keys.deliveries(self.platform, self.bot)]

    def reply(self, raw: Any) -> bool:
        return bool(int(raw))


def lease_text(seconds: float) -> str:
    """A lease's length as the scripts take it (never negative)."""
    return f"{max(0.0, seconds):.3f}"
