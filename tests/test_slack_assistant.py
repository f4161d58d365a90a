"""Slack's AI-app surface end to end: assistant threads through Bolt's Assistant middleware, on the fake Slack.

Opening a thread offers the suggested prompts; a question there sets the thread's status at once (then its queue
position), streams the answer the usual way, titles the thread after its first question and clears the status.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from adapters.slack.assistant import thread_title
from komt_bot import messages
from komt_bot.dev.fakes.slack import FakeSlack
from komt_bot.dev.fakes.slack_requests import event_body, feedback_values, message_event
from komt_bot.dev.fakes.slack_wire import TEAM, Call, Message
from komt_bot.settings import Settings
from tests.fake_engine import ScriptedEngine
from tests.helpers import running_worker
from tests.test_admin import ask
from tests.test_slack import ASKER, CHANNEL, slack_stack, stack_settings, until

DM = "D0ASSIST"
QUESTION = "김치찌개를 맛있게 끓이는 방법을 자세히 알려 주세요\n둘째 줄은 제목에 들어가지 않습니다"
ANSWER = "먼저 잘 익은 김치를 돼지고기와 함께 볶은 뒤, 물을 붓고 푹 끓입니다. " * 3


def thread_event(kind: str, root: Message, **extra: Any) -> dict[str, Any]:
    """An ``assistant_thread_started`` / ``assistant_thread_context_changed`` event for the thread under ``root``."""
    thread = {
        "user_id": ASKER,
        "context": {"channel_id": CHANNEL, "team_id": TEAM, "enterprise_id": None},
        "channel_id": DM,
        "thread_ts": root.ts,
    }
    return {"type": kind, "assistant_thread": thread | extra, "event_ts": root.ts}


def open_thread(slack: FakeSlack) -> Message:
    """The message an assistant thread hangs from (Slack makes it when someone opens the assistant)."""
    return slack.add_message(DM, "", bot=True, subtype="assistant_app_thread")


def position(calls: list[Call], method: str, **args: Any) -> int:
    """Where the first call of ``method`` (with these arguments) is among ``calls``."""
    for index, call in enumerate(calls):
        if call.method == method and all(call.args.get(k) == v for k, v in args.items()):
            return index
    raise AssertionError(f"no {method} call with {args}")


async def test_opening_a_thread_offers_the_suggested_prompts_and_a_context_change_is_fine(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    long_prompt = "이메일을 정중하게 다듬어 주세요: " + "내일 회의에 참석하기 어렵습니다." * 3
    prompts = ["서울에서 가 볼 만한 곳은?", long_prompt]
    config = stack_settings(settings, fake, slack={"suggested_prompts": prompts})
    async with slack_stack(config, redis_client, fake) as s:
        root = open_thread(fake)
        assert await s.deliver(event_body(thread_event("assistant_thread_started", root))) == 200
        offered = await until(lambda: fake.assistant_thread(DM, root.ts).prompts, what="the suggested prompts")
        assert [p["message"] for p in offered] == prompts
        assert offered[0]["title"] == prompts[0] and len(offered[1]["title"]) <= 40
        assert fake.assistant_thread(DM, root.ts).prompts_title == messages.SUGGESTED_PROMPTS_TITLE

        changed = thread_event("assistant_thread_context_changed", root, context={"channel_id": "C0OTHER"})
        assert await s.deliver(event_body(changed)) == 200
        await s.deliver(event_body(thread_event("assistant_thread_started", open_thread(fake))))
        await until(lambda: len(fake.calls_of("assistant.threads.setSuggestedPrompts")) == 2, what="a second offer")
    assert not fake.calls_of("chat.postMessage", "chat.update", "conversations.replies")


async def test_a_question_in_a_thread_shows_its_status_streams_and_clears_it(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake)
    # Long enough to stream (the editor edits a message once a second); the question ahead is answered at once.
    engine = ScriptedEngine(lambda prompt: "먼저 온 답" if "앞선" in prompt else ANSWER, piece_chars=2, delay=0.04)
    async with slack_stack(config, redis_client, fake) as s:  # no worker yet: the question waits its turn
        await s.queue.submit(ask("앞선 질문"))
        root = open_thread(fake)
        await s.deliver(event_body(thread_event("assistant_thread_started", root)))
        question = fake.add_message(DM, QUESTION, user=ASKER, thread_ts=root.ts)
        assert await s.deliver(event_body(message_event(question, kind="message", channel_type="im"))) == 200
        thread = fake.assistant_thread(DM, root.ts)
        await until(lambda: thread.status == messages.queued(1), what="the queue position as the thread's status")

        async with running_worker(s.queue, engine, config):
            assert await s.final_reply(root.ts, channel=DM) == ANSWER
            await until(lambda: thread.statuses[-1:] == [""], what="the status to be cleared")

            # A second question in the same thread is answered too, and does not rename the thread.
            again = fake.add_message(DM, "돼지고기 대신 참치도 되나요?", user=ASKER, thread_ts=root.ts)
            assert await s.deliver(event_body(message_event(again, kind="message", channel_type="im"))) == 200
            await until(lambda: len(engine.prompts) == 3, what="the second question to be asked")
            await until(lambda: len(fake.calls_of("chat.stopStream")) == 2, what="the second answer")
            await until(lambda: thread.statuses[-1:] == [""] and len(fake.calls_of("chat.delete")) == 2)

    calls = fake.calls
    thinking = position(calls, "assistant.threads.setStatus", status=messages.THINKING)
    assert thinking < position(calls, "chat.postMessage") < position(calls, "chat.startStream")
    assert position(calls, "chat.stopStream") < position(calls, "assistant.threads.setStatus", status="")
    assert thread.statuses[:2] == [messages.THINKING, messages.queued(1)] and thread.statuses[-1] == ""
    assert thread.title == thread_title(QUESTION) == "김치찌개를 맛있게 끓이는 방법을 자세히 알려 주세요"
    assert len(fake.calls_of("assistant.threads.setTitle")) == 1
    assert all(c.args["channel_id"] == DM and c.args["thread_ts"] == root.ts for c in calls if "assistant" in c.method)
    assert "### instruction: 김치찌개" in engine.prompts[2] and "### Response: 먼저 잘 익은" in engine.prompts[2]
    streamed = [m for m in fake.thread(DM, root.ts) if m.text.startswith("먼저")]
    assert streamed and feedback_values(streamed[0]), "the streamed answer ends with its feedback buttons"


async def test_a_refused_thread_gets_no_prompts_and_its_question_a_private_no(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake, slack={"allowed_users": ["U0SOMEONE"]})
    async with slack_stack(config, redis_client, fake) as s:
        root = open_thread(fake)
        await s.deliver(event_body(thread_event("assistant_thread_started", root)))
        question = fake.add_message(DM, "질문입니다", user=ASKER, thread_ts=root.ts)
        await s.deliver(event_body(message_event(question, kind="message", channel_type="im")))
        refusal = await until(lambda: fake.calls_of("chat.postEphemeral"), what="a private refusal")
        assert refusal[0].args["text"] == messages.NOT_ALLOWED
        assert await s.jobs() == 0
    assert not fake.calls_of("assistant.threads.setSuggestedPrompts", "assistant.threads.setStatus")


async def test_a_refused_status_never_stops_the_answer(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    fake.fail("assistant.threads.setStatus", "not_allowed_token_type")
    fake.fail("assistant.threads.setTitle", "not_allowed_token_type")
    engine = ScriptedEngine("상태 줄 없이도 답합니다.")
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine) as s:
        root = open_thread(fake)
        question = fake.add_message(DM, "그래도 답해 주세요", user=ASKER, thread_ts=root.ts)
        await s.deliver(event_body(message_event(question, kind="message", channel_type="im")))
        assert await s.final_reply(root.ts, channel=DM) == "상태 줄 없이도 답합니다."
    assert len(fake.calls_of("assistant.threads.setStatus")) == 1  # refused once: not tried again for that reply
    assert [c.args["title"] for c in fake.calls_of("assistant.threads.setTitle")] == ["그래도 답해 주세요"]
