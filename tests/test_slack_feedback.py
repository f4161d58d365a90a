"""👍/👎 under every finished Slack answer: real slack-bolt against the fake Slack, real Redis, a real worker."""

from __future__ import annotations

import redis.asyncio as aioredis

from komt_bot import messages
from komt_bot.dev.fakes.slack import FakeSlack
from komt_bot.dev.fakes.slack_requests import feedback_values
from komt_bot.dev.fakes.slack_wire import TEAM, Message
from komt_bot.metrics import Metrics
from komt_bot.queue.inspect import QueueAdmin
from komt_bot.settings import Settings
from tests.fake_engine import ScriptedEngine
from tests.test_slack import ANSWER, ASKER, CHANNEL, OTHER, Stack, slack_stack, stack_settings, until


async def job_of(s: Stack, question: Message) -> str:
    """The job a mention made."""
    return str(await s.queue.redis.get(s.queue.keys.idempotency(f"slack:{TEAM}:{CHANNEL}:{question.ts}")))


async def rate(s: Stack, message: Message, person: str, rating: str) -> str:
    """``person`` clicks 👍 or 👎 under ``message``; returns what they are told privately."""
    told = len(s.fake.calls_of("chat.postEphemeral"))
    action = {
        "type": "feedback_buttons",
        "action_id": "komt_feedback",
        "block_id": "feedback",
        "value": feedback_values(message)[rating],
        "action_ts": s.fake.new_ts(),
    }
    assert await s.block_action(message, person, action) == 200
    said = await until(lambda: s.fake.calls_of("chat.postEphemeral")[told:], what="a private acknowledgement")
    assert said[0].args["user"] == person and said[0].args["channel"] == CHANNEL
    return str(said[0].args["text"])


async def test_a_streamed_answer_ends_with_feedback_and_each_person_has_one_vote(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    metrics = Metrics()
    engine = ScriptedEngine(ANSWER, piece_chars=6, delay=0.05)
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine, metrics=metrics) as s:
        question = await s.mention("자기소개 해 주세요")
        assert await s.final_reply(question.ts) == ANSWER
        (answer,) = s.replies(question.ts)
        job_id = await job_of(s, question)
        assert feedback_values(answer) == {"up": f"up:{job_id}", "down": f"down:{job_id}"}
        stop = fake.calls_of("chat.stopStream")[-1]
        assert stop.args["blocks"][0]["type"] == "context_actions"  # rendered under the streamed message

        admin = QueueAdmin(s.queue)
        assert await rate(s, answer, OTHER, "down") == messages.FEEDBACK_THANKS
        assert (await admin.detail(job_id)).to_json()["feedback"] == {"up": 0, "down": 1}
        assert await rate(s, answer, OTHER, "up") == messages.FEEDBACK_CHANGED
        assert await rate(s, answer, ASKER, "up") == messages.FEEDBACK_THANKS
        assert await rate(s, answer, ASKER, "up") == messages.FEEDBACK_THANKS
        assert (await admin.detail(job_id)).to_json()["feedback"] == {"up": 2, "down": 0}

        await redis_client.delete(s.queue.keys.job(job_id))  # the job record expired
        assert await rate(s, answer, OTHER, "down") == messages.FEEDBACK_EXPIRED
    sample = metrics.registry.get_sample_value
    assert sample("komt_feedback_total", {"platform": "slack", "rating": "down"}) == 1
    assert sample("komt_feedback_total", {"platform": "slack", "rating": "up"}) == 2


async def test_only_the_last_message_of_an_answer_gets_the_buttons_and_never_a_notice(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    fake.fail("chat.startStream", "feature_not_enabled")  # chat.update throughout: buttons in the blocks
    long_answer = "김치는 배추를 소금에 절여 양념으로 버무린 한국의 발효 음식입니다. " * 40
    engine = ScriptedEngine(lambda prompt: "짧은 답" if "짧게" in prompt else long_answer, piece_chars=80, delay=0.05)
    config = stack_settings(settings, fake, slack={"max_message_bytes": 1000})
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        question = await s.mention("김치에 대해 길게 알려 주세요")
        assert await s.final_reply(question.ts, timeout=40) == long_answer
        replies = s.replies(question.ts)
        assert len(replies) >= 3
        assert [bool(feedback_values(m)) for m in replies] == [False] * (len(replies) - 1) + [True]
        assert feedback_values(replies[-1])["down"] == f"down:{await job_of(s, question)}"

        short = await s.mention("짧게")
        assert await s.final_reply(short.ts) == "짧은 답"
        assert feedback_values(s.replies(short.ts)[-1])

        empty = await s.mention(" ")
        assert await s.final_reply(empty.ts) == messages.EMPTY
        assert not any(m.blocks for m in s.replies(empty.ts))


async def test_errors_and_stopped_answers_get_no_buttons(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake, queue={"max_attempts": 1})
    async with slack_stack(config, redis_client, fake) as s:  # no worker: the question waits until stopped
        waiting = await s.mention("대기 중에 멈출 질문")
        await until(lambda: s.placeholder(waiting.ts), what="the placeholder")
        await s.queue.cancel(await job_of(s, waiting))
        assert await s.final_reply(waiting.ts) == messages.STOPPED
        assert not any(m.blocks for m in s.replies(waiting.ts))

    engine = ScriptedEngine("안 보일 답", fail_with="CUDA out of memory")
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        failing = await s.mention("실패할 질문")
        assert await s.final_reply(failing.ts) == messages.failed("dead_letter", None)
        assert not any(m.blocks for m in s.replies(failing.ts))
