"""The soak's fault rule: a fault that lands when no job is running or waiting proves nothing and fails the run."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import redis.asyncio as aioredis

from komt_bot.dev.faults import FaultInjector, FaultPlan
from komt_bot.dev.processes import Fleet, RedisServer, WorkerPool
from komt_bot.dev.report import summarize
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings


class CountingRedis(RedisServer):
    """Stands in for the run's redis-server: counts restarts instead of signalling a process."""

    def __init__(self) -> None:
        self.restarts = 0

    async def restart(self) -> float:
        """Count the restart; the shared test Redis is never touched."""
        self.restarts += 1
        return 0.0


async def _injector(queue: JobQueue, plan: FaultPlan, tmp_path: Path) -> tuple[FaultInjector, CountingRedis]:
    await queue.ensure_group()
    redis = CountingRedis()
    pool = WorkerPool(Fleet(tmp_path), {})
    injector = FaultInjector(plan, pool, redis, queue, started=time.monotonic(), rng=random.Random(0))
    return injector, redis


async def test_a_restart_after_the_load_ended_is_a_missed_fault(
    redis_client: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    queue = JobQueue(redis_client, settings.queue)
    injector, redis = await _injector(queue, FaultPlan(restart_redis=True), tmp_path)
    third, load_done = asyncio.Event(), asyncio.Event()
    third.set()  # a third answered, but nothing is running or waiting any more...
    asyncio.get_running_loop().call_later(0.3, load_done.set)  # ...and nothing comes before the load ends

    await injector.run(third, load_done)

    assert redis.restarts == 0 and injector.records == []
    assert injector.missed == ["restart"]
    [note] = injector.notes
    assert note.startswith("restart: fault missed the load (at ") and "0 jobs running, 0 waiting" in note
    summary = summarize(
        [],
        dead_lettered=0,
        wall_seconds=1.0,
        busy_ok=False,
        faults=injector.records,
        fault_notes=injector.notes,
        machine={},
        options={},
    )
    assert summary.ok  # nothing lost...
    summary.missed_faults = list(injector.missed)
    assert not summary.ok and summary.as_dict()["missed_faults"] == ["restart"]  # ...but the fault proved nothing


async def test_a_restart_with_jobs_waiting_lands(
    redis_client: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    queue = JobQueue(redis_client, settings.queue)
    injector, redis = await _injector(queue, FaultPlan(restart_redis=True), tmp_path)
    origin = Origin(platform="test", channel="C1", user="U1")
    await queue.submit(JobRequest(conversation=[Turn(role="user", text="안녕")], origin=origin))
    third = asyncio.Event()
    third.set()

    await injector.run(third, asyncio.Event())

    assert redis.restarts == 1 and injector.missed == []
    [record] = injector.records
    assert record.kind == "restart" and "0 jobs running, 1 waiting" in record.detail


async def test_a_restart_due_while_nothing_runs_waits_for_the_next_job(
    redis_client: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    queue = JobQueue(redis_client, settings.queue)
    injector, redis = await _injector(queue, FaultPlan(restart_redis=True), tmp_path)
    third = asyncio.Event()
    third.set()
    restarting = asyncio.create_task(injector.run(third, asyncio.Event()))
    await asyncio.sleep(0.3)
    assert redis.restarts == 0 and not restarting.done()  # nothing to hit yet: it waits

    origin = Origin(platform="test", channel="C1", user="U1")
    await queue.submit(JobRequest(conversation=[Turn(role="user", text="안녕")], origin=origin))
    async with asyncio.timeout(5):
        await restarting

    assert redis.restarts == 1 and injector.missed == []


async def test_a_periodic_fault_that_never_fired_missed_the_load(
    redis_client: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    queue = JobQueue(redis_client, settings.queue)
    injector, _redis = await _injector(queue, FaultPlan(kill_every=30.0), tmp_path)
    load_done = asyncio.Event()
    load_done.set()

    await injector.run(asyncio.Event(), load_done)

    assert injector.missed == ["kill"]
    assert injector.notes == ["kill: fault missed the load (the load ended within the first 30 s)"]
