"""`komt-bot queue ...` against the real Redis, over real queue states: waiting, running with a live worker,
running on a dead worker, dead-lettered. Every verb is driven through the real CLI app (typer's CliRunner)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from rich.console import Console
from typer.testing import CliRunner, Result

from komt_bot.cli import app
from komt_bot.cli.queue import redis_location, watch_status
from komt_bot.cli.render import seconds
from komt_bot.jobs import ClaimedJob, ErrorCode, JobRequest, Origin, Turn
from komt_bot.queue import JobQueue
from komt_bot.queue.inspect import QueueAdmin
from komt_bot.queue.presence import WorkerRecord
from komt_bot.queue.views import PREVIEW_CHARS, preview
from komt_bot.settings import Settings, load_settings
from tests.conftest import REDIS_URL
from tests.fake_engine import ScriptedEngine
from tests.helpers import collect_events, eventually, running_worker

LONG_ANSWER = "천천히 생각하는 중입니다. " * 40  # ~5 s with the delay below: long enough to be seen running


def ask(text: str = "제주도 여행 코스를 만들어줘", *, platform: str = "slack", channel: str = "C42") -> JobRequest:
    """A one-question job from ``platform``/``channel``."""
    return JobRequest(
        conversation=[Turn(role="user", text=text)], origin=Origin(platform=platform, channel=channel, user="U1")
    )


@dataclass
class Cli:
    """Runs ``komt-bot ...`` in a thread (the command runs its own event loop) with the test's settings."""

    env: dict[str, str]

    async def __call__(self, *args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(lambda: runner.invoke(app, list(args), input=input, env=self.env))

    async def ok(self, *args: str, input: str | None = None) -> Result:
        """Run and require exit code 0."""
        result = await self(*args, input=input)
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    async def json(self, *args: str) -> Any:
        """Run with ``--json`` and parse stdout."""
        return json.loads((await self.ok(*args, "--json")).stdout)


def make_cli(settings: Settings) -> Cli:
    """The CLI, pointed at this test's Redis prefix with the fast queue timings of ``settings``."""
    return Cli(
        {
            "KOMT_REDIS_URL": REDIS_URL,
            "KOMT_QUEUE__PREFIX": settings.queue.prefix,
            "KOMT_QUEUE__HEARTBEAT_SECONDS": str(settings.queue.heartbeat_seconds),
            "KOMT_QUEUE__CLAIM_IDLE_SECONDS": str(settings.queue.claim_idle_seconds),
            "COLUMNS": "220",
        }
    )


@pytest.fixture
def cli(settings: Settings) -> Cli:
    """The CLI for this test (see :func:`make_cli`)."""
    return make_cli(settings)


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[JobQueue]:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    yield q


async def claim_one(queue: JobQueue, consumer: str) -> ClaimedJob:
    """Claim the next job as ``consumer`` (a worker that never heartbeats: a dead one)."""
    jobs = await queue.claim(consumer, 1, block_seconds=0.5)
    assert len(jobs) == 1
    return jobs[0]


async def dead_letter(queue: JobQueue, text: str = "계속 실패하는 질문") -> str:
    """Submit a job and fail it retryably until it lands in the dead-letter stream; its id (call with none waiting)."""
    job_id = (await queue.submit(ask(text))).job_id
    while (
        await queue.fail(
            await claim_one(queue, "flaky"), code=ErrorCode.ENGINE_ERROR, message="CUDA OOM", retryable=True
        )
        == "retried"
    ):
        pass
    return job_id


async def test_status_of_an_empty_queue_says_no_worker_runs(cli: Cli) -> None:
    table = (await cli.ok("queue", "status")).stdout
    assert "no live worker" in table
    data = await cli.json("queue", "status")
    assert data["waiting"] == 0
    assert data["running"] == 0
    assert data["oldest_waiting_seconds"] is None
    assert data["workers"] == []
    assert data["redis"] == REDIS_URL


async def test_status_counts_waiting_jobs_and_the_oldest_ones_age(cli: Cli, queue: JobQueue) -> None:
    for _ in range(2):
        await queue.submit(ask())
    table = (await cli.ok("queue", "status")).stdout
    assert re.search(r"waiting\s+│\s+2\s", table)
    assert "oldest waiting" in table
    data = await cli.json("queue", "status")
    assert data["waiting"] == 2
    assert data["oldest_waiting_seconds"] >= 0


async def test_a_requeued_job_counts_as_waiting_not_as_running(cli: Cli, queue: JobQueue) -> None:
    await queue.submit(ask())
    await queue.requeue(await claim_one(queue, "draining"), error="worker stopped")
    data = await cli.json("queue", "status")
    assert (data["waiting"], data["running"]) == (1, 0)


async def test_status_shows_the_live_worker_and_its_running_job(cli: Cli, queue: JobQueue, settings: Settings) -> None:
    admin = QueueAdmin(queue)
    async with running_worker(queue, ScriptedEngine(LONG_ANSWER, delay=0.05), settings, name="gpu-7"):
        job_id = (await queue.submit(ask())).job_id
        await eventually(lambda: _in_flight(admin, 1))
        data = await cli.json("queue", "status")
        table = (await cli.ok("queue", "status")).stdout
        stopped = await cli.ok("queue", "cancel", job_id)
        await eventually(lambda: _state(queue, job_id, "cancelled"))
    [worker] = data["workers"]
    assert (worker["name"], worker["host"], worker["model"]) == ("gpu-7", socket.gethostname(), "scripted")
    assert (worker["capacity"], worker["in_flight"], worker["stale"]) == (4, 1, False)
    assert worker["heartbeat_age"] < 5
    assert data["running"] == 1
    assert data["running_jobs"][0]["job_id"] == job_id
    assert data["running_jobs"][0]["worker_live"] is True
    assert data["orphaned"] == 0
    assert "gpu-7" in table and "scripted" in table and job_id in table
    assert "STALE" not in table
    assert f"asked running job {job_id} to stop" in stopped.stdout


async def _in_flight(admin: QueueAdmin, count: int) -> bool:
    workers = await admin.workers()
    return bool(workers) and workers[0].record.in_flight == count


async def _state(queue: JobQueue, job_id: str, state: str) -> bool:
    return (await queue.job(job_id)).state == state


async def test_status_marks_a_dead_workers_job_and_a_stale_worker_record(cli: Cli, queue: JobQueue) -> None:
    job_id = (await queue.submit(ask())).job_id
    await claim_one(queue, "ghost")
    sleepy = WorkerRecord(name="sleepy", host="h2", model="komt", capacity=2, stale_after=0.6)  # 3 heartbeats
    await queue.presence.publish("worker", "sleepy", sleepy)
    admin = QueueAdmin(queue)
    await eventually(lambda: _stale(admin))
    data = await cli.json("queue", "status")
    table = (await cli.ok("queue", "status")).stdout
    assert data["running_jobs"][0]["job_id"] == job_id
    assert data["running_jobs"][0]["worker"] == "ghost"
    assert data["running_jobs"][0]["worker_live"] is False
    assert data["orphaned"] == 1
    assert data["workers"][0]["stale"] is True
    assert "STALE: no live worker" in table
    assert "STALE (no heartbeat" in table
    assert "1 with no live worker" in table


async def _stale(admin: QueueAdmin) -> bool:
    workers = await admin.workers()
    return bool(workers) and workers[0].stale


async def test_a_dead_lettered_job_is_counted_listed_and_requeued(cli: Cli, queue: JobQueue) -> None:
    job_id = await dead_letter(queue)
    data = await cli.json("queue", "status")
    assert data["dead_letter"] == 1
    assert data["recent"]["failed"] == 1
    assert data["totals"]["failed"] == 1
    listed = await cli.json("queue", "jobs", "--state", "dead_letter")
    assert [(j["job_id"], j["shown_state"], j["attempt"]) for j in listed] == [(job_id, "dead_letter", 3)]
    assert job_id in (await cli.ok("queue", "jobs", "--state", "dead_letter")).stdout

    result = await cli.ok("queue", "requeue", job_id)

    assert f"requeued job {job_id} (it was failed; removed 1 dead-letter entry)" in result.stdout
    record = (await queue.job(job_id)).raw
    assert (record["state"], record["attempt"], record["previous_error"]) == ("queued", "0", "CUDA OOM")
    assert await queue.redis.xlen(queue.keys.dlq) == 0
    again = await claim_one(queue, "healthy")
    assert (again.job_id, again.attempt) == (job_id, 1)
    replay = [e async for e in _first_events(queue, job_id, 1)]
    assert [(e.type, e.attempt) for e in replay] == [("start", 1)]


async def _first_events(queue: JobQueue, job_id: str, count: int) -> AsyncIterator[Any]:
    seen = 0
    async for event in queue.events(job_id, block_seconds=0.2):
        if event is not None:
            yield event
            seen += 1
        if seen >= count:
            return


async def test_requeue_dead_letter_all_requeues_each_dead_job(cli: Cli, queue: JobQueue) -> None:
    assert await cli.json("queue", "requeue", "--dead-letter-all") == {"requeued": [], "skipped": []}
    ids = [await dead_letter(queue, f"질문 {n}") for n in range(2)]
    result = await cli.ok("queue", "requeue", "--dead-letter-all")
    assert "requeued 2 dead-lettered job(s)" in result.stdout
    assert all(f"requeued job {job_id}" in result.stdout for job_id in ids)
    assert await queue.redis.zrange(queue.keys.waiting, 0, -1) == ids


async def test_jobs_lists_origin_state_and_only_a_preview_of_the_question(cli: Cli, queue: JobQueue) -> None:
    question = "서울에서 부산까지 가는 가장 빠른 방법을 알려주세요. " * 3 + "비밀스러운끝부분"
    job_id = (await queue.submit(ask(question, platform="discord", channel="998877"))).job_id
    other = (await queue.submit(ask("짧은 질문"))).job_id
    await queue.cancel(other)

    table = (await cli.ok("queue", "jobs")).stdout
    listed = await cli.json("queue", "jobs")
    queued = await cli.json("queue", "jobs", "--state", "queued")

    assert [j["job_id"] for j in listed] == [other, job_id]
    first = listed[1]
    assert (first["platform"], first["channel"], first["state"]) == ("discord", "998877", "queued")
    assert first["question"] == preview(question) and len(first["question"]) == PREVIEW_CHARS
    assert "비밀스러운끝부분" not in table and "비밀스러운끝부분" not in json.dumps(listed, ensure_ascii=False)
    assert job_id in table and "discord" in table and "998877" in table and "cancelled" in table
    assert [j["job_id"] for j in queued] == [job_id]
    assert "no jobs" in (await cli.ok("queue", "jobs", "--state", "done")).stdout


async def test_show_prints_the_whole_question_and_the_events_so_far(
    cli: Cli, queue: JobQueue, settings: Settings
) -> None:
    question = "한국의 전통 음식 다섯 가지를 자세히 설명해 주세요. " * 3
    async with running_worker(queue, ScriptedEngine("김치, 불고기, 비빔밥, 잡채, 떡볶이입니다."), settings):
        job_id = (await queue.submit(ask(question))).job_id
        await collect_events(queue, job_id)

    table = (await cli.ok("queue", "show", job_id)).stdout
    data = await cli.json("queue", "show", job_id)

    assert " ".join(question.split()) in " ".join(table.split())
    assert "김치, 불고기, 비빔밥, 잡채, 떡볶이입니다." in table
    assert "attempt 1" in table and "stop" in table and "delta ×" in table
    assert data["conversation"] == [{"role": "user", "text": question}]
    types = [e["type"] for e in data["events"]]
    assert types[0] == "start" and types[-1] == "done" and "delta" in types
    assert "".join(e.get("text", "") for e in data["events"]) == "김치, 불고기, 비빔밥, 잡채, 떡볶이입니다."
    assert data["record"]["state"] == "done"
    assert "request" not in data["record"]


async def test_cancel_of_a_waiting_job_ends_it(cli: Cli, queue: JobQueue) -> None:
    first = (await queue.submit(ask())).job_id
    second = (await queue.submit(ask())).job_id
    assert f"cancelled job {first}" in (await cli.ok("queue", "cancel", first)).stdout
    assert await cli.json("queue", "cancel", second) == {"job_id": second, "was": "queued", "action": "cancelled"}
    assert (await queue.job(first)).state == "cancelled"
    assert await queue.redis.zcard(queue.keys.waiting) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["queue", "show", "nosuchjob"], "no such job: nosuchjob"),
        (["queue", "cancel", "nosuchjob"], "no such job: nosuchjob"),
        (["queue", "requeue", "nosuchjob"], "no such job: nosuchjob"),
    ],
)
async def test_unknown_ids_exit_1_with_one_line(cli: Cli, args: list[str], message: str) -> None:
    result = await cli(*args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["queue", "jobs", "--state", "sleeping"], "unknown state 'sleeping'"),
        (["queue", "requeue"], "give a job id or --dead-letter-all"),
        (["queue", "requeue", "abc", "--dead-letter-all"], "give a job id or --dead-letter-all"),
    ],
)
async def test_bad_arguments_are_usage_mistakes_exit_2_with_one_line(cli: Cli, args: list[str], message: str) -> None:
    result = await cli(*args)
    assert result.exit_code == 2  # one rule on every command: usage and configuration mistakes exit 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_acting_on_a_job_in_the_wrong_state_exits_1(cli: Cli, queue: JobQueue, settings: Settings) -> None:
    waiting = (await queue.submit(ask())).job_id
    requeue = await cli("queue", "requeue", waiting)
    assert requeue.exit_code == 1
    assert f"job {waiting} is queued: only failed or cancelled jobs can be requeued" in requeue.stderr
    async with running_worker(queue, ScriptedEngine("끝"), settings):
        await collect_events(queue, waiting)
    cancel = await cli("queue", "cancel", waiting)
    assert cancel.exit_code == 1
    assert f"job {waiting} is done: it has already ended" in cancel.stderr


async def test_purge_asks_first_and_leaves_running_jobs_alone_without_force(cli: Cli, queue: JobQueue) -> None:
    await dead_letter(queue)
    running = (await queue.submit(ask())).job_id
    await claim_one(queue, "ghost")
    waiting = [(await queue.submit(ask())).job_id for _ in range(2)]

    declined = await cli("queue", "purge", input="n\n")
    assert declined.exit_code == 1
    assert "cancel 2 waiting job(s)" in declined.stderr and "purge aborted: nothing changed" in declined.stderr
    assert await queue.redis.zcard(queue.keys.waiting) == 2

    purged = await cli.ok("queue", "purge", input="y\n")
    assert "cancelled 2 waiting job(s)" in purged.stdout
    assert "left 1 running job(s) alone" in purged.stdout
    assert [(await queue.job(j)).state for j in waiting] == ["cancelled", "cancelled"]
    assert (await queue.job(running)).state == "running"
    assert not await queue.cancelled([running])

    forced = await cli.json("queue", "purge", "--yes", "--force", "--dead-letter")
    assert forced == {"cancelled_waiting": 0, "stopped_running": 1, "dead_letter_dropped": 1, "running_left": 0}
    assert await queue.cancelled([running]) == {running}
    assert await queue.redis.xlen(queue.keys.dlq) == 0
    assert "nothing to purge" in (await cli.ok("queue", "purge", "--yes")).stdout


async def test_watch_refreshes_the_status(queue: JobQueue, settings: Settings) -> None:
    await queue.submit(ask())
    screen, lines = io.StringIO(), io.StringIO()
    admin = QueueAdmin(queue)
    await watch_status(admin, settings, Console(file=screen, width=200), interval=0.01, iterations=2)
    await watch_status(admin, settings, Console(file=lines, width=200), interval=0.01, iterations=2, as_json=True)
    assert "waiting" in screen.getvalue()
    assert [json.loads(line)["waiting"] for line in lines.getvalue().splitlines()] == [1, 1]


async def test_an_unreachable_redis_is_one_line_and_exit_1(cli: Cli) -> None:
    cli.env["KOMT_REDIS_URL"] = "redis://:hunter2@127.0.0.1:1/0"
    result = await cli("queue", "status")
    assert result.exit_code == 1
    assert "Redis does not answer" in result.stderr
    assert "hunter2" not in result.output


def test_json_output_masks_the_redis_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KOMT_CONFIG", raising=False)
    with_password = load_settings(redis_url="redis://admin:hunter2@redis.internal:6380/1")
    assert redis_location(with_password) == "redis://admin:**********@redis.internal:6380/1"
    assert redis_location(load_settings(redis_url="redis://redis:6379/0")) == "redis://redis:6379/0"


def test_durations_read_well() -> None:
    assert [seconds(v) for v in (None, 4.25, 192, 7500)] == ["-", "4.2s", "3m12s", "2h05m"]


async def test_a_purge_never_stops_a_job_that_started_after_it_was_planned(queue: JobQueue) -> None:
    job_id = (await queue.submit(ask())).job_id
    admin = QueueAdmin(queue)
    plan = await admin.purge_plan()
    assert plan.waiting == [job_id]
    await claim_one(queue, "quick-worker")
    result = await admin.purge(plan)
    assert (result.cancelled_waiting, result.stopped_running) == (0, 0)
    assert (await queue.job(job_id)).state == "running"
    assert not await queue.cancelled([job_id])
