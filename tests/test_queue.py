"""The queue protocol against the real Redis: idempotency, backpressure, cancel, takeover, replay, dead letters."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
import redis.asyncio as aioredis

from komt_bot.errors import BacklogFullError, JobNotFoundError
from komt_bot.jobs import ErrorCode, Event, JobRequest, Origin, Turn
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings, load_settings
from tests.fake_engine import ScriptedEngine
from tests.helpers import collect_events, eventually, running_worker, until_running

ROOT = Path(__file__).resolve().parents[1]


def question(text: str = "제주도 여행 코스를 만들어줘") -> JobRequest:
    return JobRequest(
        conversation=[Turn(role="user", text=text)], origin=Origin(platform="test", channel="C1", user="U1")
    )


async def queued_entries(queue: JobQueue) -> int:
    """Jobs queued: entries of the jobs stream and of the people's lines (fair share), where jobs wait."""
    lines = [key async for key in queue.redis.scan_iter(match=queue.keys.fair_line("*"))]
    return int(await queue.redis.xlen(queue.keys.jobs)) + sum([int(await queue.redis.llen(k)) for k in lines])


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[JobQueue]:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    yield q


async def test_a_replayed_idempotency_key_makes_one_job(queue: JobQueue) -> None:
    first = await queue.submit(question(), idempotency_key="Ev123")
    again = [await queue.submit(question(), idempotency_key="Ev123") for _ in range(3)]
    assert first.created
    assert {s.job_id for s in again} == {first.job_id}
    assert not any(s.created for s in again)
    assert await queued_entries(queue) == 1


async def test_positions_count_the_jobs_ahead(queue: JobQueue) -> None:
    subs = [await queue.submit(question()) for _ in range(3)]
    assert [s.position for s in subs] == [0, 1, 2]


async def test_a_full_backlog_is_refused_with_a_typed_error(redis_client: aioredis.Redis, settings: Settings) -> None:
    queue = JobQueue(redis_client, settings.queue.model_copy(update={"max_backlog": 2}))
    await queue.submit(question())
    await queue.submit(question())
    with pytest.raises(BacklogFullError) as refused:
        await queue.submit(question())
    assert refused.value.backlog == 2
    assert await queued_entries(queue) == 2


async def test_a_queued_job_can_be_cancelled(queue: JobQueue, settings: Settings) -> None:
    sub = await queue.submit(question())
    assert await queue.cancel(sub.job_id) == "queued"
    events = await collect_events(queue, sub.job_id)
    assert [(e.type, e.finish_reason) for e in events] == [("done", "cancelled")]
    assert await queue.position(sub.job_id) is None
    engine = ScriptedEngine()
    async with running_worker(queue, engine, settings) as worker:
        later = await queue.submit(question("취소되지 않은 질문"))
        await collect_events(queue, later.job_id)  # the worker got past the cancelled job's place in the queue
        assert worker.jobs_done == 1
    assert len(engine.prompts) == 1  # the worker skipped it: only the later question reached the engine
    assert "취소되지 않은 질문" in engine.prompts[0]
    assert (await queue.job(sub.job_id)).state == "cancelled"


async def test_a_running_job_can_be_cancelled(queue: JobQueue, settings: Settings) -> None:
    engine = ScriptedEngine("가나다라" * 200, piece_chars=1, delay=0.02)
    async with running_worker(queue, engine, settings):
        sub = await queue.submit(question())

        await until_running(queue, sub.job_id)
        assert await queue.cancel(sub.job_id) == "running"
        events = await collect_events(queue, sub.job_id)
    assert events[-1].type == "done"
    assert events[-1].finish_reason == "cancelled"
    answer = "".join(e.text for e in events if e.type == "delta")
    assert 0 < len(answer) < 800
    assert engine.cancelled == [sub.job_id]
    assert (await queue.job(sub.job_id)).state == "cancelled"


async def test_cancel_of_an_unknown_job_says_so(queue: JobQueue) -> None:
    with pytest.raises(JobNotFoundError):
        await queue.cancel("nope")


async def test_a_late_reader_replays_every_event(queue: JobQueue, settings: Settings) -> None:
    engine = ScriptedEngine("늦게 온 사람도 모든 토큰을 받습니다", piece_chars=3, delay=0.005)
    async with running_worker(queue, engine, settings):
        sub = await queue.submit(question())

        async def finished() -> bool:
            return (await queue.job(sub.job_id)).state == "done"

        await eventually(finished)
    events = await collect_events(queue, sub.job_id)
    assert events[0].type == "start"
    assert events[0].attempt == 1
    assert "".join(e.text for e in events if e.type == "delta") == "늦게 온 사람도 모든 토큰을 받습니다"
    assert events[-1].type == "done"
    assert events[-1].finish_reason == "stop"
    assert events[-1].usage and events[-1].usage["completion_tokens"] > 0


async def test_a_job_that_keeps_failing_is_dead_lettered(queue: JobQueue, settings: Settings) -> None:
    engine = ScriptedEngine("x" * 20, fail_with="CUDA error: out of memory")
    async with running_worker(queue, engine, settings):
        sub = await queue.submit(question())
        events = await collect_events(queue, sub.job_id)
    starts = [e.attempt for e in events if e.type == "start"]
    assert starts == [1, 2, 3]
    assert events[-1].type == "error"
    assert events[-1].code == "dead_letter"
    assert "out of memory" in (events[-1].message or "")
    dead = cast(list[tuple[str, dict[str, str]]], await queue.redis.xrange(queue.keys.dlq))
    assert len(dead) == 1
    assert dead[0][1]["job_id"] == sub.job_id
    assert "out of memory" in dead[0][1]["error"]
    assert (await queue.job(sub.job_id)).state == "failed"


async def test_a_job_whose_workers_keep_dying_before_writing_is_given_up_at_start(
    queue: JobQueue, settings: Settings
) -> None:
    sub = await queue.submit(question())
    claimed = await queue.claim("ghost-1", 1, block_seconds=0.5)
    for death in range(2, settings.queue.max_attempts + 2):
        await asyncio.sleep(settings.queue.claim_idle_seconds + 0.1)  # the last one's entry is idle: taken over
        claimed = await queue.claim(f"ghost-{death}", 1, block_seconds=0.5)
    assert claimed == []  # the last takeover gave the job up instead of starting it
    events = await queue.output(sub.job_id)
    assert [e.attempt for e in events if e.type == "start"] == list(range(1, settings.queue.max_attempts + 1))
    last = events[-1]
    assert (last.type, last.code, last.attempt) == ("error", ErrorCode.DEAD_LETTER, settings.queue.max_attempts)
    assert last.message == "its worker died before it wrote anything"
    record = await queue.job(sub.job_id)
    assert (record.state, record.dead_lettered) == ("failed", True)
    assert await queue.redis.xlen(queue.keys.dlq) == 1


def test_events_round_trip_through_their_stream_fields() -> None:
    done = Event(type="done", finish_reason="stop", usage={"prompt_tokens": 3, "completion_tokens": 5})
    assert Event.decode("1-0", dict(zip(("type", "data"), done.encode(), strict=True))) == done.model_copy(
        update={"id": "1-0"}
    )
    error = Event(type="error", code=ErrorCode.ENGINE_ERROR, message="답변 실패", attempt=2)
    fields = {**dict(zip(("type", "data"), error.encode(), strict=True)), "attempt": "2"}  # a script stamps it
    assert "attempt" not in error.encode().data
    assert Event.decode("2-0", fields) == error.model_copy(update={"id": "2-0"})
    legacy = {"type": "start", "data": '{"attempt": 4}'}  # written before the attempt became a field of its own
    assert Event.decode("3-0", legacy).attempt == 4


async def test_a_prompt_that_cannot_fit_fails_once_with_its_reason(queue: JobQueue, settings: Settings) -> None:
    tight = settings.model_copy(update={"model": settings.model.model_copy(update={"max_prompt_tokens": 20})})
    async with running_worker(queue, ScriptedEngine(), tight):
        sub = await queue.submit(question("아주 긴 질문입니다 " * 20))
        events = await collect_events(queue, sub.job_id)
    assert [e.type for e in events] == ["start", "error"]
    assert events[-1].code == "prompt_too_long"


def _spawn_worker(prefix: str, name: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker_process", prefix, name, *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_a_killed_workers_job_is_finished_by_another(queue: JobQueue, settings: Settings, prefix: str) -> None:
    doomed = _spawn_worker(prefix, "doomed", "--delay", "0.05", "--chars", "200")
    try:
        sub = await queue.submit(question())

        async def answering() -> bool:
            return any(event.type == "delta" for event in await queue.output(sub.job_id))

        await eventually(answering)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        async with running_worker(queue, ScriptedEngine("두 번째 작업자의 답"), settings, name="rescuer"):
            events = await collect_events(queue, sub.job_id)
    finally:
        doomed.kill()
    assert [e.attempt for e in events if e.type == "start"] == [1, 2]
    after_restart = events[[e.type for e in events].index("start", 1) :]
    assert "".join(e.text for e in after_restart if e.type == "delta") == "두 번째 작업자의 답"
    assert events[-1].type == "done"
    assert (await queue.job(sub.job_id)).worker == "rescuer"


async def test_sigterm_drains_the_running_job(queue: JobQueue, prefix: str) -> None:
    worker = _spawn_worker(prefix, "draining", "--delay", "0.02", "--chars", "100")
    try:
        sub = await queue.submit(question())

        await until_running(queue, sub.job_id)
        worker.send_signal(signal.SIGTERM)
        events = await collect_events(queue, sub.job_id)
        assert worker.wait(20) == 0
    finally:
        worker.kill()
    assert events[-1].type == "done"
    assert "".join(e.text for e in events if e.type == "delta") == "가" * 100
    assert not await queue.presence.workers()


async def test_a_drain_deadline_hands_the_job_to_another_worker_first(
    queue: JobQueue, settings: Settings, prefix: str
) -> None:
    worker = _spawn_worker(prefix, "hasty", "--delay", "0.05", "--chars", "400", "--drain", "0.3")
    one_at_a_time = settings.model_copy(update={"worker": settings.worker.model_copy(update={"capacity": 1})})
    try:
        sub = await queue.submit(question())

        await until_running(queue, sub.job_id)
        later = await queue.submit(question("나중에 온 질문"))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        # Back at the head of the queue at once, ahead of the question that came while it ran.
        assert (await queue.position(sub.job_id), await queue.position(later.job_id)) == (0, 1)
        async with running_worker(queue, ScriptedEngine("이어받음"), one_at_a_time, name="next"):
            events = await collect_events(queue, sub.job_id)
            await collect_events(queue, later.job_id)
    finally:
        worker.kill()
    assert [e.attempt for e in events if e.type == "start"] == [1, 2]
    assert events[-1].type == "done"
    assert float((await queue.job(sub.job_id)).raw["started"]) < float((await queue.job(later.job_id)).raw["started"])


async def test_the_rate_limit_counts_per_user(redis_client: aioredis.Redis, settings: Settings) -> None:
    now = [60.0 * 28_333_333 + 30]  # half a minute into a clock minute, whenever the test runs
    queue = JobQueue(redis_client, settings.queue, clock=lambda: now[0])
    assert await queue.rate_limit("U1", 2) is None
    assert await queue.rate_limit("U1", 2) is None
    wait = await queue.rate_limit("U1", 2)
    assert wait is not None and 0 < wait <= 60
    assert await queue.rate_limit("U2", 2) is None
    assert await queue.rate_limit("U1", 0) is None
    assert wait == 30
    now[0] += wait  # the next minute counts afresh
    assert await queue.rate_limit("U1", 2) is None


async def test_redis_going_away_is_a_queue_error(settings: Settings) -> None:
    from komt_bot.errors import QueueError
    from komt_bot.queue import connect

    gone = load_settings(redis_url="redis://127.0.0.1:1/0", queue={"prefix": settings.queue.prefix})
    client = connect(gone)
    try:
        with pytest.raises(QueueError):
            await JobQueue(client, gone.queue).submit(question())
    finally:
        await client.aclose()


async def test_a_worker_recovers_when_redis_comes_back_empty(queue: JobQueue, settings: Settings) -> None:
    async with running_worker(queue, ScriptedEngine("다시 왔어요"), settings):
        await collect_events(queue, (await queue.submit(question("재시작 전"))).job_id)  # serving the stream
        await queue.redis.delete(queue.keys.jobs)  # what a Redis restart without persistence looks like
        sub = await queue.submit(question())
        events = await collect_events(queue, sub.job_id)
    assert "".join(e.text for e in events if e.type == "delta") == "다시 왔어요"


async def test_control_characters_never_reach_a_reader(queue: JobQueue, settings: Settings) -> None:
    async with running_worker(queue, ScriptedEngine("첫 줄\r덮어쓰기\x0b\x1b[2J끝\n\t다음"), settings):
        events = await collect_events(queue, (await queue.submit(question())).job_id)
    assert "".join(e.text for e in events if e.type == "delta") == "첫 줄덮어쓰기[2J끝\n\t다음"
