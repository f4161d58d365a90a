"""`komt-bot health` exits 0 or 1 (never 2: Docker reserves it) with one line saying why."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from komt_bot.chat.presence import component_heartbeat
from komt_bot.cli.health import judge_component, judge_deliveries, judge_workers
from komt_bot.queue import JobQueue
from komt_bot.queue.inspect import QueueAdmin
from komt_bot.queue.presence import WorkerRecord
from komt_bot.queue.views import BotDeliveries, ComponentView, DeliveryCounts, WorkerView
from komt_bot.settings import Settings
from komt_bot.worker import Worker
from tests.fake_engine import ScriptedEngine
from tests.helpers import eventually, running_worker
from tests.test_admin import LONG_ANSWER, Cli, ask, make_cli


async def health(cli: Cli, *args: str) -> tuple[int, str]:
    """Run ``komt-bot health ARGS``: its exit code and its one line."""
    result = await cli("health", *args)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return result.exit_code, lines[0]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return make_cli(settings)


@pytest.fixture
def queue(redis_client: aioredis.Redis, settings: Settings) -> JobQueue:
    return JobQueue(redis_client, settings.queue)


@pytest.fixture
async def slack_heartbeat(queue: JobQueue) -> AsyncIterator[None]:
    """A live Slack adapter heartbeat from this host (the real heartbeat loop, fast)."""
    task = asyncio.create_task(component_heartbeat(queue, "slack", interval=0.2))
    await eventually(lambda: queue.presence.components())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_no_worker_is_unhealthy(cli: Cli, queue: JobQueue) -> None:
    code, line = await health(cli)
    assert code == 1
    assert line.startswith("unhealthy: no worker heartbeat")


async def test_a_serving_worker_is_healthy_until_the_queue_stops_moving(
    cli: Cli, queue: JobQueue, settings: Settings
) -> None:
    engine = ScriptedEngine(LONG_ANSWER, delay=0.05, capacity=1)
    async with running_worker(queue, engine, settings, name="gpu-1") as worker:
        running = (await queue.submit(ask())).job_id
        await eventually(lambda: _busy(worker))
        waiting = (await queue.submit(ask())).job_id  # capacity 1: this one waits
        code, line = await health(cli)
        assert code == 0
        assert line.startswith("ok: 1 worker(s) serving, newest heartbeat")
        assert (await health(cli, "--local"))[0] == 0
        assert (await health(cli, "--component", "worker", "--max-wait", "3600"))[0] == 0
        await eventually(lambda: _waited(QueueAdmin(queue), 0.3))
        code, line = await health(cli, "--max-wait", "0.3")
        await queue.cancel(waiting)
        await queue.cancel(running)
    assert code == 1
    assert line.startswith("unhealthy: the oldest waiting job has waited")
    assert "(limit 0.3 s)" in line


async def _busy(worker: Worker) -> bool:
    return worker.in_flight == 1


async def _waited(admin: QueueAdmin, seconds: float) -> bool:
    age = await admin.oldest_waiting_age()
    return age is not None and age > seconds


async def test_a_stale_worker_record_is_unhealthy(cli: Cli, queue: JobQueue) -> None:
    # what a worker with these settings promises: three heartbeat periods (the record carries its own staleness)
    record = WorkerRecord(name="gpu-2", host=socket.gethostname(), stale_after=0.6)
    await queue.presence.publish("worker", "gpu-2", record)
    admin = QueueAdmin(queue)
    await eventually(lambda: _all_stale(admin))
    code, line = await health(cli)
    assert code == 1
    assert "worker heartbeat is stale" in line and "(limit 0.6 s)" in line


async def _all_stale(admin: QueueAdmin) -> bool:
    return all(w.stale for w in await admin.workers())


async def test_local_only_counts_this_hosts_worker(cli: Cli, queue: JobQueue, settings: Settings) -> None:
    task = asyncio.create_task(_keep_registering(queue, "remote", "other-host"))
    try:
        await eventually(lambda: queue.presence.workers())
        assert (await health(cli))[0] == 0
        code, line = await health(cli, "--local")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert code == 1
    assert line == f"unhealthy: no worker heartbeat on {socket.gethostname()}: no worker is running " + (
        "(start one with `komt-bot worker`)"
    )


async def _keep_registering(queue: JobQueue, name: str, host: str) -> None:
    """A worker heartbeat from another machine, refreshed like a real worker's."""
    while True:
        await queue.presence.publish("worker", name, WorkerRecord(name=name, host=host, capacity=1, stale_after=5))
        await asyncio.sleep(0.1)


@pytest.mark.usefixtures("slack_heartbeat")
async def test_component_checks_that_adapters_own_heartbeat(cli: Cli) -> None:
    assert (await health(cli, "--component", "slack"))[0] == 0
    code, line = await health(cli, "--component", "slack", "--local")
    assert code == 0
    assert line.startswith(f"ok: slack adapter alive on {socket.gethostname()}")
    code, line = await health(cli, "--component", "discord")
    assert code == 1
    assert line.startswith("unhealthy: no discord adapter heartbeat")
    teams = await cli("health", "--component", "teams")  # a typo in the health check: a usage mistake, exit 2
    assert teams.exit_code == 2 and "'teams' is not one of 'worker', 'slack', 'discord'" in teams.stderr


@pytest.mark.usefixtures("slack_heartbeat")
async def test_an_adapter_is_unhealthy_while_replies_wait_for_an_owner_past_the_lease(
    cli: Cli, queue: JobQueue
) -> None:
    await queue.open_delivery("job1", platform="slack", bot="T1/A1", owner="slack-a", place={}, lease_seconds=0)
    await queue.open_delivery("job2", platform="slack", bot="T1/A1", owner="slack-a", place={}, lease_seconds=0)
    await asyncio.sleep(0.3)
    assert (await health(cli, "--component", "slack"))[0] == 0  # a lease lapsed moments ago is normal
    code, line = await health(cli, "--component", "slack", "--max-orphan-age", "0.2")
    assert code == 1
    assert re.fullmatch(
        r"unhealthy: 2 slack replies have had no adapter for up to \d+\.\d s past the lease \(limit 0\.2 s\): "
        r"no process resumes them",
        line,
    ), line
    assert len(await queue.claim_deliveries("slack", "T1/A1", "slack-b", lease_seconds=60)) == 2
    code, line = await health(cli, "--component", "slack", "--max-orphan-age", "0.2")
    assert (code, line.startswith("ok: slack adapter alive")) == (0, True)


def test_waiting_replies_count_only_for_their_own_platform() -> None:
    waiting = DeliveryCounts(
        [BotDeliveries("discord", "99", {}, 1, 45.0), BotDeliveries("slack", "T1", {"a": 2}, 0, None)]
    )
    assert judge_deliveries(waiting, "slack", 30) is None
    verdict = judge_deliveries(waiting, "discord", 30)
    assert verdict is not None and verdict.line == (
        "unhealthy: 1 discord reply has had no adapter for up to 45.0 s past the lease (limit 30 s): "
        "no process resumes them"
    )
    assert judge_deliveries(waiting, "discord", 60) is None


async def test_redis_not_answering_or_not_configured_is_unhealthy(cli: Cli) -> None:
    cli.env["KOMT_REDIS_URL"] = "redis://:hunter2@127.0.0.1:1/0"
    code, line = await health(cli)
    assert code == 1
    assert line.startswith("unhealthy: Redis does not answer")
    assert "hunter2" not in line
    del cli.env["KOMT_REDIS_URL"]
    code, line = await health(cli)
    assert (code, line.split(":")[:2]) == (1, ["unhealthy", " KOMT_REDIS_URL"])


def _worker(*, age: float = 0.1, draining: bool = False, host: str = "h1") -> WorkerView:
    record = WorkerRecord(name="w", host=host, model="komt", device="cuda", capacity=4, draining=draining)
    return WorkerView(record, age, age > 0.6)


def test_only_draining_workers_are_unhealthy() -> None:
    verdict = judge_workers([_worker(draining=True)], None)
    assert not verdict.ok
    assert verdict.reason == "every worker is draining (shutting down): w"
    assert judge_workers([_worker(draining=True), _worker()], None).ok


def test_a_stale_adapter_record_is_unhealthy() -> None:
    stale = ComponentView("discord", "h1", 40.0, True)
    assert judge_component([stale], "discord", None).reason == "discord adapter heartbeat is stale"
