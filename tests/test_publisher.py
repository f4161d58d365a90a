"""The worker's publisher against the real Redis (one call per tick for every running job, first text at once), and
the attempt whose state it asks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis

from komt_bot.jobs import ClaimedJob, Event, JobRequest, Origin, Turn
from komt_bot.queue import JobQueue
from komt_bot.queue.working import TextPiece
from komt_bot.settings import Settings
from komt_bot.worker.attempt import Attempt, AttemptState
from komt_bot.worker.publisher import Publisher
from tests.fake_engine import ScriptedEngine
from tests.helpers import running_worker


def question(text: str) -> JobRequest:
    return JobRequest(conversation=[Turn(role="user", text=text)], origin=Origin(platform="test", channel="C1"))


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[JobQueue]:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    yield q


async def next_event(events: AsyncIterator[Event | None]) -> Event:
    async with asyncio.timeout(30):  # the tick it must not wait for is ten minutes
        async for event in events:
            if event is not None and event.type != "start":
                return event
    raise AssertionError("the job's events ended")


async def test_one_call_publishes_the_text_of_every_running_job(queue: JobQueue, redis_client: aioredis.Redis) -> None:
    for i in range(3):
        await queue.submit(question(f"질문 {i}"))
    jobs = await queue.claim("hand-worker", 3)
    attempts = [Attempt(job) for job in jobs]
    publisher = Publisher(queue, 60.0, lambda: attempts)
    for i, attempt in enumerate(attempts):
        attempt.add_text(f"{i}번째 답변의 앞부분")

    await publisher.publish_pending()

    assert publisher.calls == 1
    for i, job in enumerate(jobs):
        entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(queue.keys.out(job.job_id)))
        deltas = [Event.decode(entry_id, fields) for entry_id, fields in entries if fields["type"] == "delta"]
        assert [e.text for e in deltas] == [f"{i}번째 답변의 앞부분"]
    assert not any(attempt.is_lost for attempt in attempts)


async def test_an_answers_first_text_does_not_wait_for_the_coalescing_tick(queue: JobQueue, settings: Settings) -> None:
    """With a ten-minute tick, a second question's first words still arrive while both answers are being written."""
    slow_ticks = settings.model_copy(update={"worker": settings.worker.model_copy(update={"coalesce_ms": 600_000})})
    gate = asyncio.Event()
    engine = ScriptedEngine("첫마디, 그리고 나머지 이야기입니다.", piece_chars=4, delay=0.001, gate=gate)
    async with running_worker(queue, engine, slow_ticks):
        earlier = await queue.submit(question("먼저 온 질문"))
        earlier_events = queue.events(earlier.job_id, block_seconds=0.5)
        assert (await next_event(earlier_events)).text == "첫마디,"  # this tick has just been used
        later = await queue.submit(question("빨리 대답해 주세요"))
        events = queue.events(later.job_id, block_seconds=0.5)
        first = await next_event(events)
        assert (first.type, first.text) == ("delta", "첫마디,")
        gate.set()
        rest = [event async for event in events if event is not None]
        await earlier_events.aclose()
    assert "".join(e.text for e in rest if e.type == "delta") == " 그리고 나머지 이야기입니다."
    assert rest[-1].type == "done"


async def test_a_finishing_attempts_text_waits_for_its_end(queue: JobQueue) -> None:
    """Once an attempt writes its end, no tick takes its text: the end carries it, after what went out before."""
    await queue.submit(question("질문"))
    [job] = await queue.claim("hand-worker", 1)
    attempt = Attempt(job)
    publisher = Publisher(queue, 60.0, lambda: [attempt])
    assert attempt.add_text("첫")  # an answer's first text
    await publisher.publish_pending()
    assert not attempt.add_text("마지막")
    assert attempt.begin_finishing()
    await publisher.publish_pending()
    assert publisher.calls == 1
    assert attempt.take() == TextPiece(job, 2, "마지막")


def test_an_attempt_moves_one_way() -> None:
    job = ClaimedJob("j1", "1-0", 1, question("질문"))
    cancelled = Attempt(job)
    assert cancelled.request_cancel() and cancelled.cancel_requested and cancelled.publishing
    assert not cancelled.request_cancel()  # once is enough
    assert cancelled.begin_finishing() and cancelled.state == AttemptState.FINISHING
    assert not cancelled.mark_lost()  # a heartbeat that was on its way while it finished: not lost
    cancelled.end()
    assert not cancelled.mark_lost() and not cancelled.request_cancel()
    lost = Attempt(job)
    assert lost.mark_lost() and lost.is_lost and not lost.publishing
    assert not lost.begin_finishing()  # a lost attempt writes no end
    assert not lost.request_cancel()
    lost.end()
    assert lost.mark_lost()  # a heartbeat after its task was over still hears it was lost
    fenced = Attempt(job)
    assert fenced.begin_finishing()
    fenced.end(lost=True)  # its end was refused: another worker had the job
    assert fenced.is_lost
