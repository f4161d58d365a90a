"""Nothing lost, nothing mixed: a Redis restart mid-answer, hundreds of open replies, frozen and killed workers,
signals at any moment. Real Redis servers and real worker processes throughout."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, cast

import pytest
import redis.asyncio as aioredis

from komt_bot.jobs import Event, JobRequest, Origin, Turn
from komt_bot.queue import JobQueue, connect
from komt_bot.settings import Settings, load_settings
from tests.fake_engine import ScriptedEngine
from tests.helpers import collect_events, eventually, running_worker
from tests.private_redis import FrozenLink, PrivateRedis, private_redis

ROOT = Path(__file__).resolve().parents[1]


def question(text: str = "서울에 대해 알려 주세요") -> JobRequest:
    return JobRequest(conversation=[Turn(role="user", text=text)], origin=Origin(platform="test"))


def last_attempt_text(events: list[Event]) -> str:
    """The answer as the last attempt wrote it (what a reply shows after a restart)."""
    starts = [i for i, e in enumerate(events) if e.type == "start"]
    return "".join(e.text for e in events[starts[-1] :] if e.type == "delta")


def assert_clean(events: list[Event]) -> None:
    """One terminal event, at the end; one start per attempt, attempts counting up."""
    assert [e.type for e in events].count("done") + [e.type for e in events].count("error") == 1
    assert events[-1].type == "done"
    attempts = [e.attempt for e in events if e.type == "start"]
    assert attempts == list(range(1, len(attempts) + 1))


@pytest.fixture
def queue(redis_client: aioredis.Redis, settings: Settings) -> JobQueue:
    return JobQueue(redis_client, settings.queue)


@pytest.fixture
def private(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path) as server:
        yield server


def settings_for(url: str, prefix: str, **queue: float) -> Settings:
    return load_settings(
        redis_url=url,
        queue={"prefix": prefix, "claim_idle_seconds": 5.0, "heartbeat_seconds": 0.2, "outage_seconds": 30.0, **queue},
    )


class WorkerProcess:
    """``python -m tests.worker_process`` with its stderr collected, to wait on what it says."""

    def __init__(self, prefix: str, name: str, *extra: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_process", prefix, name, *extra],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.stderr = ""
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read_stderr)

    def _read_stderr(self) -> None:
        stream = cast(IO[bytes], self.process.stderr)
        for line in stream:
            self.stderr += line.decode("utf-8", "replace")

    async def said(self, text: str, timeout: float = 30.0) -> None:
        async def check() -> bool:
            return text in self.stderr

        await eventually(check, timeout=timeout)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    async def close(self) -> None:
        """Kill it if still running, and release its pipe once everything it said is read."""
        self.kill()
        await self._reader
        cast(IO[bytes], self.process.stderr).close()


@pytest.fixture
async def processes() -> AsyncIterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.signal(signal.SIGCONT)
        await worker.close()


async def has_text(queue: JobQueue, job_id: str, attempt: int = 1) -> bool:
    events = await queue.output(job_id)
    starts = [e for e in events if e.type == "start"]
    return bool(starts) and starts[-1].attempt >= attempt and events[-1].type == "delta"


# -- Redis restarts and pools ---------------------------------------------------------------------------------------


async def test_a_redis_restart_mid_answer_loses_nothing(private: PrivateRedis, prefix: str) -> None:
    settings = settings_for(private.url, prefix)
    client = connect(settings)
    queue = JobQueue(client, settings.queue)
    answer = "가나다라마바사" * 20
    try:
        async with running_worker(queue, ScriptedEngine(answer, piece_chars=2, delay=0.02), settings):
            sub = await queue.submit(question())
            reading = asyncio.create_task(collect_events(queue, sub.job_id, timeout=60))
            await eventually(lambda: has_text(queue, sub.job_id))
            private.restart()
            events = await reading
    finally:
        await queue.close()
        await client.aclose()
    assert_clean(events)
    assert last_attempt_text(events) == answer


async def test_three_hundred_open_replies_share_a_few_connections(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    name = f"test-readers-{uuid.uuid4().hex[:8]}"
    readers = connect(settings, name=name)
    asking = JobQueue(readers, settings.queue)
    working = JobQueue(redis_client, settings.queue.model_copy(update={"max_backlog": 1000}))
    wide = settings.model_copy(update={"worker": settings.worker.model_copy(update={"capacity": 300})})
    engine = ScriptedEngine(lambda prompt: f"답: {prompt[-12:]}", delay=0.05, capacity=300)
    peak = 0

    async def connections() -> int:
        listed = await redis_client.client_list()
        return sum(1 for c in listed if c.get("name") == name)

    try:
        jobs = [(await working.submit(question(f"질문 {i:03d}"))).job_id for i in range(300)]
        reads = [asyncio.create_task(collect_events(asking, job_id, timeout=90)) for job_id in jobs]
        await eventually(lambda: _all_watched(asking, 300))
        peak = await connections()
        async with running_worker(working, engine, wide):
            results = await asyncio.gather(*reads)
            peak = max(peak, await connections())
    finally:
        await asking.close()
        await readers.aclose()
    assert all(events[-1].type == "done" for events in results)
    assert all(last_attempt_text(events).startswith("답: ") for events in results)
    assert 1 <= peak <= 4


async def _all_watched(queue: JobQueue, count: int) -> bool:
    return queue.reader.watching == count


# -- frozen and killed workers -----------------------------------------------------------------------------------


async def test_a_frozen_worker_that_wakes_up_writes_nothing_more(
    queue: JobQueue, settings: Settings, prefix: str, processes: list[WorkerProcess]
) -> None:
    frozen = WorkerProcess(prefix, "frozen", "--delay", "0.05", "--chars", "300")
    processes.append(frozen)
    sub = await queue.submit(question())
    await eventually(lambda: has_text(queue, sub.job_id))
    frozen.signal(signal.SIGSTOP)
    async with running_worker(queue, ScriptedEngine("이어받은 답", delay=0.01), settings, name="rescuer"):
        events = await collect_events(queue, sub.job_id)
        frozen.signal(signal.SIGCONT)
        await frozen.said("dropping it")
    events = await queue.output(sub.job_id)  # everything, after the frozen worker had its chance to write
    assert_clean(events)
    assert [e.attempt for e in events if e.type == "start"] == [1, 2]
    assert last_attempt_text(events) == "이어받은 답"
    assert await queue.redis.hget(queue.keys.stats, "done") == "1"


async def test_innocent_jobs_survive_three_worker_deaths(
    queue: JobQueue, settings: Settings, prefix: str, processes: list[WorkerProcess]
) -> None:
    jobs = [(await queue.submit(question(f"질문 {i}"))).job_id for i in range(16)]
    for death in range(1, 4):
        doomed = WorkerProcess(prefix, f"doomed-{death}", "--capacity", "16", "--delay", "0.05", "--chars", "400")
        processes.append(doomed)

        async def all_streaming(attempt: int = death) -> bool:
            return all([await has_text(queue, job_id, attempt) for job_id in jobs])

        await eventually(all_streaming, timeout=60)
        doomed.kill()
    async with running_worker(queue, ScriptedEngine("살아남음", delay=0.01, capacity=16), settings, name="last"):
        results = [await collect_events(queue, job_id, timeout=60) for job_id in jobs]
    assert all(events[-1].type == "done" and last_attempt_text(events) == "살아남음" for events in results)
    assert await queue.redis.xlen(queue.keys.dlq) == 0


async def test_a_question_that_kills_every_worker_is_dead_lettered(
    queue: JobQueue, settings: Settings, prefix: str, processes: list[WorkerProcess]
) -> None:
    sub = await queue.submit(question("독이 든 질문"))
    for death in range(1, settings.queue.max_attempts + 1):
        doomed = WorkerProcess(prefix, f"poisoned-{death}", "--delay", "30", "--chars", "10")

        async def started(attempt: int = death) -> bool:
            return (await queue.job(sub.job_id)).attempt >= attempt

        processes.append(doomed)
        await eventually(started, timeout=60)
        doomed.kill()  # before its first token, as a crashing question does
    async with running_worker(queue, ScriptedEngine("안 나올 답"), settings, name="last"):
        events = await collect_events(queue, sub.job_id)
    assert events[-1].type == "error" and events[-1].code == "dead_letter"
    assert await queue.redis.xlen(queue.keys.dlq) == 1


# -- signals -------------------------------------------------------------------------------------------------------


async def test_a_drain_exits_even_when_redis_hangs(
    redis_client: aioredis.Redis, prefix: str, settings: Settings, processes: list[WorkerProcess]
) -> None:
    queue = JobQueue(redis_client, settings.queue)
    async with FrozenLink(6379).running() as link:
        stuck = WorkerProcess(prefix, "stuck", "--redis-url", link.url, "--drain", "0.5", "--chars", "400")
        processes.append(stuck)
        sub = await queue.submit(question())
        await eventually(lambda: has_text(queue, sub.job_id))
        link.freeze()
        began = time.monotonic()
        stuck.signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, stuck.process.wait, 60)
        took = time.monotonic() - began
    assert code == 0
    assert took < 0.5 + 20  # drain_seconds plus the fixed grace periods, whatever Redis does


def tiny_worker_env(model_dir: Path, redis_url: str, prefix: str) -> dict[str, str]:
    """The environment of a real ``komt-bot worker`` on the tiny model (no settings of the test runner's own)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("KOMT_")},
        "KOMT_REDIS_URL": redis_url,
        "KOMT_QUEUE__PREFIX": prefix,
        "KOMT_MODEL__BASE": str(model_dir / "base"),
        "KOMT_MODEL__ADAPTER": str(model_dir / "lora"),
        "KOMT_LOG__LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


def test_sigterm_while_the_model_loads_stops_the_worker(tiny_model_dir: Path, prefix: str) -> None:
    env = tiny_worker_env(tiny_model_dir, os.environ.get("KOMT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"), prefix)
    worker = subprocess.Popen(
        [sys.executable, "-m", "komt_bot", "worker"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert worker.stderr is not None
        for line in worker.stderr:
            if "loading the model" in line:
                break
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        worker.kill()
        worker.wait(10)
        if worker.stderr is not None:
            worker.stderr.close()


def test_a_worker_started_before_redis_waits_for_it(tiny_model_dir: Path, tmp_path: Path, prefix: str) -> None:
    server = PrivateRedis(tmp_path)  # not started yet
    env = tiny_worker_env(tiny_model_dir, server.url, prefix)
    worker = subprocess.Popen(
        [sys.executable, "-m", "komt_bot", "worker", "--name", "patient"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        for line in worker.stderr:
            if "waiting for Redis" in line:
                break
        server.start()
        asyncio.run(_registered(server.url, prefix, "patient"))
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait(10)
        server.stop()
        if worker.stderr is not None:
            worker.stderr.close()


async def _registered(url: str, prefix: str, name: str) -> None:
    settings = settings_for(url, prefix)
    client = connect(settings)
    queue = JobQueue(client, settings.queue)
    try:

        async def registered() -> bool:
            return any(record.name == name for record in await queue.presence.workers())

        await eventually(registered, timeout=60)
    finally:
        await client.aclose()
