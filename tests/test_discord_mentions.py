"""Mentions, DMs, reply chains and threads: the real discord.py client against the fake Discord."""

from __future__ import annotations

import redis.asyncio as aioredis

from komt_bot.jobs import job_id_for_key
from komt_bot.metrics import Metrics
from komt_bot.settings import Settings
from tests.fake_discord import Json, World, running_bot
from tests.fake_engine import ScriptedEngine

ANSWER = "안녕하세요! 저는 komt입니다."


async def test_mention_gets_a_streamed_reply_with_a_stop_button(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = World()
    engine = ScriptedEngine(ANSWER)
    metrics = Metrics()
    async with running_bot(world, settings, redis_client, engine, metrics=metrics) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "안녕?", mention_bot=True)
        pieces = await bot.fake.final_pieces(bot.fake.reply_of(question), ANSWER)

        assert len(pieces) == 1
        assert engine.prompts[-1].endswith("### instruction: 안녕?\n\n### Response: ")
        post = next(c for c in bot.fake.calls if c.method == "POST" and c.path == f"/channels/{world.channel}/messages")
        assert post.body["content"].startswith("⏳")  # the queue placeholder came first, with the Stop button
        job_id = job_id_for_key(f"discord:{question['id']}")  # the job this question makes, known before submitting
        assert post.body["components"][0]["components"][0]["custom_id"] == f"komt:stop:{job_id}"
        assert post.body["allowed_mentions"]["parse"] == []  # a model's answer never pings anyone

    sample = metrics.registry.get_sample_value
    assert sample("komt_requests_total", {"platform": "discord", "result": "done"}) == 1
    assert (sample("komt_platform_edits_total", {"platform": "discord"}) or 0) >= 2


async def test_reply_to_the_answer_carries_the_conversation(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    engine = ScriptedEngine(lambda prompt: "두 번째 답" if "첫 번째 답" in prompt else "첫 번째 답")
    async with running_bot(world, settings, redis_client, engine) as bot:
        first = await bot.fake.user_message(world.channel, world.alice, "첫 질문", mention_bot=True)
        [answer] = await bot.fake.final_pieces(bot.fake.reply_of(first), "첫 번째 답")

        follow_up = await bot.fake.user_message(world.channel, world.alice, "그래서?", reply_to=int(answer["id"]))
        await bot.fake.final_pieces(bot.fake.reply_of(follow_up), "두 번째 답")

    assert engine.prompts[-1] == (
        "### instruction: 첫 질문\n\n### Response: 첫 번째 답\n\n### instruction: 그래서?\n\n### Response: "
    )


async def test_long_answer_is_split_and_read_back_whole(settings: Settings, redis_client: aioredis.Redis) -> None:
    sentence = "한국어 문장은 여기서 끝납니다. "
    long_answer = (sentence * (5000 // len(sentence) + 1))[:5000]
    engine = ScriptedEngine(lambda prompt: "네." if "### Response: 한국어" in prompt else long_answer, piece_chars=100)
    settings.model.max_prompt_tokens = 8000  # the scripted engine counts characters as tokens
    world = World()
    async with running_bot(world, settings, redis_client, engine) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "길게 써 줘", mention_bot=True)
        pieces = await bot.fake.final_pieces(bot.fake.reply_of(question), long_answer)

        assert len(pieces) == 3
        assert all(len(p["content"]) <= 2000 for p in pieces)
        assert all(p["content"].endswith(". ") for p in pieces[:-1])  # cut on a sentence boundary
        for call in bot.fake.calls:
            if isinstance(call.body, dict) and "content" in call.body:
                assert len(call.body["content"]) <= 2000, "every message ever sent fits Discord's limit"

        follow_up = await bot.fake.user_message(world.channel, world.alice, "요약?", reply_to=int(pieces[-1]["id"]))
        await bot.fake.final_pieces(bot.fake.reply_of(follow_up), "네.")

    assert f"### Response: {long_answer.strip()}\n\n### instruction: 요약?" in engine.prompts[-1]


async def test_reply_in_a_new_thread_and_thread_history(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    engine = ScriptedEngine(lambda prompt: "B" if "### Response: A" in prompt else "A")
    async with running_bot(world, settings, redis_client, engine, reply_in_thread=True) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "스레드에서 답해 줘", mention_bot=True)
        thread = int(question["id"])  # a thread started from a message has the message's id

        def in_thread() -> Json | None:
            found = bot.fake.by_bot(thread)
            return found[0] if found else None

        await bot.fake.final_pieces(in_thread, "A")
        assert bot.fake.channels[thread]["name"] == "스레드에서 답해 줘"
        assert not bot.fake.replies_to(question["id"])  # nothing in the channel itself

        # With the message-content intent a message in the bot's thread needs no mention.
        follow_up = await bot.fake.user_message(thread, world.alice, "더 자세히")
        await bot.fake.final_pieces(bot.fake.reply_of(follow_up), "B")

    assert engine.prompts[-1] == (
        "### instruction: 스레드에서 답해 줘\n\n### Response: A\n\n### instruction: 더 자세히\n\n### Response: "
    )


async def test_direct_message_is_answered(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    dm = world.fake.add_dm(world.alice)
    async with running_bot(world, settings, redis_client, ScriptedEngine(ANSWER)) as bot:
        question = await bot.fake.user_message(dm, world.alice, "DM 질문")
        await bot.fake.final_pieces(bot.fake.reply_of(question), ANSWER)


async def test_works_without_the_message_content_intent(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World(message_content_granted=False)
    engine = ScriptedEngine(lambda prompt: "둘" if "### Response: 하나" in prompt else "하나")
    async with running_bot(world, settings, redis_client, engine) as bot:
        first = await bot.fake.user_message(world.channel, world.alice, "첫 질문", mention_bot=True)
        [answer] = await bot.fake.final_pieces(bot.fake.reply_of(first), "하나")
        # Chatter that does not mention the bot arrives without content and is left alone.
        await bot.fake.user_message(world.channel, world.bob, "잡담")
        # A reply to the bot pings it, so its content is visible and the chain is readable.
        follow_up = await bot.fake.user_message(world.channel, world.alice, "다음", reply_to=int(answer["id"]))
        await bot.fake.final_pieces(bot.fake.reply_of(follow_up), "둘")

    assert [i["intents"] & (1 << 15) for i in bot.fake.identifies] == [1 << 15, 0]  # asked, refused, fell back
    assert len(engine.prompts) == 2
    assert "### Response: 하나" in engine.prompts[-1]
