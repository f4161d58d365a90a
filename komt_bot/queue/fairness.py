"""Fair share at the queue: the callers of ``claim.lua`` and ``position.lua``, and the wait estimate.

Queued jobs wait in one line per person; a claim takes the next job of the person served least recently
(round-robin), within a person first come first served, and only then makes the job's stream entry, so everything
after a claim (heartbeats, takeovers, hand-backs, fencing) is the stream protocol of :mod:`.working`. The keys and
the order are described in ``scripts/_common.lua`` and docs/ARCHITECTURE.md ("Fair order").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from komt_bot.queue.calls import ScriptCall
from komt_bot.queue.keys import QueueKeys

ESTIMATE_SAMPLE = 20  # recent completions the wait estimate is taken from
ESTIMATE_WINDOW_SECONDS = 600  # ... when they are this recent


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim took: its entries ``(entry id, job id)``, and the wake stream's id to block past when none."""

    wake_id: str
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Claim(ScriptCall[Claimed]):
    """``claim.lua``: take up to ``count`` new jobs in the fair order, each delivered to ``consumer``."""

    SCRIPT = "claim"
    KEY_NAMES = ("jobs", *QueueKeys("").fair())
    consumer: str
    count: int
    max_running: int  # one person's jobs taken at once while others wait; 0: no cap

    def keys(self, keys: QueueKeys) -> list[str]:
        return [keys.jobs, *keys.fair().values()]

    def reply(self, raw: Any) -> Claimed:
        values = [str(value) for value in raw]
        pairs = zip(values[1::2], values[2::2], strict=True)
        return Claimed(values[0], tuple(pairs))


@dataclass(frozen=True, slots=True)
class Position(ScriptCall[int | None]):
    """``position.lua``: how many jobs start before a waiting one in the fair order (None: not waiting)."""

    SCRIPT = "position"
    KEY_NAMES = ("waiting", *QueueKeys("").fair())
    job_id: str

    def keys(self, keys: QueueKeys) -> list[str]:
        return [keys.waiting, *keys.fair().values()]

    def reply(self, raw: Any) -> int | None:
        ahead = int(raw)
        return None if ahead < 0 else ahead


def wait_estimate(ahead: int, finished: list[float], *, now: float) -> float | None:
    """Seconds until a job with ``ahead`` jobs before it starts, from the times of recent completions.

    Every start past the free slots waits for one completion, so the wait is ``ahead + 1`` of the recent mean gaps
    between completions. None without two completions in the last ``ESTIMATE_WINDOW_SECONDS``.
    """
    recent = sorted(t for t in finished if now - t <= ESTIMATE_WINDOW_SECONDS)[-ESTIMATE_SAMPLE:]
    if len(recent) < 2 or recent[-1] <= recent[0]:
        return None
    gap = (recent[-1] - recent[0]) / (len(recent) - 1)
    return (ahead + 1) * gap


async def fair_order(redis: aioredis.Redis, keys: QueueKeys, limit: int) -> list[str]:
    """The first ``limit`` waiting jobs in the order they will start: the requeued ones, then one job of each
    person's line per round, people in the order claims take them (a served person goes to the back of the round, so
    every round keeps that order). Per-person caps and later arrivals are not foreseen, as in ``position.lua``."""
    order = [str(job_id) for job_id in await redis.zrange(keys.fair_head, 0, limit - 1)]
    people = [str(person) for person in await redis.zrange(keys.fair_people, 0, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for person in people:
            pipe.lrange(keys.fair_line(person), 0, limit - 1)
        lines = cast(list[list[str]], await pipe.execute())
    for place in range(limit):
        round_ = [line[place] for line in lines if place < len(line)]
        if not round_ or len(order) >= limit:
            break
        order += round_
    return order[:limit]
