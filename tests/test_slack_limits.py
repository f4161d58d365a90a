"""Streaming within Slack's real limits: a fake Slack that enforces the documented tiers per method and workspace
(a 429 with ``Retry-After`` past them), and many answers at once in one workspace."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from komt_bot.dev.fakes.platform_limits import RateLimits, slack_tiers
from komt_bot.dev.fakes.slack import FakeSlack
from komt_bot.dev.fakes.slack_requests import event_body, feedback_values, message_event
from komt_bot.dev.fakes.slack_wire import BOT_USER, Message
from komt_bot.settings import Settings
from tests.fake_engine import ScriptedEngine
from tests.test_slack import ANSWER, final_reply, slack_stack, stack_settings

CONVERSATIONS = 50
CHANNELS = 10  # Slack limits posting per channel: a busy workspace spreads over channels


async def test_fifty_answers_at_once_in_one_workspace_are_all_shown_complete_with_few_429s(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    fake.limits = RateLimits(slack_tiers())
    engine = ScriptedEngine(ANSWER, piece_chars=8, delay=0.05, capacity=16)
    config = stack_settings(settings, fake, queue={"job_timeout_seconds": 240.0})
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        questions: list[Message] = []
        for i in range(CONVERSATIONS):
            channel = f"C0CHAN{i % CHANNELS}"
            question = fake.add_message(channel, f"<@{BOT_USER}> 질문 {i}", user=f"U0PERSON{i}")
            assert await s.deliver(event_body(message_event(question))) == 200
            questions.append(question)
        replies = await asyncio.gather(*(final_reply(fake, q.ts, channel=q.channel, timeout=180) for q in questions))
    assert replies == [ANSWER] * CONVERSATIONS  # every answer shown complete
    for question in questions:
        (last,) = fake.thread(question.channel, question.ts)[-1:]
        assert feedback_values(last), "the buttons under every finished answer"
    assert fake.limits.refused_share <= 0.05, (fake.limits.refused, fake.limits.allowed, fake.limits.refused_by_rule)
