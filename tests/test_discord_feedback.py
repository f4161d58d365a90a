"""👍/👎 under every finished Discord answer: real discord.py against the fake Discord, real Redis and worker."""

from __future__ import annotations

import redis.asyncio as aioredis

import tests.fake_discord  # noqa: F401  (first: imports discord.py without its audioop warning)
from komt_bot import messages
from komt_bot.metrics import Metrics
from komt_bot.queue.inspect import QueueAdmin
from komt_bot.settings import Settings
from tests.fake_discord import Json, RunningBot, World, buttons, running_bot
from tests.fake_engine import ScriptedEngine
from tests.test_discord_ask import job_of

ANSWER = "좋은 질문입니다. 김치는 한국의 대표적인 발효 음식입니다."


def custom_ids(message: Json) -> list[str]:
    return [b["custom_id"] for b in buttons(message)]


async def rate(bot: RunningBot, message: Json, person: Json, rating: str) -> str:
    """``person`` clicks 👍 or 👎 under ``message``; returns what they are told (privately)."""
    interaction = await bot.fake.click(int(message["id"]), person, button=["up", "down"].index(rating))
    token = interaction.payload["token"]
    await bot.fake.wait_for(lambda: interaction.responses, what="the click to be answered")
    (callback,) = [c for c in bot.fake.calls if c.path.endswith(f"/{token}/callback")]
    assert callback.body["type"] == 4 and callback.body["data"]["flags"] & 64, "acknowledged privately"
    return str(callback.body["data"]["content"])


async def test_a_finished_answer_carries_the_buttons_and_each_person_has_one_vote(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = World()
    metrics = Metrics()
    engine = ScriptedEngine(ANSWER, piece_chars=3, delay=0.05)
    async with running_bot(world, settings, redis_client, engine, metrics=metrics) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "김치가 뭐예요?", mention_bot=True)
        (answer,) = await bot.fake.final_pieces(bot.fake.reply_of(question), ANSWER)
        job_id = await job_of(bot.queue, question["id"])
        assert custom_ids(answer) == [f"komt:fb:up:{job_id}", f"komt:fb:down:{job_id}"]
        assert [b["emoji"]["name"] for b in buttons(answer)] == ["👍", "👎"]

        admin = QueueAdmin(bot.queue)
        assert await rate(bot, answer, world.bob, "down") == messages.FEEDBACK_THANKS
        assert (await admin.detail(job_id)).to_json()["feedback"] == {"up": 0, "down": 1}
        assert await rate(bot, answer, world.bob, "up") == messages.FEEDBACK_CHANGED
        assert await rate(bot, answer, world.alice, "up") == messages.FEEDBACK_THANKS
        assert (await admin.detail(job_id)).to_json()["feedback"] == {"up": 2, "down": 0}

        await redis_client.delete(bot.queue.keys.job(job_id))  # the job record expired
        assert await rate(bot, answer, world.alice, "down") == messages.FEEDBACK_EXPIRED
        assert custom_ids(bot.fake.messages[int(answer["id"])]) == custom_ids(answer)  # the answer is untouched
    sample = metrics.registry.get_sample_value
    assert sample("komt_feedback_total", {"platform": "discord", "rating": "down"}) == 1
    assert sample("komt_feedback_total", {"platform": "discord", "rating": "up"}) == 2


async def test_only_the_last_piece_of_an_answer_and_never_an_error_gets_the_buttons(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = World()
    long_answer = "가나다라마바사아자차카타파하 " * 180  # about 2,700 characters: two messages
    engine = ScriptedEngine(lambda prompt: "짧은 답" if "짧게" in prompt else long_answer, piece_chars=150, delay=0.02)
    async with running_bot(world, settings, redis_client, engine) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "길게 답해 줘", mention_bot=True)
        pieces = await bot.fake.final_pieces(bot.fake.reply_of(question), long_answer, timeout=30)
        assert len(pieces) >= 2
        assert [bool(custom_ids(p)) for p in pieces] == [False] * (len(pieces) - 1) + [True]

        interaction = await bot.fake.slash(world.channel, world.bob, "짧게")
        (answer,) = await bot.fake.final_pieces(bot.fake.original_of(interaction), "짧은 답")
        job_id = await job_of(bot.queue, interaction.payload["id"])
        assert custom_ids(answer) == [f"komt:fb:up:{job_id}", f"komt:fb:down:{job_id}"]  # on the /ask response

        empty = await bot.fake.user_message(world.channel, world.alice, "", mention_bot=True)
        (refusal,) = await bot.fake.final_pieces(bot.fake.reply_of(empty), messages.EMPTY)
        assert not custom_ids(refusal)
