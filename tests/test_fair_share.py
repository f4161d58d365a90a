"""Fair share at the queue, against the real Redis: round-robin order across people, positions that follow it,
requeued jobs first, concurrent claims, the per-person cap and the wait estimate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from komt_bot import messages
from komt_bot.jobs import ClaimedJob, JobRequest, Origin, Turn
from komt_bot.queue import JobQueue
from komt_bot.queue.fairness import wait_estimate
from komt_bot.queue.inspect import QueueAdmin
from komt_bot.settings import Settings
from tests.conftest import REDIS_URL
from tests.fake_engine import ScriptedEngine
from tests.helpers import collect_events, eventually, running_worker


def asked_by(user: str | None, text: str = "질문") -> JobRequest:
    return JobRequest(conversation=[Turn(role="user", text=text)], origin=Origin(platform="test", user=user))


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[JobQueue]:
    # No takeovers in the middle of a test: an entry claimed here is never heartbeated.
    q = JobQueue(redis_client, settings.queue.model_copy(update={"claim_idle_seconds": 60.0}))
    await q.ensure_group()
    yield q


async def submit_all(queue: JobQueue, plan: list[str]) -> list[str]:
    """Submit one job per name in ``plan`` (the person asking; "-" for nobody); the job ids, in order."""
    return [
        (await queue.submit(asked_by(None if user == "-" else user, f"{user}{i}"))).job_id
        for i, user in enumerate(plan)
    ]


async def claim_one(queue: JobQueue, consumer: str = "w1") -> ClaimedJob:
    [job] = await queue.claim(consumer, 1, block_seconds=0.1)
    return job


async def done(queue: JobQueue, job: ClaimedJob) -> None:
    assert await queue.finish(job, state="done", finish_reason="stop", usage={})


async def test_jobs_run_round_robin_across_people_and_positions_follow_it(queue: JobQueue) -> None:
    ids = await submit_all(queue, ["A", "A", "B", "A", "C", "B", "A"])
    a1, a2, b1, a3, c1, b2, a4 = ids
    fair_order = [a1, b1, c1, a2, b2, a3, a4]
    assert [await queue.position(job_id) for job_id in fair_order] == list(range(7))
    taken = [(await claim_one(queue)).job_id for _ in ids]
    assert taken == fair_order
    assert await queue.claim("w1", 1, block_seconds=0.1) == []


async def test_queue_jobs_lists_the_waiting_jobs_in_the_order_they_will_start(queue: JobQueue) -> None:
    a1, a2, b1, a3, c1, b2, a4 = await submit_all(queue, ["A", "A", "B", "A", "C", "B", "A"])
    first = await claim_one(queue)
    assert await queue.requeue(first)
    listed = [job.job_id for job in await QueueAdmin(queue).jobs(state="queued", limit=20)]
    assert listed == [a1, b1, c1, a2, b2, a3, a4]
    assert [job.job_id for job in await QueueAdmin(queue).jobs(state="queued", limit=3)] == [a1, b1, c1]


async def test_a_person_served_long_ago_goes_before_one_served_just_now(queue: JobQueue) -> None:
    await submit_all(queue, ["B"])
    await done(queue, await claim_one(queue))
    heavy = await submit_all(queue, ["H"] * 3)
    await claim_one(queue)  # H served after B
    [b2] = await submit_all(queue, ["B"])
    assert await queue.position(b2) == 0
    assert (await claim_one(queue)).job_id == b2
    assert [(await claim_one(queue)).job_id for _ in range(2)] == heavy[1:]


async def test_jobs_without_a_person_share_one_place_in_the_round(queue: JobQueue) -> None:
    ids = await submit_all(queue, ["-", "-", "A"])
    assert [(await claim_one(queue)).job_id for _ in ids] == [ids[0], ids[2], ids[1]]


async def test_requeued_jobs_go_before_every_new_one(queue: JobQueue) -> None:
    [x] = await submit_all(queue, ["A"])
    job = await claim_one(queue)
    later = await submit_all(queue, ["B", "C"])
    assert await queue.requeue(job)
    assert await queue.position(x) == 0
    assert [await queue.position(job_id) for job_id in later] == [1, 2]
    again = await claim_one(queue, "w2")
    assert (again.job_id, again.attempt) == (x, 2)


async def test_a_cancelled_job_leaves_its_line(queue: JobQueue) -> None:
    a1, a2, b1 = await submit_all(queue, ["A", "A", "B"])
    assert await queue.cancel(a1) == "queued"
    assert [await queue.position(job_id) for job_id in (a2, b1)] == [0, 1]
    assert [(await claim_one(queue)).job_id for _ in range(2)] == [a2, b1]


async def test_two_workers_claiming_at_once_never_take_one_job_twice(queue: JobQueue) -> None:
    ids = await submit_all(queue, [person for _ in range(12) for person in "ABCD"])
    other_client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    other = JobQueue(other_client, queue.settings)

    async def drain(q: JobQueue, consumer: str) -> list[str]:
        taken: list[str] = []
        while claimed := await q.claim(consumer, 3, block_seconds=0.05):
            taken += [job.job_id for job in claimed]
        return taken

    try:
        first, second = await asyncio.gather(drain(queue, "w1"), drain(other, "w2"))
    finally:
        await other_client.aclose()
    assert sorted(first + second) == sorted(ids)
    assert first and second


async def test_the_per_person_cap_passes_over_a_person_only_while_others_wait(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    capped = settings.queue.model_copy(update={"claim_idle_seconds": 60.0, "max_running_per_person": 1})
    queue = JobQueue(redis_client, capped)
    await queue.ensure_group()
    h1, h2 = await submit_all(queue, ["H", "H"])
    l1, l2, l3 = await submit_all(queue, ["L", "L", "L"])
    first = await claim_one(queue)
    assert first.job_id == h1
    second = await claim_one(queue)
    assert second.job_id == l1
    await done(queue, second)
    # H is next in the round, but at its cap while L waits: L goes first.
    third = await claim_one(queue)
    assert third.job_id == l2
    await done(queue, first)
    assert (await claim_one(queue)).job_id == h2
    # Both at their cap and only L waits: the slot is not left idle.
    assert (await claim_one(queue)).job_id == l3


async def test_one_person_alone_fills_every_slot(redis_client: aioredis.Redis, settings: Settings) -> None:
    capped = settings.queue.model_copy(update={"claim_idle_seconds": 60.0, "max_running_per_person": 1})
    queue = JobQueue(redis_client, capped)
    await queue.ensure_group()
    ids = await submit_all(queue, ["H"] * 4)
    assert [job.job_id for job in await queue.claim("w1", 4, block_seconds=0.1)] == ids


async def test_a_blocked_claim_wakes_when_a_job_is_queued(queue: JobQueue) -> None:
    claim = asyncio.ensure_future(queue.claim("w1", 2, block_seconds=5.0))
    await asyncio.sleep(0.2)
    [job_id] = await submit_all(queue, ["A"])
    async with asyncio.timeout(2):
        claimed = await claim
    assert [job.job_id for job in claimed] == [job_id]


async def test_the_wait_estimate_comes_from_recent_completions(queue: JobQueue) -> None:
    now = queue.clock()
    assert await queue.wait_estimate(3) is None
    await queue.redis.zadd(queue.keys.recent("done"), {f"j{i}": now - 10 + 2 * i for i in range(6)})
    assert await queue.wait_estimate(3) == pytest.approx(8.0)
    assert await queue.wait_estimate(0) is None


async def started_at(queue: JobQueue, job_id: str) -> float:
    started = (await queue.job(job_id)).started
    assert started is not None
    return started


async def test_a_burst_of_one_person_does_not_hold_back_the_others(queue: JobQueue, settings: Settings) -> None:
    heavy = await submit_all(queue, ["H"] * 12)
    light = await submit_all(queue, ["L1", "L2", "L3"])
    async with running_worker(queue, ScriptedEngine("가" * 20, delay=0.02, capacity=2), settings):
        for job_id in heavy + light:
            await collect_events(queue, job_id)
    third_heavy = sorted([await started_at(queue, job_id) for job_id in heavy])[2]
    assert all([await started_at(queue, job_id) < third_heavy for job_id in light])


async def test_the_estimate_is_within_a_factor_of_two_of_the_wait_on_a_steady_load(
    queue: JobQueue, settings: Settings
) -> None:
    ids = await submit_all(queue, ["A", "B"] * 8)
    last = ids[-1]
    async with running_worker(queue, ScriptedEngine("가" * 32, delay=0.05, capacity=2), settings):
        finished = queue.keys.recent("done")

        async def six_answered() -> bool:
            return int(await queue.redis.zcard(finished)) >= 6

        await eventually(six_answered)
        asked = queue.clock()
        ahead = await queue.position(last)
        estimate = await queue.wait_estimate(ahead)
        await collect_events(queue, last)
    waited = await started_at(queue, last) - asked
    assert ahead and estimate is not None
    assert waited / 2 <= estimate <= waited * 2, (ahead, estimate, waited)


def test_the_estimate_is_the_mean_gap_between_completions_per_job_to_start() -> None:
    assert wait_estimate(2, [100.0, 103.0, 106.0], now=107.0) == pytest.approx(9.0)
    assert wait_estimate(2, [100.0], now=101.0) is None
    assert wait_estimate(2, [100.0, 103.0], now=1000.0) is None  # stale


def test_the_waiting_message_shows_the_estimate() -> None:
    assert messages.queued(3, 21.6) == "⏳ 대기 중 — 앞에 3개 · 약 20초 / queued, 3 ahead · about 20 s"
    assert messages.queued(30, 600) == "⏳ 대기 중 — 앞에 30개 · 약 10분 / queued, 30 ahead · about 10 min"
    assert messages.queued(1, 3.4) == "⏳ 대기 중 — 앞에 1개 · 약 3초 / queued, 1 ahead · about 3 s"
    assert messages.queued(3) == "⏳ 대기 중 — 앞에 3개 / queued, 3 ahead"
