"""Delivery records on the real Redis: an open reply is held under a lease by one adapter process, fenced by that
owner, claimed by another once the lease lapses (or at once when handed over), and shown by ``queue status``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from komt_bot.jobs import DeliveryRecord
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.queue.delivery_calls import ClaimDeliveries, lease_text
from komt_bot.settings import Settings
from tests.conftest import REDIS_URL
from tests.helpers import eventually
from tests.test_admin import Cli, make_cli

BOT = "T1/A1"
PLACE = {"channel": "C42", "thread": "1700000000.000100", "user": "U1", "team": "T1"}
MESSAGES = [{"ts": "1700000000.000200", "text": "제주도는 봄에 가장 아름답습니다", "kind": "answer"}]
SHORT = 0.3  # a lease that lapses within the test


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> JobQueue:
    return JobQueue(redis_client, settings.queue)


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[JobQueue]:
    """The same deployment seen from a second adapter process (a client of its own)."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield JobQueue(client, settings.queue)
    await client.aclose()


async def open_reply(queue: JobQueue, job_id: str = "job1", *, owner: str = "slack-a", lease: float = 60.0) -> None:
    await queue.open_delivery(job_id, platform="slack", bot=BOT, owner=owner, place=PLACE, lease_seconds=lease)


async def claim(queue: JobQueue, owner: str = "slack-b", *, limit: int = 50) -> list[DeliveryRecord]:
    return await queue.claim_deliveries("slack", BOT, owner, lease_seconds=60.0, limit=limit)


async def claimed_once(queue: JobQueue, owner: str = "slack-b") -> list[DeliveryRecord]:
    """A claim that waits for a lapsing lease: the records it took, once it took any."""
    taken: list[DeliveryRecord] = []

    async def took() -> bool:
        taken.extend(await claim(queue, owner))
        return bool(taken)

    await eventually(took)
    return taken


async def index_size(queue: JobQueue) -> int:
    return int(await queue.redis.zcard(queue.keys.deliveries("slack", BOT)))


async def test_a_reply_is_opened_saved_and_resumed_by_another_process_once_its_lease_lapses(
    queue: JobQueue, other: JobQueue, settings: Settings
) -> None:
    await open_reply(queue, lease=SHORT)
    assert await queue.save_delivery("job1", owner="slack-a", messages=MESSAGES, shown_entry="1700-5")
    assert await claim(other) == []  # the lease still runs
    before = time.time()
    [record] = await claimed_once(other)
    assert (record.job_id, record.platform, record.bot, record.owner) == ("job1", "slack", BOT, "slack-b")
    assert (record.place, record.messages, record.shown_entry) == (PLACE, MESSAGES, "1700-5")
    assert record.lease_until > before + 50
    assert before - 5 < record.created <= record.lease_until
    assert await claim(queue, "slack-c") == []  # taken: its new lease runs
    ttl = await queue.redis.ttl(queue.keys.delivery("job1"))
    assert settings.queue.job_ttl_seconds < ttl <= settings.queue.job_ttl_seconds + settings.queue.job_timeout_seconds


async def test_an_owner_whose_reply_was_taken_over_writes_nothing(queue: JobQueue, other: JobQueue) -> None:
    await open_reply(queue, lease=SHORT)
    await claimed_once(other)
    assert not await queue.save_delivery("job1", owner="slack-a", messages=[{"text": "늦은 글"}], shown_entry="9-9")
    record = await queue.delivery("job1")
    assert record is not None
    assert (record.owner, record.messages, record.shown_entry) == ("slack-b", [], "")
    assert await queue.renew_deliveries("slack", BOT, "slack-a", ["job1"], 60.0) == {"job1"}
    await queue.end_delivery("job1", owner="slack-a")  # another process holds it: left alone
    await open_reply(queue, owner="slack-a")  # nor does opening it again take it back
    assert (await queue.delivery("job1") or record).owner == "slack-b"
    assert await other.save_delivery("job1", owner="slack-b", messages=MESSAGES, shown_entry="9-9")
    await other.end_delivery("job1", owner="slack-b")
    await other.end_delivery("job1", owner="slack-b")  # a retry
    assert await queue.delivery("job1") is None
    assert await index_size(queue) == 0
    assert not await other.save_delivery("job1", owner="slack-b", messages=MESSAGES, shown_entry="9-9")


async def test_a_save_can_move_the_reply_to_a_new_place(queue: JobQueue) -> None:
    await open_reply(queue)
    moved = {**PLACE, "stream": "1700000000.000300"}
    assert await queue.save_delivery("job1", owner="slack-a", messages=MESSAGES, shown_entry="7-0", place=moved)
    record = await queue.delivery("job1")
    assert record is not None and (record.place, record.messages, record.shown_entry) == (moved, MESSAGES, "7-0")


async def test_opening_again_refreshes_the_owners_record_and_keeps_its_progress(queue: JobQueue) -> None:
    await open_reply(queue, lease=SHORT)
    assert await queue.save_delivery("job1", owner="slack-a", messages=MESSAGES, shown_entry="5-0")
    await queue.open_delivery(
        "job1", platform="slack", bot=BOT, owner="slack-a", place={**PLACE, "ts": "1"}, lease_seconds=60.0
    )
    record = await queue.delivery("job1")
    assert record is not None
    assert (record.place, record.messages, record.shown_entry) == ({**PLACE, "ts": "1"}, MESSAGES, "5-0")
    assert record.lease_until > time.time() + 50


async def test_renewing_keeps_a_lease_and_names_the_replies_no_longer_held(queue: JobQueue, other: JobQueue) -> None:
    await open_reply(queue, "job1", lease=SHORT)
    await open_reply(queue, "job2", lease=SHORT)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert await queue.renew_deliveries("slack", BOT, "slack-a", ["job1", "job2"], SHORT) == set()
        assert await claim(other) == []
        await asyncio.sleep(SHORT / 4)
    assert await queue.renew_deliveries("slack", BOT, "slack-a", ["job1", "gone"], 60.0) == {"gone"}
    assert await queue.renew_deliveries("slack", BOT, "slack-a", [], 60.0) == set()
    [record] = await claimed_once(other)  # job2's lease was not renewed the last time
    assert record.job_id == "job2"


async def test_a_release_hands_the_reply_over_at_once(queue: JobQueue, other: JobQueue) -> None:
    await open_reply(queue, "job1")
    await open_reply(queue, "job2")
    await queue.release_deliveries("slack-x", ["job1"])  # not its owner: nothing changes
    assert await claim(other) == []
    await queue.release_deliveries("slack-a", ["job1", "job2", "never-opened"])
    await queue.release_deliveries("slack-a", ["job1", "job2"])  # a retry
    released = await queue.delivery("job1")
    assert released is not None and released.owner == ""
    assert not await queue.save_delivery("job1", owner="slack-a", messages=MESSAGES, shown_entry="1-0")
    taken = await claim(other)
    assert sorted(r.job_id for r in taken) == ["job1", "job2"]
    assert {r.owner for r in taken} == {"slack-b"}


async def test_two_claimers_never_take_one_reply_twice(queue: JobQueue, other: JobQueue) -> None:
    job_ids = [f"job{n}" for n in range(40)]
    for job_id in job_ids:
        await open_reply(queue, job_id, lease=0.0)
    taken: dict[str, list[str]] = {"slack-b": [], "slack-c": []}

    async def keep_claiming(process: JobQueue, owner: str) -> None:
        for _ in range(20):
            taken[owner] += [r.job_id for r in await claim(process, owner, limit=3)]

    await asyncio.gather(keep_claiming(queue, "slack-b"), keep_claiming(other, "slack-c"))
    everything = taken["slack-b"] + taken["slack-c"]
    assert sorted(everything) == sorted(job_ids)  # each reply taken exactly once, whichever claimer ran first


async def test_a_claim_retried_after_its_reply_was_lost_gets_the_same_replies(queue: JobQueue) -> None:
    await open_reply(queue, "job1", lease=0.0)
    call = ClaimDeliveries(
        owner="slack-b",
        lease_seconds=lease_text(60),
        ttl=queue.delivery_ttl,
        token="t1",
        platform="slack",
        bot=BOT,
        job_ids=("job1",),
    )
    first = await queue.scripts.run(call)
    assert [r.job_id for r in first] == ["job1"]
    assert await queue.scripts.run(call) == first


async def test_index_entries_of_expired_replies_are_dropped_by_a_claim(queue: JobQueue) -> None:
    await open_reply(queue, "job1", lease=0.0)
    await open_reply(queue, "job2", lease=0.0)
    await queue.redis.delete(queue.keys.delivery("job1"))  # as when it expires with its job
    taken = await queue.claim_deliveries("slack", BOT, "slack-b", lease_seconds=0.0)
    assert [r.job_id for r in taken] == ["job2"]
    assert await queue.redis.zrange(queue.keys.deliveries("slack", BOT), 0, -1) == ["job2"]
    await queue.redis.delete(queue.keys.delivery("job2"))
    assert await claim(queue) == []
    assert await index_size(queue) == 0


async def test_a_platform_name_with_a_colon_or_no_owner_is_refused(queue: JobQueue) -> None:
    with pytest.raises(ValueError):
        await queue.open_delivery("j", platform="slack:x", bot=BOT, owner="a", place={}, lease_seconds=1)
    with pytest.raises(ValueError):
        await queue.open_delivery("j", platform="slack", bot=BOT, owner="", place={}, lease_seconds=1)


async def test_counts_show_who_holds_each_reply_and_those_waiting_for_an_owner(queue: JobQueue) -> None:
    assert (await queue.delivery_counts()).bots == []
    await open_reply(queue, "job1", owner="slack-a")
    await open_reply(queue, "job2", owner="slack-a")
    await open_reply(queue, "job3", owner="slack-b")
    await open_reply(queue, "job4", owner="slack-b", lease=0.0)
    await queue.open_delivery("d1", platform="discord", bot="99", owner="discord-a", place={}, lease_seconds=60)
    await queue.open_delivery("gone", platform="discord", bot="99", owner="discord-a", place={}, lease_seconds=0)
    await queue.redis.delete(queue.keys.delivery("gone"))
    counts = await queue.delivery_counts()
    assert [(b.platform, b.bot) for b in counts.bots] == [("discord", "99"), ("slack", BOT)]
    discord, slack = counts.bots
    assert (discord.owners, discord.orphaned, discord.oldest_lapse_seconds) == ({"discord-a": 1}, 0, None)
    assert (slack.owners, slack.orphaned, slack.open) == ({"slack-a": 2, "slack-b": 1}, 1, 4)
    assert slack.oldest_lapse_seconds is not None and 0 <= slack.oldest_lapse_seconds < 5
    assert (counts.open, counts.orphaned) == (5, 1)
    assert counts.of_platform("discord").orphaned == 0


async def test_queue_status_shows_open_replies_per_adapter_and_those_waiting(
    queue: JobQueue, settings: Settings
) -> None:
    cli: Cli = make_cli(settings)
    quiet = await cli.json("queue", "status")
    assert quiet["deliveries"] == {"open": 0, "orphaned": 0, "oldest_lapse_seconds": None, "bots": []}
    assert "open replies" not in (await cli.ok("queue", "status")).stdout
    await open_reply(queue, "job1", owner="slack-a")
    await open_reply(queue, "job2", owner="slack-a", lease=0.0)
    data = (await cli.json("queue", "status"))["deliveries"]
    assert (data["open"], data["orphaned"]) == (2, 1)
    [bot] = data["bots"]
    assert (bot["platform"], bot["bot"], bot["owners"]) == ("slack", BOT, {"slack-a": 1})
    assert (bot["orphaned"], bot["open"]) == (1, 2)
    table = (await cli.ok("queue", "status")).stdout
    assert "open replies" in table
    assert "slack-a" in table and BOT in table
    assert "WAITING for an adapter" in table


def test_resumed_and_handed_over_replies_are_counted_per_platform() -> None:
    metrics = Metrics()
    metrics.replies_resumed.labels("slack").inc()
    metrics.replies_handed_over.labels("discord").inc(2)
    sample = metrics.registry.get_sample_value
    assert sample("komt_replies_resumed_total", {"platform": "slack"}) == 1
    assert sample("komt_replies_handed_over_total", {"platform": "discord"}) == 2
