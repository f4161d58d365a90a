"""Streaming within Discord's real limits: the fake Discord enforces per-route buckets per channel (about 5 per 5 s,
with Discord's ``X-RateLimit-*`` headers and 429s past them), and ten answers stream at once in one channel."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from komt_bot.dev.fakes.platform_limits import RateLimits, discord_buckets
from komt_bot.settings import Settings
from tests.fake_discord import World, running_bot
from tests.fake_engine import ScriptedEngine

ANSWER = "한 채널에서 열 개의 답변이 함께 스트리밍됩니다. 모두 끝까지 보여야 합니다. " * 2
CONVERSATIONS = 10


async def test_ten_answers_at_once_in_one_channel_stay_inside_its_bucket_and_all_finish(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = World()
    world.fake.limits = RateLimits(discord_buckets())
    engine = ScriptedEngine(ANSWER, piece_chars=6, delay=0.1, capacity=CONVERSATIONS)
    async with running_bot(world, settings, redis_client, engine) as bot:
        people = [world.fake.add_user(f"person{i}") for i in range(CONVERSATIONS)]  # each within their own rate
        questions = [
            await bot.fake.user_message(world.channel, person, f"질문 {i}", mention_bot=True)
            for i, person in enumerate(people)
        ]
        answers = await asyncio.gather(
            *(bot.fake.final_pieces(bot.fake.reply_of(q), ANSWER, timeout=90) for q in questions)
        )
    assert len(answers) == CONVERSATIONS  # each finished, reading the whole answer
    limits = world.fake.limits
    assert limits.refused_share <= 0.05, (limits.refused, limits.allowed, limits.refused_by_rule)
