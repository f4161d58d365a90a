"""Stop, allow-lists, DMs off, rate limit, busy, bad questions and failures: each reaches the person."""

from __future__ import annotations

import socket
import time

import redis.asyncio as aioredis

from komt_bot import messages
from komt_bot.jobs import job_id_for_key
from komt_bot.metrics import Metrics
from komt_bot.settings import Settings
from tests.fake_discord import Json, RunningBot, World, buttons, running_bot
from tests.fake_engine import ScriptedEngine

SLOW_ANSWER = "천천히 쓰는 답변입니다. " * 10


async def reply_to(bot: RunningBot, question: Json, expected: str) -> None:
    """Wait until the bot's reply to ``question`` reads ``expected`` and is finished."""
    await bot.fake.final_pieces(bot.fake.reply_of(question), expected)


def ephemeral(bot: RunningBot, token: str) -> str | None:
    """The text of a private (ephemeral) answer to an interaction."""
    for call in bot.fake.calls:
        if call.path.endswith(f"/{token}/callback") and call.body["type"] == 4:
            assert call.body["data"]["flags"] & 64, "refusals are private"
            return str(call.body["data"]["content"])
    return None


async def job_state(bot: RunningBot, origin_id: str) -> str:
    job_id = await bot.queue.redis.get(bot.queue.keys.idempotency(f"discord:{origin_id}"))
    return (await bot.queue.job(str(job_id))).state


async def test_stop_a_running_answer(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    engine = ScriptedEngine(SLOW_ANSWER, piece_chars=2, delay=0.05)
    async with running_bot(world, settings, redis_client, engine) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "길게", mention_bot=True)
        head = bot.fake.reply_of(question)

        def stopped() -> Json | None:
            reply = head()
            return reply if reply and reply["content"].endswith(messages.STOPPED) else None

        reply = await bot.fake.wait_for(bot.fake.answering(head, SLOW_ANSWER), what="the answer to start")
        click = await bot.fake.click(int(reply["id"]), world.alice)
        final = await bot.fake.wait_for(stopped, what="the answer to stop")
        assert bot.fake.is_final(final)
        assert SLOW_ANSWER.startswith(final["content"].removesuffix("\n\n" + messages.STOPPED))
        assert click.responses == [6]  # acknowledged silently: the reply itself says "stopped"
        assert await job_state(bot, question["id"]) == "cancelled"
        assert engine.cancelled


async def test_a_stop_on_a_redelivered_messages_reply_stops_its_one_job(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    world = World()
    metrics = Metrics()
    engine = ScriptedEngine(SLOW_ANSWER, piece_chars=2, delay=0.05)
    async with running_bot(world, settings, redis_client, engine, metrics=metrics) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "길게", mention_bot=True)
        await bot.fake.dispatch("MESSAGE_CREATE", bot.fake.public(question))  # the gateway delivers it again
        head = bot.fake.reply_of(question)
        reply = await bot.fake.wait_for(bot.fake.answering(head, SLOW_ANSWER), what="the answer to start")
        job_id = job_id_for_key(f"discord:{question['id']}")
        assert [b["custom_id"] for b in buttons(reply)] == [f"komt:stop:{job_id}"]  # known before submitting

        click = await bot.fake.click(int(reply["id"]), world.alice)
        final = await bot.fake.wait_for(
            lambda: (r := head()) and r["content"].endswith(messages.STOPPED) and r, what="the answer to stop"
        )
        assert bot.fake.is_final(final)
        assert click.responses == [6]
        assert (await bot.queue.job(job_id)).state == "cancelled"
        assert engine.cancelled == [job_id]
        assert await bot.queue.redis.zcard(bot.queue.keys.index) == 1
        assert len(bot.fake.replies_to(question["id"])) == 1
    counted = metrics.registry.get_sample_value
    assert counted("komt_requests_total", {"platform": "discord", "result": "duplicate"}) == 1  # it found the job
    assert counted("komt_requests_total", {"platform": "discord", "result": "cancelled"}) == 1


async def test_stop_a_queued_question(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    async with running_bot(world, settings, redis_client, ScriptedEngine(), worker=False) as bot:
        interaction = await bot.fake.slash(world.channel, world.alice, "대기 중인 질문")
        original = bot.fake.original_of(interaction)
        placeholder = await bot.fake.wait_for(
            lambda: (m := original()) and m["components"] and m, what="the queue placeholder"
        )
        assert placeholder["content"].startswith("⏳")
        await bot.fake.click(int(placeholder["id"]), world.alice)

        await bot.fake.final_pieces(original, messages.STOPPED)
        assert await job_state(bot, interaction.payload["id"]) == "cancelled"


async def test_stop_is_refused_to_others_but_not_to_admins(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    async with running_bot(
        world, settings, redis_client, ScriptedEngine(), worker=False, admin_roles=[world.admin_role]
    ) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
        reply = await bot.fake.wait_for(lambda: bot.fake.first_reply(question), what="the placeholder")

        refused = await bot.fake.click(int(reply["id"]), world.bob)
        await bot.fake.wait_for(lambda: ephemeral(bot, refused.payload["token"]), what="the refusal")
        assert ephemeral(bot, refused.payload["token"]) == messages.STOP_REFUSED
        assert await job_state(bot, question["id"]) == "queued"

        await bot.fake.click(int(reply["id"]), world.bob, roles=(world.admin_role,))
        await reply_to(bot, question, messages.STOPPED)


async def test_allow_lists(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    elsewhere = world.fake.add_channel(world.guild, "elsewhere")
    member = (world.member_role,)
    async with running_bot(
        world,
        settings,
        redis_client,
        ScriptedEngine("좋아요"),
        allowed_channels=[world.channel],
        allowed_roles=[world.member_role],
    ) as bot:
        no_role = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
        wrong_channel = await bot.fake.user_message(elsewhere, world.alice, "질문", mention_bot=True, roles=member)
        allowed = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True, roles=member)
        slash = await bot.fake.slash(world.channel, world.bob, "질문")

        await reply_to(bot, no_role, messages.NOT_ALLOWED)
        await reply_to(bot, wrong_channel, messages.NOT_ALLOWED)
        await reply_to(bot, allowed, "좋아요")
        assert await bot.fake.wait_for(lambda: ephemeral(bot, slash.payload["token"])) == messages.NOT_ALLOWED


async def test_guild_and_user_lists_and_dms_off(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    dm = world.fake.add_dm(world.alice)
    async with running_bot(
        world, settings, redis_client, ScriptedEngine(), allowed_guilds=[12345], allow_dms=False
    ) as bot:
        in_guild = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
        in_dm = await bot.fake.user_message(dm, world.alice, "DM 질문")
        slash_dm = await bot.fake.slash(dm, world.alice, "DM 질문")

        await reply_to(bot, in_guild, messages.NOT_ALLOWED)
        await reply_to(bot, in_dm, messages.DMS_OFF)
        assert await bot.fake.wait_for(lambda: ephemeral(bot, slash_dm.payload["token"])) == messages.DMS_OFF


async def test_users_list(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    bob_id = int(world.bob["id"])
    async with running_bot(world, settings, redis_client, ScriptedEngine("네"), allowed_users=[bob_id]) as bot:
        alice = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
        bob = await bot.fake.user_message(world.channel, world.bob, "질문", mention_bot=True)
        await reply_to(bot, alice, messages.NOT_ALLOWED)
        await reply_to(bot, bob, "네")


async def test_rate_limit(settings: Settings, redis_client: aioredis.Redis) -> None:
    settings.limits.rate_limit_per_minute = 1
    world = World()
    async with running_bot(world, settings, redis_client, ScriptedEngine("한 번")) as bot:
        # A clock that runs on, one second into a minute: both questions always count in the same minute.
        offset = 1 - time.time() % 60
        bot.queue.clock = lambda: time.time() + offset
        first = await bot.fake.user_message(world.channel, world.alice, "하나", mention_bot=True)
        await reply_to(bot, first, "한 번")
        second = await bot.fake.user_message(world.channel, world.alice, "둘", mention_bot=True)
        limited = await bot.fake.wait_for(lambda: bot.fake.first_reply(second), what="the rate-limit reply")
        assert limited["content"].startswith("🐢") and "/ too many requests" in limited["content"]


async def test_busy_when_the_backlog_is_full(settings: Settings, redis_client: aioredis.Redis) -> None:
    settings.queue.max_backlog = 1
    world = World()
    async with running_bot(world, settings, redis_client, ScriptedEngine(), worker=False) as bot:
        waiting = await bot.fake.user_message(world.channel, world.alice, "하나", mention_bot=True)
        await bot.fake.wait_for(lambda: bot.fake.first_reply(waiting), what="the first question to queue")
        refused = await bot.fake.user_message(world.channel, world.bob, "둘", mention_bot=True)
        await reply_to(bot, refused, messages.BUSY)


async def test_empty_and_too_long_questions(settings: Settings, redis_client: aioredis.Redis) -> None:
    settings.limits.max_question_chars = 20
    world = World()
    async with running_bot(world, settings, redis_client, ScriptedEngine()) as bot:
        empty = await bot.fake.user_message(world.channel, world.alice, "", mention_bot=True)
        too_long = await bot.fake.user_message(world.channel, world.alice, "가" * 30, mention_bot=True)
        slash = await bot.fake.slash(world.channel, world.alice, "나" * 30)

        await reply_to(bot, empty, messages.EMPTY)
        await reply_to(bot, too_long, messages.too_long(30, 20))
        assert await bot.fake.wait_for(lambda: ephemeral(bot, slash.payload["token"])) == messages.too_long(30, 20)


async def test_a_failing_worker_is_reported(settings: Settings, redis_client: aioredis.Redis) -> None:
    world = World()
    async with running_bot(world, settings, redis_client, ScriptedEngine(fail_with="boom")) as bot:
        question = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
        await reply_to(bot, question, messages.failed("dead_letter", None))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_redis_down_is_reported(settings: Settings) -> None:
    settings.limits.rate_limit_per_minute = 0  # reach the submission itself
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", decode_responses=True)
    world = World()
    try:
        async with running_bot(world, settings, dead, ScriptedEngine(), worker=False) as bot:
            question = await bot.fake.user_message(world.channel, world.alice, "질문", mention_bot=True)
            interaction = await bot.fake.slash(world.channel, world.alice, "질문")
            await reply_to(bot, question, messages.QUEUE_DOWN)
            await bot.fake.final_pieces(bot.fake.original_of(interaction), messages.QUEUE_DOWN)
    finally:
        await dead.aclose()
