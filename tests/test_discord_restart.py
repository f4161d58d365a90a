"""Replies that survive their adapter: a Discord bot stopped mid-answer hands its replies over, and the next bot
finishes each one in the messages already posted (real discord.py against the fake Discord, real Redis and worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

import tests.fake_discord  # noqa: F401  (first: imports discord.py without its audioop warning)
from komt_bot import messages
from komt_bot.jobs import job_id_for_key
from komt_bot.queue import JobQueue
from komt_bot.settings import DiscordSettings, Settings
from tests.fake_discord import FakeDiscord, Json, World, buttons
from tests.fake_engine import ScriptedEngine
from tests.helpers import eventually, running_worker

ANSWER = "다시 시작한 봇이 같은 메시지에 답변을 끝까지 씁니다. " * 4
LONG_ANSWER = ("긴 답변의 한 문장입니다. " * 400)[:5000]  # three messages, two of them posted before the restart
ADAPTER_LOGGERS = ("discord", "adapters", "komt_bot.chat")


@contextlib.asynccontextmanager
async def bot(fake: FakeDiscord, settings: Settings, queue: JobQueue) -> AsyncIterator[None]:
    """The real adapter (``serve``) on a fake that is already running; leaving stops it as a deploy does (the
    adapter's task is cancelled: its client closes)."""
    from adapters.discord import serve

    overrides = {"token": "fake-token", "api_url": fake.api_url, "gateway_url": fake.gateway_url}
    discord = DiscordSettings.model_validate({**settings.discord.model_dump(), **overrides})
    sessions = len(fake.sessions)
    task = asyncio.create_task(serve(settings.model_copy(update={"discord": discord}), queue), name="discord-adapter")
    try:
        await fake.wait_for(lambda: task.done() or len(fake.sessions) > sessions, what="the bot to connect")
        if task.done():
            task.result()  # the adapter stopped: raise what stopped it
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """A fake Discord that outlives the bots of a test."""
    world = World()
    await world.fake.start()
    try:
        yield world
    finally:
        await world.fake.close()


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test when the adapter only logged a failure."""
    yield None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(ADAPTER_LOGGERS)]
    assert not errors, [r.getMessage() for r in errors]


def gated(answer: str, piece_chars: int) -> tuple[ScriptedEngine, asyncio.Event]:
    """An engine whose answers wait after their first piece until the gate is set."""
    gate = asyncio.Event()
    return ScriptedEngine(answer, piece_chars=piece_chars, delay=0.05, gate=gate), gate


async def saved_messages(queue: JobQueue, job_id: str, count: int) -> None:
    """Wait until the reply's delivery record holds ``count`` messages."""

    async def saved() -> bool:
        record = await queue.delivery(job_id)
        return record is not None and len(record.messages) == count

    await eventually(saved, timeout=10)


async def finished_cleanly(queue: JobQueue, job_id: str) -> None:
    """The job ran to its end (a cancelled one ends "cancelled"), and its delivery record is gone."""

    async def ended() -> bool:
        return await queue.delivery(job_id) is None

    await eventually(ended, timeout=10)
    assert (await queue.job(job_id)).state == "done"


def feedback_buttons(message: Json) -> list[str]:
    return [b["custom_id"] for b in buttons(message) if b["custom_id"].startswith("komt:fb:")]


async def test_a_mention_reply_is_finished_in_its_messages_by_the_next_bot(
    world: World, settings: Settings, redis_client: aioredis.Redis, no_errors: None
) -> None:
    fake, queue = world.fake, JobQueue(redis_client, settings.queue)
    engine, gate = gated(LONG_ANSWER, 2500)
    async with running_worker(queue, engine, settings):
        try:
            async with bot(fake, settings, queue):
                question = await fake.user_message(world.channel, world.alice, "길게", mention_bot=True)
                job_id = job_id_for_key(f"discord:{question['id']}")
                head = fake.reply_of(question)
                await fake.wait_for(lambda: (h := head()) and len(fake.pieces_from(h)) == 2, what="two messages")
                await saved_messages(queue, job_id, 2)
                before = [m["id"] for m in fake.by_bot()]
            record = await queue.delivery(job_id)
            assert record is not None and record.owner == ""  # handed over, not cancelled
            assert (await queue.job(job_id)).state == "running"

            async with bot(fake, settings, queue):
                gate.set()
                pieces = await fake.final_pieces(head, LONG_ANSWER)
                await finished_cleanly(queue, job_id)
        finally:
            gate.set()

    assert [p["id"] for p in pieces[:2]] == before  # the same messages, edited
    assert len(pieces) == 3 and len(fake.by_bot()) == 3  # no answer posted a second time
    assert feedback_buttons(pieces[-1]) and not any(feedback_buttons(p) for p in pieces[:-1])


async def test_an_ask_reply_is_finished_in_its_response_by_the_next_bot(
    world: World, settings: Settings, redis_client: aioredis.Redis, no_errors: None
) -> None:
    fake, queue = world.fake, JobQueue(redis_client, settings.queue)
    engine, gate = gated(ANSWER, 8)
    async with running_worker(queue, engine, settings):
        try:
            async with bot(fake, settings, queue):
                interaction = await fake.slash(world.channel, world.alice, "질문")
                job_id = job_id_for_key(f"discord:{interaction.payload['id']}")
                original = fake.original_of(interaction)
                await fake.wait_for(fake.answering(original, ANSWER), what="the answer to start")
                await saved_messages(queue, job_id, 1)
            assert (await queue.job(job_id)).state == "running"

            async with bot(fake, settings, queue):
                gate.set()
                pieces = await fake.final_pieces(original, ANSWER)
                await finished_cleanly(queue, job_id)
        finally:
            gate.set()

    assert [p["id"] for p in pieces] == [str(interaction.original)]
    assert len(fake.by_bot()) == 1 and feedback_buttons(pieces[0])
    token = interaction.payload["token"]
    assert [c.method for c in fake.calls if token in c.path and c.method == "POST"] == ["POST"]  # the deferral only


async def test_a_job_that_ended_while_no_bot_ran_is_shown_at_once(
    world: World, settings: Settings, redis_client: aioredis.Redis, no_errors: None
) -> None:
    fake, queue = world.fake, JobQueue(redis_client, settings.queue)
    engine, gate = gated(ANSWER, 8)
    async with running_worker(queue, engine, settings):
        try:
            async with bot(fake, settings, queue):
                question = await fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
                job_id = job_id_for_key(f"discord:{question['id']}")
                head = fake.reply_of(question)
                await fake.wait_for(fake.answering(head, ANSWER), what="the answer to start")
                await saved_messages(queue, job_id, 1)
        finally:
            gate.set()

        async def done() -> bool:
            return (await queue.job(job_id)).state == "done"

        await eventually(done, timeout=10)
        assert not fake.is_final(head() or {})  # nobody showed the end yet
        started = time.monotonic()
        async with bot(fake, settings, queue):
            [piece] = await fake.final_pieces(head, ANSWER, timeout=5)
            await finished_cleanly(queue, job_id)
        assert time.monotonic() - started < 5
    assert feedback_buttons(piece) and len(fake.by_bot()) == 1


async def test_a_reply_message_a_person_deleted_is_dropped_quietly(
    world: World, settings: Settings, redis_client: aioredis.Redis, no_errors: None
) -> None:
    fake, queue = world.fake, JobQueue(redis_client, settings.queue)
    engine, gate = gated(ANSWER, 8)
    async with running_worker(queue, engine, settings):
        try:
            async with bot(fake, settings, queue):
                question = await fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
                job_id = job_id_for_key(f"discord:{question['id']}")
                reply = await fake.wait_for(fake.answering(fake.reply_of(question), ANSWER), what="the answer")
                await saved_messages(queue, job_id, 1)
            del fake.messages[int(reply["id"])]  # a person deletes the reply while no bot runs
            await fake.dispatch("MESSAGE_DELETE", {"id": reply["id"], "channel_id": str(world.channel)})

            async with bot(fake, settings, queue):
                gate.set()
                await finished_cleanly(queue, job_id)
        finally:
            gate.set()

    assert fake.by_bot() == []  # nothing posted again
    gone = [c for c in fake.calls if c.path.endswith(f"/messages/{reply['id']}") and c.method == "PATCH"]
    assert gone and gone[-1].status == 404  # tried once after the restart, then left alone


async def test_an_ask_reply_resumed_past_its_token_continues_in_the_channel(
    world: World, settings: Settings, redis_client: aioredis.Redis, no_errors: None
) -> None:
    fake, queue = world.fake, JobQueue(redis_client, settings.queue)
    engine, gate = gated(ANSWER, 8)
    async with running_worker(queue, engine, settings):
        try:
            async with bot(fake, settings, queue):
                # 13 min 57 s old: the token is given up (a minute early) three seconds from now.
                created = time.time() - 837
                interaction = await fake.slash(world.channel, world.alice, "질문", created_at=created)
                job_id = job_id_for_key(f"discord:{interaction.payload['id']}")
                original = fake.original_of(interaction)
                await fake.wait_for(fake.answering(original, ANSWER), what="the answer to start")
                await saved_messages(queue, job_id, 1)
            await asyncio.sleep(max(0.0, created + 840.2 - time.time()))  # resumed past the token's use

            async with bot(fake, settings, queue):
                gate.set()
                [continued] = await fake.final_pieces(continuation(fake, original), ANSWER)
                await finished_cleanly(queue, job_id)
        finally:
            gate.set()

    pointer = original() or {}
    assert pointer["content"] == messages.CONTINUED and pointer["components"] == []
    assert feedback_buttons(continued) and len(fake.by_bot()) == 2


def continuation(fake: FakeDiscord, original: Callable[[], Json | None]) -> Callable[[], Json | None]:
    """A check: the channel message an answer moved to from its interaction's response."""

    def check() -> Json | None:
        head = original()
        replies = fake.replies_to(head["id"]) if head else []
        return replies[0] if replies else None

    return check
