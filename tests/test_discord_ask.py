"""``/ask``: deferred at once, streamed into the original response, continued past the 15-minute token."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import tests.fake_discord  # noqa: F401  (first: imports discord.py without its audioop warning)
from komt_bot import messages
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from tests.fake_discord import Call, Json, World, running_bot
from tests.fake_engine import ScriptedEngine
from tests.helpers import collect_events, eventually

SLOW_ANSWER = "가나다라마바사아자차카타파하" * 8  # streamed over about three seconds below


async def job_of(queue: JobQueue, origin_id: str) -> str:
    """The job a message or interaction made (its idempotency record)."""
    key = queue.keys.idempotency(f"discord:{origin_id}")

    async def lookup() -> str:
        value = await queue.redis.get(key)
        return str(value) if value else ""

    return await eventually(lookup, timeout=10)


def assert_edits_spaced(edits: list[Call]) -> None:
    """At most one intermediate edit a second per message (a little slack for the clocks): the first words replace
    the placeholder, and the final text goes out, as soon as the budget allows."""
    gaps = [later.at - earlier.at for earlier, later in pairwise(edits[1:-1])]
    assert all(gap >= 0.95 for gap in gaps), gaps


async def test_ask_is_deferred_then_streamed_into_the_original(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = World()
    engine = ScriptedEngine(SLOW_ANSWER, piece_chars=2, delay=0.05)
    async with running_bot(world, settings, redis_client, engine) as bot:
        interaction = await bot.fake.slash(world.channel, world.alice, "천천히 답해 줘")
        token = interaction.payload["token"]
        pieces = await bot.fake.final_pieces(bot.fake.original_of(interaction), SLOW_ANSWER)

        assert len(pieces) == 1
        calls = [c for c in bot.fake.calls if token in c.path]
        assert calls[0].path.endswith("/callback") and calls[0].body["type"] == 5  # "thinking", before anything else
        job = await bot.queue.job(await job_of(bot.queue, interaction.payload["id"]))
        assert calls[0].wall <= (job.created or 0.0)  # deferred before the job even existed
        edits = bot.fake.edits_of(interaction.original or 0)
        assert len(edits) >= 3
        assert_edits_spaced(edits)
        assert edits[1].body["components"], "the Stop button shows while the answer is written"
        final = [b["custom_id"] for row in edits[-1].body["components"] for b in row["components"]]
        assert not any(custom_id.startswith("komt:stop:") for custom_id in final), "no Stop button once it is done"
        assert "global" in bot.fake.commands  # synced globally without KOMT_DISCORD__GUILD_IDS


async def test_ask_with_the_tiny_model_ends_as_the_whole_answer(
    settings: Settings, redis_client: aioredis.Redis, tiny_model_dir: Path
) -> None:
    try:
        from komt_bot.engine import load_engine
    except ImportError as e:  # pragma: no cover - the engine is written by another part of the project
        pytest.skip(f"the engine is not available: {e}")
    settings.model.base = str(tiny_model_dir / "base")
    settings.model.adapter = str(tiny_model_dir / "lora")
    settings.model.quantization = "none"
    settings.generation.max_new_tokens = 120
    engine = load_engine(settings.model, settings.generation)
    world = World()
    try:
        async with running_bot(world, settings, redis_client, engine, guild_ids=[world.guild]) as bot:
            interaction = await bot.fake.slash(world.channel, world.alice, "안녕하세요, 자기소개 해 주세요")
            events = await collect_events(bot.queue, await job_of(bot.queue, interaction.payload["id"]))
            answer = "".join(e.text for e in events if e.type == "delta")
            done = events[-1]
            expected = answer if answer.strip() else messages.EMPTY_ANSWER
            if done.finish_reason == "length":
                expected = f"{expected}\n\n{messages.TRUNCATED}"
            pieces = await bot.fake.final_pieces(bot.fake.original_of(interaction), expected)

            calls = [c for c in bot.fake.calls if interaction.payload["token"] in c.path]
            assert calls[0].body["type"] == 5
            assert interaction.original is not None and pieces[0]["id"] == str(interaction.original)
            assert_edits_spaced(bot.fake.edits_of(interaction.original))
            assert list(bot.fake.commands) == [str(world.guild)]  # KOMT_DISCORD__GUILD_IDS: synced to the guild only
    finally:
        await engine.close()


async def test_answer_past_the_token_lifetime_continues_as_a_message(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = World()
    engine = ScriptedEngine(SLOW_ANSWER, piece_chars=2, delay=0.05)
    async with running_bot(world, settings, redis_client, engine) as bot:
        # 13 min 58 s old: the adapter moves off the token (one minute early) about a second into the answer.
        interaction = await bot.fake.slash(world.channel, world.alice, "오래 걸리는 질문", created_at=time.time() - 838)

        def continued() -> Json | None:
            head = bot.fake.original_of(interaction)()
            replies = bot.fake.replies_to(head["id"]) if head else []
            return replies[0] if replies else None

        await bot.fake.final_pieces(continued, SLOW_ANSWER)
        pointer = bot.fake.original_of(interaction)() or {}
        assert pointer["content"] == messages.CONTINUED and pointer["components"] == []


async def test_long_ask_answer_continues_in_channel_messages(settings: Settings, redis_client: aioredis.Redis) -> None:
    long_answer = ("첫 줄입니다.\n" * 800)[:5000]
    world = World()
    async with running_bot(world, settings, redis_client, ScriptedEngine(long_answer, piece_chars=250)) as bot:
        interaction = await bot.fake.slash(world.channel, world.alice, "길게")
        pieces = await bot.fake.final_pieces(bot.fake.original_of(interaction), long_answer)

        assert len(pieces) == 3
        assert all(len(p["content"]) <= 2000 and p["content"].endswith("\n") for p in pieces[:-1])
        assert [p["type"] for p in pieces] == [20, 19, 19]  # the original response, then replies in the channel


async def test_reply_to_an_ask_answer_carries_its_question(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    engine = ScriptedEngine(lambda prompt: "후속 답" if "첫 답" in prompt else "첫 답")
    async with running_bot(world, settings, redis_client, engine) as bot:
        interaction = await bot.fake.slash(world.channel, world.alice, "슬래시 질문")
        [answer] = await bot.fake.final_pieces(bot.fake.original_of(interaction), "첫 답")
        follow_up = await bot.fake.user_message(world.channel, world.alice, "이어서", reply_to=int(answer["id"]))
        await bot.fake.final_pieces(bot.fake.reply_of(follow_up), "후속 답")

    assert engine.prompts[-1] == (
        "### instruction: 슬래시 질문\n\n### Response: 첫 답\n\n### instruction: 이어서\n\n### Response: "
    )


async def test_a_429_is_waited_out_and_the_answer_completes(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    async with running_bot(world, settings, redis_client, ScriptedEngine(SLOW_ANSWER, piece_chars=20)) as bot:
        # The answer edits its deferred response through the interaction's webhook, by the message's id.
        bot.fake.fail_next("PATCH", r"/webhooks/\d+/[^/]+/messages/(@original|\d+)", retry_after=0.3)
        interaction = await bot.fake.slash(world.channel, world.alice, "질문")
        await bot.fake.final_pieces(bot.fake.original_of(interaction), SLOW_ANSWER)

        patches = [c for c in bot.fake.calls if c.method == "PATCH"]
        assert patches[0].status == 429
        assert patches[1].status == 200 and patches[1].at - patches[0].at >= 0.3  # retried after retry_after
