"""Replies that outlive their Slack adapter: a deploy hands them over, a crash has them resumed, both in the
messages people already see (the fake Slack, real Redis, a real worker; real `komt-bot slack` processes where the
test is about a process dying)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from adapters.slack.app import SlackAdapter
from komt_bot import messages
from komt_bot.dev.fakes.slack import FakeSlack
from komt_bot.dev.fakes.slack_requests import event_body, feedback_values, message_event, signed_headers
from komt_bot.dev.fakes.slack_wire import BOT_USER, SECRET, TEAM, Message
from komt_bot.dev.processes import ManagedProcess, free_port
from komt_bot.jobs import job_id_for_key
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from tests.fake_engine import ScriptedEngine
from tests.helpers import eventually, running_worker
from tests.test_slack import ANSWER, CHANNEL, final_reply, slack_stack, stack_settings, until


def slow_engine() -> ScriptedEngine:
    """ANSWER in about 8 s: long enough to stop an adapter in the middle."""
    return ScriptedEngine(ANSWER, piece_chars=3, delay=0.12)


def job_of(question: Message) -> str:
    return job_id_for_key(f"slack:{TEAM}:{CHANNEL}:{question.ts}")


def shows_answer(fake: FakeSlack, question: Message) -> bool:
    """The reply shows some of the answer already (first words visible)."""
    return ANSWER[:12] in fake.thread_text(CHANNEL, question.ts)


def assert_one_finished_answer(fake: FakeSlack, question: Message) -> None:
    (reply,) = fake.thread(CHANNEL, question.ts)  # one message: nothing posted twice, the Stop holder gone
    assert feedback_values(reply) == {"up": f"up:{job_of(question)}", "down": f"down:{job_of(question)}"}


async def test_a_deploy_hands_the_open_reply_over_and_the_next_process_finishes_it(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake)
    queue = JobQueue(redis_client, config.queue)
    async with running_worker(queue, slow_engine(), config):
        async with slack_stack(config, redis_client, fake, queue=queue) as first:
            question = await first.mention("자기소개 해 주세요")
            await until(lambda: shows_answer(fake, question), what="the first words")
        # The first adapter stopped (what SIGTERM does): its job goes on, nobody is told anything went wrong.
        assert (await queue.job(job_of(question))).state in ("running", "done")
        assert messages.STOPPED not in fake.thread_text(CHANNEL, question.ts)
        async with slack_stack(config, redis_client, fake, queue=queue) as second:
            assert await second.final_reply(question.ts) == ANSWER
            assert_one_finished_answer(fake, question)
            await eventually(lambda: _no_delivery(queue, job_of(question)), timeout=10)
    assert (await queue.job(job_of(question))).state == "done"


async def test_a_resumed_reply_is_handed_over_again_by_the_next_deploy(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake)
    queue = JobQueue(redis_client, config.queue)
    engine = ScriptedEngine(ANSWER * 2, piece_chars=3, delay=0.12)
    async with running_worker(queue, engine, config):
        async with slack_stack(config, redis_client, fake, queue=queue) as first:
            question = await first.mention("자기소개 해 주세요")
            await until(lambda: shows_answer(fake, question), what="the first words")
        async with slack_stack(config, redis_client, fake, queue=queue) as second:
            await eventually(lambda: _held_by(queue, job_of(question), second.adapter), timeout=20)
        record = await queue.delivery(job_of(question))
        assert record is not None and record.owner == ""  # released at once, not left to lapse
        async with slack_stack(config, redis_client, fake, queue=queue) as third:
            assert await third.final_reply(question.ts, timeout=60) == ANSWER * 2
            assert_one_finished_answer(fake, question)


async def _held_by(queue: JobQueue, job_id: str, adapter: SlackAdapter) -> bool:
    record = await queue.delivery(job_id)
    return record is not None and adapter.replies is not None and record.owner == adapter.replies.open.owner


async def test_a_job_that_ended_while_no_adapter_ran_is_shown_in_full_at_start(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake)
    queue = JobQueue(redis_client, config.queue)
    async with running_worker(queue, ScriptedEngine(ANSWER, piece_chars=3, delay=0.05), config):
        async with slack_stack(config, redis_client, fake, queue=queue) as first:
            question = await first.mention("자기소개 해 주세요")
            await until(lambda: shows_answer(fake, question), what="the first words")
        await eventually(lambda: _job_done(queue, job_of(question)), timeout=20)
        assert fake.thread_text(CHANNEL, question.ts) != ANSWER  # nobody showed the end yet
        async with slack_stack(config, redis_client, fake, queue=queue) as second:
            assert await second.final_reply(question.ts) == ANSWER
            assert_one_finished_answer(fake, question)


async def test_a_reply_whose_message_was_deleted_is_dropped_quietly(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack
) -> None:
    config = stack_settings(settings, fake, slack={"native_streaming": False})
    queue = JobQueue(redis_client, config.queue)
    async with running_worker(queue, slow_engine(), config):
        async with slack_stack(config, redis_client, fake, queue=queue) as first:
            question = await first.mention("자기소개 해 주세요")
            await until(lambda: shows_answer(fake, question), what="the first words")
        for message in fake.thread(CHANNEL, question.ts):
            message.deleted = True  # a person deleted the half-written answer
        async with slack_stack(config, redis_client, fake, queue=queue):
            await eventually(lambda: _no_delivery(queue, job_of(question)), timeout=30)
    assert fake.thread(CHANNEL, question.ts) == []  # nothing posted again, no error reply


# -- real adapter processes ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def adapter_process(config: Settings, fake: FakeSlack, workdir: Path, name: str) -> AsyncIterator[AdapterProc]:
    """A real ``komt-bot slack`` in HTTP mode against the fake Slack and the test's Redis."""
    port = free_port()
    assert config.redis_url is not None
    env = {
        **os.environ,
        "KOMT_REDIS_URL": config.redis_url.get_secret_value(),
        "KOMT_QUEUE__PREFIX": config.queue.prefix,
        "KOMT_SLACK__BOT_TOKEN": "xoxb-test",
        "KOMT_SLACK__SIGNING_SECRET": SECRET,
        "KOMT_SLACK__API_URL": fake.api_url,
        "KOMT_SLACK__HOST": "127.0.0.1",
        "KOMT_SLACK__PORT": str(port),
        "KOMT_LIMITS__RATE_LIMIT_PER_MINUTE": "0",
        "KOMT_QUEUE__JOB_TIMEOUT_SECONDS": "60",
    }
    process = ManagedProcess(
        name, [sys.executable, "-m", "komt_bot", "slack"], workdir / f"{name}.log", env=env, cwd=workdir
    )
    process.start()
    proc = AdapterProc(process, port)
    try:
        yield proc
    finally:
        process.stop(timeout=10)


class AdapterProc:
    """A started adapter process and where its events endpoint listens."""

    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.port = port

    async def mention(self, fake: FakeSlack, text: str) -> Message:
        """A person mentions the bot; Slack delivers the event to this process (retried until it listens)."""
        message = fake.add_message(CHANNEL, f"<@{BOT_USER}> {text}", user="U0ASKER")
        body = event_body(message_event(message))
        payload = json.dumps(body).encode()

        async def delivered() -> bool:
            try:
                async with aiohttp.ClientSession() as http:
                    url = f"http://127.0.0.1:{self.port}/slack/events"
                    headers = {"Content-Type": "application/json", **signed_headers(payload)}
                    async with http.post(url, data=payload, headers=headers) as response:
                        return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(delivered, timeout=60)
        return message


async def test_a_crashed_adapter_s_reply_is_finished_by_the_next_one_in_the_same_message(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack, tmp_path: Path
) -> None:
    config = stack_settings(settings, fake)
    queue = JobQueue(redis_client, config.queue)
    async with running_worker(queue, slow_engine(), config):
        async with adapter_process(config, fake, tmp_path, "first") as first:
            question = await first.mention(fake, "자기소개 해 주세요")
            await until(lambda: shows_answer(fake, question), timeout=60, what="the first words")
            first.process.send(signal.SIGKILL)  # a crash, an OOM kill: nothing is handed over
            assert await first.process.wait_exit(10)
        async with adapter_process(config, fake, tmp_path, "second"):
            assert await final_reply(fake, question.ts, timeout=60) == ANSWER
            assert_one_finished_answer(fake, question)


async def test_two_replicas_one_killed_the_other_finishes_its_replies(
    settings: Settings, redis_client: aioredis.Redis, fake: FakeSlack, tmp_path: Path
) -> None:
    config = stack_settings(settings, fake)
    queue = JobQueue(redis_client, config.queue)
    async with (
        running_worker(queue, slow_engine(), config),
        adapter_process(config, fake, tmp_path, "a") as a,
        adapter_process(config, fake, tmp_path, "b"),
    ):
        question = await a.mention(fake, "자기소개 해 주세요")
        await until(lambda: shows_answer(fake, question), timeout=60, what="the first words")
        a.process.send(signal.SIGKILL)
        assert await final_reply(fake, question.ts, timeout=60) == ANSWER  # b took it over within the lease
        assert_one_finished_answer(fake, question)


async def _no_delivery(queue: JobQueue, job_id: str) -> bool:
    return await queue.delivery(job_id) is None


async def _job_done(queue: JobQueue, job_id: str) -> bool:
    return (await queue.job(job_id)).state == "done"
