"""The Slack adapter end to end: real slack-bolt and slack_sdk against the fake Slack, real Redis, a real worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import redis.asyncio as aioredis

from adapters.slack.app import SlackAdapter, serve
from komt_bot import messages
from komt_bot.dev.fakes.slack import FakeSlack
from komt_bot.dev.fakes.slack_requests import (
    event_body,
    has_stop,
    message_event,
    signed_headers,
    stop_value,
    update_gaps,
)
from komt_bot.dev.fakes.slack_wire import BOT_USER, SECRET, TEAM, Message
from komt_bot.engine.base import Engine
from komt_bot.jobs import JobRequest, Origin, Turn, job_id_for_key, new_job_id
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.queue.working import TextPiece
from komt_bot.settings import Settings, load_settings
from tests.fake_engine import ScriptedEngine
from tests.helpers import collect_events, eventually, running_worker

CHANNEL = "C0GENERAL"
ASKER = "U0ASKER"
OTHER = "U0OTHER"
ADMIN = "U0ADMIN"
ANSWER = " ".join(["안녕하세요! 저는 komt입니다. 한국어로 질문해 주시면 최선을 다해 답하겠습니다."] * 4)

T = TypeVar("T")


# -- the stack under test ---------------------------------------------------------------------------------------


def stack_settings(base: Settings, fake: FakeSlack, **sections: dict[str, Any]) -> Settings:
    """The test's settings (its Redis prefix, fast queue) pointed at the fake Slack, with overrides per section."""
    slack = {
        "bot_token": "xoxb-test",
        "signing_secret": SECRET,
        "api_url": fake.api_url,
        "host": "127.0.0.1",
        "port": 0,
        "admin_users": [ADMIN],
    }
    assert base.redis_url is not None
    return load_settings(
        redis_url=base.redis_url.get_secret_value(),
        queue=base.queue.model_dump() | {"job_timeout_seconds": 60.0} | sections.get("queue", {}),
        worker={"coalesce_ms": 20},
        limits={"rate_limit_per_minute": 0} | sections.get("limits", {}),
        slack=slack | sections.get("slack", {}),
        model=sections.get("model", {}),
        generation=sections.get("generation", {}),
    )


async def until(check: Callable[[], T | None], *, timeout: float = 20.0, what: str = "condition") -> T:
    """Poll a plain function until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last value: {value!r})")
        await asyncio.sleep(0.02)


@dataclass
class Stack:
    """A running adapter, its fake Slack, the queue, and an HTTP client that plays Slack's deliveries."""

    fake: FakeSlack
    queue: JobQueue
    adapter: SlackAdapter
    settings: Settings
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}/slack/events"

    async def post(self, body: bytes, headers: dict[str, str], content_type: str = "application/json") -> int:
        async with self.http.post(self.url, data=body, headers={"Content-Type": content_type, **headers}) as r:
            await r.read()
            return r.status

    async def deliver(self, payload: dict[str, Any], *, retry: int = 0) -> int:
        """A signed Events API request (with ``X-Slack-Retry-Num`` when ``retry`` > 0)."""
        body = json.dumps(payload).encode()
        headers = signed_headers(body)
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.post(body, headers)

    async def mention(self, text: str, *, user: str = ASKER, thread_ts: str | None = None) -> Message:
        """A person mentions the bot in the channel and Slack delivers the event. Returns their message."""
        message = self.fake.add_message(CHANNEL, f"<@{BOT_USER}> {text}", user=user, thread_ts=thread_ts)
        assert await self.deliver(event_body(message_event(message))) == 200
        return message

    async def form(self, fields: dict[str, str]) -> int:
        """A signed form-encoded request (slash commands, interactivity)."""
        body = urlencode(fields).encode()
        return await self.post(body, signed_headers(body), "application/x-www-form-urlencoded")

    async def press_stop(self, message: Message, presser: str) -> int:
        """Someone presses the Stop button on ``message``."""
        action = {"action_id": "komt_stop", "block_id": "b", "value": stop_value(message), "type": "button"}
        return await self.block_action(message, presser, action)

    async def block_action(self, message: Message, presser: str, action: dict[str, Any]) -> int:
        """Someone clicks an interactive element of ``message``: Slack's signed ``block_actions`` request."""
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "test"},
            "user": {"id": presser, "username": presser, "team_id": TEAM},
            "api_app_id": "A0KOMT",
            "token": "legacy",
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel},
            "trigger_id": "trigger-" + uuid.uuid4().hex[:8],
            "channel": {"id": message.channel, "name": "general"},
            "message": message.as_api(),
            "response_url": self.fake.response_url(str(action["action_id"])),
            "actions": [action],
        }
        return await self.form({"payload": json.dumps(payload)})

    async def jobs(self) -> int:
        """How many jobs were ever submitted under this test's prefix."""
        return int(await self.queue.redis.zcard(self.queue.keys.index))

    def replies(self, thread_ts: str) -> list[Message]:
        return self.fake.thread(CHANNEL, thread_ts)

    def placeholder(self, thread_ts: str) -> Message | None:
        """The bot's message in the thread that carries a Stop button, if any."""
        return next((m for m in self.replies(thread_ts) if has_stop(m)), None)

    async def final_reply(self, thread_ts: str, *, channel: str = CHANNEL, timeout: float = 30.0) -> str:
        """Wait until the reply in a thread is finished (no Stop button, no open stream); return its text."""
        return await final_reply(self.fake, thread_ts, channel=channel, timeout=timeout)


async def final_reply(fake: FakeSlack, thread_ts: str, *, channel: str = CHANNEL, timeout: float = 30.0) -> str:
    """Wait until the reply in a thread is finished (no Stop button, no open stream); return its text."""

    def finished() -> str | None:
        replies = fake.thread(channel, thread_ts)
        writing = (m.streaming or has_stop(m) or m.text.endswith(messages.WRITING_MARK) for m in replies)
        if not replies or any(writing):
            return None
        return fake.thread_text(channel, thread_ts)

    return await until(finished, timeout=timeout, what="a finished reply")


@contextlib.asynccontextmanager
async def slack_stack(
    settings: Settings,
    redis: aioredis.Redis,
    fake: FakeSlack,
    *,
    engine: Engine | None = None,
    queue: JobQueue | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Stack]:
    """A started adapter (and, given an engine, a real worker) for the duration of the block."""
    queue = queue or JobQueue(redis, settings.queue)
    adapter = SlackAdapter(settings, queue, metrics=metrics, shutdown_grace=0.2)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        if engine is not None:
            await stack.enter_async_context(running_worker(queue, engine, settings))
        await adapter.start()
        stack.push_async_callback(adapter.stop)
        yield Stack(fake, queue, adapter, settings, http)


def assert_edits_spaced(fake: FakeSlack) -> None:
    gaps = update_gaps(fake)
    assert all(gap >= 0.95 for gap in gaps), sorted(gaps)[:3]


# -- answering ----------------------------------------------------------------------------------------------------


async def test_the_tiny_real_model_answers_a_signed_mention_through_the_real_worker(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack, tiny_model_dir: Path
) -> None:
    from komt_bot.engine import load_engine

    model = {"base": str(tiny_model_dir / "base"), "adapter": str(tiny_model_dir / "lora"), "quantization": "none"}
    config = stack_settings(
        settings, fake, model=model | {"max_prompt_tokens": 128}, generation={"max_new_tokens": 48, "temperature": 0.0}
    )
    engine = await asyncio.to_thread(load_engine, config.model, config.generation)
    try:
        async with slack_stack(config, redis_client, fake, engine=engine) as s:
            question = await s.mention("김치를 만드는 방법을 알려 주세요.")
            reply = await s.final_reply(question.ts, timeout=60)
            job_id = str(await redis_client.get(s.queue.keys.idempotency(f"slack:{TEAM}:{CHANNEL}:{question.ts}")))
            events = await collect_events(s.queue, job_id)
    finally:
        await engine.close()
    answer = "".join(e.text for e in events if e.type == "delta")
    suffix = messages.TRUNCATED if events[-1].finish_reason == "length" else None
    body = answer if answer.strip() else ""
    assert reply == ("\n\n".join(part for part in (body, suffix) if part) or messages.EMPTY_ANSWER)
    assert_edits_spaced(fake)


async def test_a_mention_streams_natively_into_its_thread(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    engine = ScriptedEngine(ANSWER, piece_chars=6, delay=0.08)
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine) as s:
        question = await s.mention("자기소개 해 주세요")
        placeholder = await until(lambda: s.placeholder(question.ts), what="a placeholder with a Stop button")
        assert messages.queued(None) in placeholder.text or "대기" in placeholder.text
        assert await s.final_reply(question.ts) == ANSWER
    starts = fake.calls_of("chat.startStream")
    assert len(starts) == 1
    assert starts[0].args["thread_ts"] == question.ts
    assert (starts[0].args["recipient_user_id"], starts[0].args["recipient_team_id"]) == (ASKER, TEAM)
    assert len(fake.calls_of("chat.appendStream")) >= 1
    assert len(fake.calls_of("chat.stopStream")) == 1
    assert fake.messages[placeholder.ts].deleted  # the Stop message above the stream goes away at the end
    assert all(c.token == "xoxb-test" for c in fake.calls_of("chat.postMessage", "chat.startStream"))
    assert_edits_spaced(fake)


async def test_an_expired_stream_falls_back_to_chat_update_once_a_second(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    fake.expire_streams = True
    engine = ScriptedEngine(ANSWER, piece_chars=4, delay=0.06)
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine) as s:
        question = await s.mention("자기소개 해 주세요")
        assert await s.final_reply(question.ts) == ANSWER
        (stream,) = s.replies(question.ts)
    assert len(fake.calls_of("chat.startStream")) == 1
    assert [c.args["ts"] for c in fake.calls_of("chat.appendStream")] == [stream.ts]  # refused once, then updates
    assert len([c for c in fake.calls_of("chat.update") if c.args["ts"] == stream.ts]) >= 2
    assert_edits_spaced(fake)


async def test_a_workspace_without_streaming_gets_chat_update(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    fake.fail("chat.startStream", "feature_not_enabled")
    engine = ScriptedEngine(lambda prompt: ANSWER if "자기소개" in prompt else "짧은 답", piece_chars=4, delay=0.06)
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine) as s:
        question = await s.mention("자기소개 해 주세요")
        assert await s.final_reply(question.ts) == ANSWER
        second = await s.mention("한 번 더")
        assert await s.final_reply(second.ts) == "짧은 답"
    assert len(fake.calls_of("chat.startStream")) == 1  # not tried again in that channel
    assert len(s.replies(question.ts)) == 1  # the placeholder became the answer
    assert len(fake.calls_of("chat.update")) >= 4
    assert_edits_spaced(fake)


# -- who may talk to the adapter, and how often -------------------------------------------------------------------


async def test_forged_stale_and_unsigned_requests_get_401_and_no_job(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    async with slack_stack(stack_settings(settings, fake), redis_client, fake) as s:
        message = fake.add_message(CHANNEL, f"<@{BOT_USER}> 안녕", user=ASKER)
        body = json.dumps(event_body(message_event(message))).encode()
        forged = signed_headers(body, secret="not-the-secret")
        stale = signed_headers(body, timestamp=int(time.time()) - 600)
        tampered = signed_headers(body.replace(b"\\uc548", b"\\uc549"))
        for headers in (forged, stale, tampered, {}, {"X-Slack-Request-Timestamp": "x", "X-Slack-Signature": "v0=1"}):
            assert await s.post(body, headers) == 401
        assert await s.post(body, {k: v for k, v in stale.items() if k != "X-Slack-Signature"}) == 401
        challenge = json.dumps({"type": "url_verification", "token": "legacy", "challenge": "c-123"}).encode()
        async with s.http.post(s.url, data=challenge, headers=signed_headers(challenge)) as response:
            assert (response.status, await response.json()) == (200, {"challenge": "c-123"})
        await asyncio.sleep(0.3)
        assert await s.jobs() == 0
    assert not fake.calls_of("chat.postMessage")


async def test_serve_runs_until_cancelled_and_publishes_its_heartbeat(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake)
    queue = JobQueue(redis_client, config.queue)
    task = asyncio.create_task(serve(config, queue))
    try:
        records = [r.model_dump() for r in await eventually(lambda: queue.presence.components())]
        assert records[0]["component"] == "slack" and records[0]["mode"] == "http" and records[0]["port"] > 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await queue.presence.components() == []


async def test_a_redelivered_event_makes_one_job_and_one_reply_across_replicas(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake)
    engine = ScriptedEngine("한 번만 답합니다.", delay=0.01)
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        message = fake.add_message(CHANNEL, f"<@{BOT_USER}> 한 번만 답해 주세요", user=ASKER)
        payload = event_body(message_event(message))
        assert await s.deliver(payload) == 200
        assert await s.deliver(payload, retry=1) == 200
        # The same words also arrive as a plain message event (the bot subscribes to channel messages).
        assert await s.deliver(event_body(message_event(message, kind="message", channel_type="channel"))) == 200
        async with slack_stack(config, redis_client, fake) as replica:  # a second adapter, same Redis
            assert await replica.deliver(payload, retry=2) == 200
            assert await s.final_reply(message.ts) == "한 번만 답합니다."
            await asyncio.sleep(0.3)
        assert await s.jobs() == 1
    assert len(fake.calls_of("chat.postMessage")) == 1


async def test_rate_limit_and_busy_get_polite_messages(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake, limits={"rate_limit_per_minute": 1}, queue={"max_backlog": 1})
    async with slack_stack(config, redis_client, fake) as s:  # no worker: the first job stays queued
        first = await s.mention("첫 질문")
        await until(lambda: s.placeholder(first.ts), what="the first placeholder")
        again = await s.mention("두 번째 질문")
        assert re.fullmatch(re.escape(messages.rate_limited(7)).replace("7", r"\d+"), await s.final_reply(again.ts))
        other = await s.mention("다른 사람의 질문", user=OTHER)
        assert await s.final_reply(other.ts) == messages.BUSY
        assert await s.jobs() == 1


async def test_allow_lists_refuse_privately(settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack) -> None:
    config = stack_settings(settings, fake, slack={"allowed_channels": ["C0ELSEWHERE"], "allowed_users": [ASKER]})
    async with slack_stack(config, redis_client, fake) as s:
        message = await s.mention("여기서도 되나요?")
        ephemeral = await until(lambda: fake.calls_of("chat.postEphemeral"), what="a private refusal")
        assert ephemeral[0].args["user"] == ASKER
        assert ephemeral[0].args["text"] == messages.NOT_ALLOWED
        assert ephemeral[0].args["thread_ts"] == message.ts
        assert await s.jobs() == 0
        assert not s.replies(message.ts)


async def test_socket_mode_answers_acks_and_dedupes_over_a_local_websocket(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake, slack={"app_token": "xapp-test", "signing_secret": None})
    engine = ScriptedEngine("소켓 모드 답변입니다.", delay=0.01)
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        assert s.adapter.mode == "socket" and s.adapter.port is None
        await fake.socket_connected()
        assert fake.calls_of("apps.connections.open")[0].token == "xapp-test"
        message = fake.add_message(CHANNEL, f"<@{BOT_USER}> 소켓으로 물어봅니다", user=ASKER)
        payload = event_body(message_event(message))
        first = await fake.send_envelope("events_api", payload)
        retried = await fake.send_envelope("events_api", payload, retry_attempt=1, retry_reason="timeout")
        assert await s.final_reply(message.ts) == "소켓 모드 답변입니다."
        acked = await until(lambda: {a.get("envelope_id") for a in fake.socket_acks} >= {first, retried})
        assert acked
        assert await s.jobs() == 1
    assert len(fake.calls_of("chat.postMessage")) == 1


# -- conversations ------------------------------------------------------------------------------------------------


async def test_a_thread_becomes_the_conversation_and_continues_without_a_mention(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    engine = ScriptedEngine("네, 알겠습니다.", delay=0.01)
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine) as s:
        root = fake.add_message(CHANNEL, f"<@{BOT_USER}> 김치 &amp; 깍두기 담그는 법?", user=ASKER)
        fake.add_message(CHANNEL, messages.queued(3), thread_ts=root.ts, bot=True)
        fake.add_message(CHANNEL, "배추를 소금에 ", thread_ts=root.ts, bot=True)
        fake.add_message(CHANNEL, "절이세요.\n\n" + messages.TRUNCATED, thread_ts=root.ts, bot=True)
        fake.add_message(CHANNEL, "<@U0OTHER> 도 궁금하대요", user=OTHER, thread_ts=root.ts)
        question = await s.mention("얼마나 오래 절여요?", thread_ts=root.ts)
        await until(lambda: s.replies(root.ts)[-1].text == "네, 알겠습니다.", what="the answer in the thread")
        prompt = engine.prompts[0]
        assert prompt == (
            "### instruction: 김치 & 깍두기 담그는 법?\n\n### Response: 배추를 소금에 절이세요.\n\n"
            "### instruction: @U0OTHER 도 궁금하대요\n얼마나 오래 절여요?\n\n### Response: "
        )
        assert question.ts not in prompt

        # The bot is in this thread now: a reply there is a question without a new mention.
        follow_up = fake.add_message(CHANNEL, "고춧가루는요?", user=OTHER, thread_ts=root.ts)
        event = message_event(follow_up, kind="message", channel_type="channel")
        assert await s.deliver(event_body(event)) == 200
        await until(lambda: len(engine.prompts) == 2, what="the follow-up to be asked")
        assert engine.prompts[1].endswith("### instruction: 고춧가루는요?\n\n### Response: ")
        assert "### Response: 네, 알겠습니다." in engine.prompts[1]

        # A thread the bot never joined is not its business.
        stranger = fake.add_message(CHANNEL, "점심 뭐 먹지?", user=OTHER)
        chatter = fake.add_message(CHANNEL, "국수!", user=ASKER, thread_ts=stranger.ts)
        assert await s.deliver(event_body(message_event(chatter, kind="message", channel_type="channel"))) == 200
        await asyncio.sleep(0.3)
        assert await s.jobs() == 2


async def test_a_long_korean_answer_arrives_whole_in_several_messages_under_the_byte_limit(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    syllables = "가나다라마바사아자차카타파하한국어답변입니다"
    answer = "".join(syllables[i % len(syllables)] for i in range(5000))
    engine = ScriptedEngine(answer, piece_chars=75, delay=0.05)
    config = stack_settings(settings, fake)
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        question = await s.mention("아주 길게 답해 주세요")
        assert await s.final_reply(question.ts, timeout=40) == answer
        replies = s.replies(question.ts)
    assert len(replies) >= 4
    for reply in replies:
        assert len(reply.text.encode("utf-8")) <= config.slack.max_message_bytes
        assert "\ufffd" not in reply.text
    assert len(fake.calls_of("chat.startStream")) >= 2
    assert_edits_spaced(fake)


# -- Stop ---------------------------------------------------------------------------------------------------------


async def test_stop_ends_a_running_answer_and_refuses_other_people(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    engine = ScriptedEngine(ANSWER * 3, piece_chars=4, delay=0.05)
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine) as s:
        question = await s.mention("길게 말해 주세요")
        await until(lambda: fake.calls_of("chat.startStream"), what="the answer to start streaming")
        button = s.placeholder(question.ts)
        assert button is not None
        job_id = str(await redis_client.get(s.queue.keys.idempotency(f"slack:{TEAM}:{CHANNEL}:{question.ts}")))
        assert stop_value(button) == job_id  # the button carries the job id, as the 👍/👎 do

        assert await s.press_stop(button, OTHER) == 200
        refusal = await until(lambda: fake.calls_of("chat.postEphemeral"), what="a private refusal")
        assert (refusal[0].args["user"], refusal[0].args["text"]) == (OTHER, messages.STOP_REFUSED)
        assert (await s.queue.job(job_id)).state == "running"

        assert await s.press_stop(button, ASKER) == 200
        reply = await s.final_reply(question.ts)
        partial, _, notice = reply.rpartition("\n\n")
        assert notice == messages.STOPPED and partial and ANSWER.startswith(partial)
        assert (await s.queue.job(job_id)).state == "cancelled"
        assert engine.cancelled == [job_id]


async def test_an_admin_stops_a_queued_question(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    async with slack_stack(stack_settings(settings, fake), redis_client, fake) as s:  # no worker: it stays queued
        question = await s.mention("대기열에 있는 질문")
        button = await until(lambda: s.placeholder(question.ts), what="the placeholder")
        assert await s.press_stop(button, ADMIN) == 200
        assert await s.final_reply(question.ts) == messages.STOPPED
        assert not fake.calls_of("chat.postEphemeral")


async def test_a_stop_on_a_redelivered_events_reply_stops_its_one_job(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake)
    engine = ScriptedEngine(ANSWER * 3, piece_chars=4, delay=0.05)
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        message = fake.add_message(CHANNEL, f"<@{BOT_USER}> 길게 말해 주세요", user=ASKER)
        payload = event_body(message_event(message))
        assert await s.deliver(payload) == 200
        assert await s.deliver(payload, retry=1) == 200
        async with slack_stack(config, redis_client, fake) as replica:  # a second adapter, same Redis
            assert await replica.deliver(payload, retry=2) == 200
            await until(lambda: fake.calls_of("chat.startStream"), what="the answer to start streaming")
            button = s.placeholder(message.ts)
            assert button is not None
            job_id = job_id_for_key(f"slack:{TEAM}:{CHANNEL}:{message.ts}")
            assert stop_value(button) == job_id  # known before the job was submitted
            assert await replica.press_stop(button, ASKER) == 200  # the click may reach any replica
            reply = await s.final_reply(message.ts)
        assert reply.endswith("\n\n" + messages.STOPPED)
        assert (await s.queue.job(job_id)).state == "cancelled"
        assert engine.cancelled == [job_id]
        assert await s.jobs() == 1
    assert not fake.calls_of("chat.postEphemeral")


async def test_a_stop_button_of_an_earlier_release_still_stops_its_job(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    async with slack_stack(stack_settings(settings, fake), redis_client, fake) as s:  # no worker: it stays queued
        question = fake.add_message(CHANNEL, f"<@{BOT_USER}> 업그레이드 전 질문", user=ASKER)
        key = f"{TEAM}:{CHANNEL}:{question.ts}"
        origin = Origin(platform="slack", channel=CHANNEL, thread=question.ts, message=question.ts, user=ASKER)
        request = JobRequest(conversation=[Turn(role="user", text="업그레이드 전 질문")], origin=origin)
        old = await s.queue.submit(request, job_id=new_job_id(), idempotency_key=f"slack:{key}")  # a random id
        action = {"action_id": "komt_stop", "block_id": "b", "value": key, "type": "button"}  # it named the question
        assert await s.block_action(question, ASKER, action) == 200

        async def cancelled() -> bool:
            return (await s.queue.job(old.job_id)).state == "cancelled"

        await eventually(cancelled)
        assert old.job_id != job_id_for_key(f"slack:{key}")


# -- what people send ---------------------------------------------------------------------------------------------


async def test_empty_huge_and_broken_questions_get_their_messages(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    engine = ScriptedEngine("받았습니다.", delay=0.01)
    config = stack_settings(settings, fake)
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        empty = await s.mention("  ")
        huge = await s.mention("가" * 34_000)  # about 100 kB of UTF-8
        broken = fake.add_message(CHANNEL, f"<@{BOT_USER}> 깨진 글자 BROKEN 입니다", user=ASKER)
        body = json.dumps(event_body(message_event(broken))).encode().replace(b"BROKEN", b"\xed\xa0\x80\xff")
        assert await s.post(body, signed_headers(body)) == 200
        surrogate = fake.add_message(CHANNEL, f"<@{BOT_USER}> 서로게이트 \ud800 질문", user=ASKER)
        body = json.dumps(event_body(message_event(surrogate))).encode()  # ASCII JSON with a lone \ud800 escape
        assert await s.post(body, signed_headers(body)) == 200

        assert await s.final_reply(empty.ts) == messages.EMPTY
        assert await s.final_reply(huge.ts) == messages.too_long(34_000, config.limits.max_question_chars)
        assert await s.final_reply(broken.ts) == "받았습니다."
        assert await s.final_reply(surrogate.ts) == "받았습니다."
        assert await s.jobs() == 2
    assert sorted("\ufffd" in prompt for prompt in engine.prompts) == [True, True]


async def test_the_slash_command_answers_in_the_channel_and_its_thread_continues(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    engine = ScriptedEngine("슬래시 답변입니다.", delay=0.01)
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine) as s:
        command = {
            "command": "/komt",
            "user_id": ASKER,
            "channel_id": CHANNEL,
            "team_id": TEAM,
            "trigger_id": "trigger-1",
            "response_url": fake.response_url("komt"),
        }
        assert await s.form(command | {"text": "슬래시로 &lt;묻습니다&gt;"}) == 200  # Slack escapes < and >
        root = await until(lambda: next((m for m in fake.messages.values() if m.text.startswith("🙋")), None))
        assert root.thread_ts is None and root.text == f"🙋 <@{ASKER}>: 슬래시로 &lt;묻습니다&gt;"
        assert await s.final_reply(root.ts) == "슬래시 답변입니다."

        follow_up = fake.add_message(CHANNEL, "더 자세히요", user=ASKER, thread_ts=root.ts)
        assert await s.deliver(event_body(message_event(follow_up, kind="message", channel_type="channel"))) == 200
        await until(lambda: len(engine.prompts) == 2, what="the follow-up")
        assert engine.prompts[1].startswith("### instruction: 슬래시로 <묻습니다>\n\n### Response: 슬래시 답변입니다.")

        assert await s.form(command | {"text": " ", "trigger_id": "trigger-2"}) == 200
        said = await until(lambda: fake.calls_of("response_url"), what="a private answer to an empty command")
        assert said[0].args == {"text": messages.EMPTY, "response_type": "ephemeral"}


async def test_direct_messages_are_answered_and_bots_edits_and_deletions_ignored(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    engine = ScriptedEngine("DM 답변입니다.", delay=0.01)
    metrics = Metrics()
    async with slack_stack(stack_settings(settings, fake), redis_client, fake, engine=engine, metrics=metrics) as s:
        ignored = [
            fake.add_message(CHANNEL, f"<@{BOT_USER}> 다른 봇", user="U0BOT"),
            fake.add_message(CHANNEL, f"<@{BOT_USER}> 고친 글", user=ASKER),
            fake.add_message(CHANNEL, f"<@{BOT_USER}> 지운 글", user=ASKER),
            fake.add_message(CHANNEL, f"<@{BOT_USER}> 입장", user=ASKER),
            fake.add_message(CHANNEL, f"<@{BOT_USER}> 봇 자신", user=BOT_USER),
        ]
        extras: list[dict[str, Any]] = [
            {"subtype": "bot_message", "bot_id": "B0OTHER"},
            {"subtype": "message_changed"},
            {"subtype": "message_deleted"},
            {"subtype": "channel_join"},
            {},
        ]
        for message, extra in zip(ignored, extras, strict=True):
            event = message_event(message, kind="message", channel_type="channel", **extra)
            assert await s.deliver(event_body(event)) == 200
        edited = message_event(ignored[1], edited={"user": ASKER, "ts": "1.0"})
        assert await s.deliver(event_body(edited)) == 200

        dm = fake.add_message("D0DIRECT", "멘션 없이 DM으로 묻습니다", user=ASKER)
        fake.rate_limit("chat.postMessage")  # Slack says 429 once: slack_sdk waits Retry-After and tries again
        assert await s.deliver(event_body(message_event(dm, kind="message", channel_type="im"))) == 200
        assert await s.final_reply(dm.ts, channel="D0DIRECT") == "DM 답변입니다."
        await asyncio.sleep(0.2)
        assert await s.jobs() == 1
    sample = metrics.registry.get_sample_value
    assert sample("komt_platform_rate_limited_total", {"platform": "slack"}) == 1
    assert sample("komt_requests_total", {"platform": "slack", "result": "done"}) == 1


# -- failures reach the person ------------------------------------------------------------------------------------


async def test_a_failing_worker_and_a_dead_redis_are_told_in_the_thread(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake, queue={"max_attempts": 2})
    engine = ScriptedEngine("안 보일 답", delay=0.01, fail_with="CUDA out of memory")
    async with slack_stack(config, redis_client, fake, engine=engine) as s:
        question = await s.mention("실패할 질문")
        assert await s.final_reply(question.ts) == messages.failed("dead_letter", None)
        job_id = str(await redis_client.get(s.queue.keys.idempotency(f"slack:{TEAM}:{CHANNEL}:{question.ts}")))
        assert (await s.queue.job(job_id)).raw["attempt"] == "2"

    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True, socket_connect_timeout=0.5)
    try:
        async with slack_stack(config, dead, fake, queue=JobQueue(dead, config.queue)) as s:
            question = await s.mention("Redis가 없을 때")
            assert await s.final_reply(question.ts) == messages.QUEUE_DOWN
    finally:
        await dead.aclose()


async def test_a_restarted_job_resets_the_reply_instead_of_doubling_it(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    async with slack_stack(stack_settings(settings, fake), redis_client, fake) as s:  # the test plays the worker
        question = await s.mention("다시 써 주세요")
        await until(lambda: s.placeholder(question.ts), what="the placeholder")
        await s.queue.ensure_group()
        (first,) = await s.queue.claim("hand-worker", 1)
        await s.queue.publish_text([TextPiece(first, 1, "첫 번째 시도의 답변이 길게 이어집니다. " * 3)])
        await until(lambda: fake.calls_of("chat.startStream"), what="the first attempt to stream")
        await s.queue.requeue(first, error="worker lost")
        (second,) = await s.queue.claim("hand-worker", 1)
        assert second.attempt == 2
        await until(lambda: _updated_with(fake, messages.RESTARTED), what="the restart notice")
        await s.queue.publish_text([TextPiece(second, 1, "두 번째 답변입니다.")])
        await s.queue.finish(second, state="done", finish_reason="stop", usage={})
        assert await s.final_reply(question.ts) == "두 번째 답변입니다."
        assert len(s.replies(question.ts)) == 1
    assert len(fake.calls_of("chat.stopStream")) == 1  # the first attempt's stream was closed, then rewritten
    assert_edits_spaced(fake)


def _updated_with(fake: FakeSlack, text: str) -> bool:
    return any(call.args["text"].startswith(text) for call in fake.calls_of("chat.update"))
