"""The connection: resuming after a dropped gateway, the adapter's heartbeat record, settings errors."""

from __future__ import annotations

import socket

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from komt_bot.errors import ConfigError, KomtError
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from tests.fake_discord import World, running_bot
from tests.fake_engine import ScriptedEngine
from tests.helpers import eventually, running_worker

SLOW_ANSWER = "연결이 끊겨도 답변은 이어집니다. " * 6


async def test_gateway_close_4000_resumes_and_the_answer_completes(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = World()
    engine = ScriptedEngine(lambda p: "다시 연결됨" if "그 후" in p else SLOW_ANSWER, piece_chars=3, delay=0.05)
    async with running_bot(world, settings, redis_client, engine) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
        first = bot.fake.reply_of(question)
        await bot.fake.wait_for(bot.fake.answering(first, SLOW_ANSWER), what="the answer to start")

        await bot.fake.disconnect(4000)
        await bot.fake.wait_for(lambda: bot.fake.resumes, what="a RESUME")
        await bot.fake.final_pieces(first, SLOW_ANSWER)

        after = await bot.fake.user_message(world.channel, world.alice, "그 후", mention_bot=True)
        await bot.fake.final_pieces(bot.fake.reply_of(after), "다시 연결됨")

    assert len(bot.fake.identifies) == 1  # resumed the session, no second IDENTIFY
    assert bot.fake.resumes[0]["session_id"] and bot.fake.resumes[0]["token"] == "fake-token"


async def test_a_restarted_job_resets_the_reply_instead_of_doubling_it(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    settings.worker.drain_seconds = 0  # a stopping worker hands its running job back at once
    world = World()
    long_answer = SLOW_ANSWER * 4  # ~8 s to write, so the first worker is surely stopped mid-answer
    engine = ScriptedEngine(long_answer, piece_chars=3, delay=0.05)
    async with running_bot(world, settings, redis_client, engine, worker=False) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
        first = bot.fake.reply_of(question)
        async with running_worker(bot.queue, engine, settings, name="first-worker"):
            await bot.fake.wait_for(bot.fake.answering(first, long_answer), what="some answer")
        async with running_worker(bot.queue, engine, settings, name="second-worker"):
            await bot.fake.final_pieces(first, long_answer)

        job_id = await bot.queue.redis.get(bot.queue.keys.idempotency(f"discord:{question['id']}"))
        assert (await bot.queue.job(str(job_id))).raw["attempt"] == "2"  # really restarted, and not doubled above
        assert len(engine.prompts) == 2


async def test_heartbeat_record_while_running(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    async with running_bot(world, settings, redis_client, ScriptedEngine(), worker=False) as bot:

        async def discord_record() -> list[dict[str, object]]:
            return [r.model_dump() for r in await bot.queue.presence.components() if r.component == "discord"]

        [record] = await eventually(discord_record, timeout=10)
        assert record["message_content"] is True and "ready" in record and "replies_in_progress" in record
    assert not await discord_record()  # removed on a clean stop


async def test_serve_without_a_token_is_a_config_error(settings: Settings, redis_client: aioredis.Redis) -> None:
    from adapters.discord import serve

    with pytest.raises(ConfigError, match="KOMT_DISCORD__TOKEN"):
        await serve(settings, JobQueue(redis_client, settings.queue))


async def test_unreachable_discord_is_a_readable_error(settings: Settings, redis_client: aioredis.Redis) -> None:
    from adapters.discord import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.discord.token = SecretStr("fake-token")
    settings.discord.api_url = f"http://127.0.0.1:{port}/api/v10"
    with pytest.raises(KomtError, match="cannot reach Discord"):
        await serve(settings, JobQueue(redis_client, settings.queue))
