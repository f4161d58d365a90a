"""Structured logs: one parseable line per job event, text or JSON, and never a secret or a person's message at info."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from komt_bot.logs import JOB_LOGGER, MASK, make_handler, scrub, setup_logging
from komt_bot.queue import JobQueue
from komt_bot.settings import LogSettings, Settings
from tests.fake_engine import ScriptedEngine
from tests.helpers import collect_events, running_worker
from tests.test_admin import ask

SLACK_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
DISCORD_TOKEN = "MTA4OTk5OTk5OTk5OTk5OTk5OQ.GxYzAb.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.fixture
def root_output() -> Iterator[io.StringIO]:
    """The root logger set up by ``setup_logging`` (JSON, INFO) into a buffer; the previous setup restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    setup_logging(LogSettings(level="INFO", format="json"), stream=out)
    yield out
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def formatted(settings: LogSettings, level: int, message: str, *args: object, **fields: object) -> str:
    """One record through the configured handler, as it would be written."""
    out = io.StringIO()
    handler = make_handler(settings, out)
    record = logging.LogRecord(JOB_LOGGER, level, __file__, 1, message, args, None)
    record.__dict__.update(fields)
    handler.handle(record)
    return out.getvalue()


async def test_every_job_event_is_one_json_line_with_its_fields(
    root_output: io.StringIO, redis_client: aioredis.Redis, settings: Settings
) -> None:
    queue = JobQueue(redis_client, settings.queue)
    question = "비밀스러운 개인 질문입니다: 제 전화번호는 010-1234-5678"
    async with running_worker(queue, ScriptedEngine("대답입니다."), settings):
        job_id = (await queue.submit(ask(question))).job_id
        await collect_events(queue, job_id)

    lines = [json.loads(line) for line in root_output.getvalue().splitlines()]
    events = {line["message"]: line for line in lines if line.get("job_id") == job_id}
    assert set(events) == {"job started", "job finished"}
    started, finished = events["job started"], events["job finished"]
    assert (started["platform"], started["attempt"], started["logger"]) == ("slack", 1, JOB_LOGGER)
    assert (finished["outcome"], finished["finish_reason"]) == ("done", "stop")
    assert finished["seconds"] >= 0 and finished["completion_tokens"] > 0
    assert "010-1234-5678" not in root_output.getvalue()
    assert "대답입니다" not in root_output.getvalue()


def test_text_lines_append_fields_as_key_value_pairs() -> None:
    line = formatted(LogSettings(), logging.INFO, "job finished", job_id="abc123", outcome="done", note="two words")
    assert ' INFO    komt_bot.jobs: job finished job_id=abc123 outcome=done note="two words"' in line


def test_json_lines_are_single_objects() -> None:
    line = formatted(LogSettings(format="json"), logging.INFO, "job failed", job_id="abc", code="engine_error")
    data = json.loads(line)
    assert (data["level"], data["message"], data["job_id"], data["code"]) == (
        "INFO",
        "job failed",
        "abc",
        "engine_error",
    )
    assert line.count("\n") == 1


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tokens_and_passwords_are_masked_in_messages_and_fields(fmt: str) -> None:
    out = formatted(
        LogSettings(format=fmt),
        logging.WARNING,
        "auth failed with %s on %s",
        SLACK_TOKEN,
        "redis://:hunter2@redis:6379/0",
        header=f"Bot {DISCORD_TOKEN}",
        url="https://user:pw123@example.invalid/path",
    )
    for secret in (SLACK_TOKEN, DISCORD_TOKEN, "hunter2", "pw123"):
        assert secret not in out
    assert MASK in out
    assert "redis://" in out and "@redis:6379/0" in out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_message_contents_are_only_a_length_at_info_but_shown_at_debug(fmt: str) -> None:
    settings = LogSettings(format=fmt, level="DEBUG")
    info = formatted(settings, logging.INFO, "question received", text="서울 날씨 알려줘", job_id="j1")
    debug = formatted(settings, logging.DEBUG, "question received", text="서울 날씨 알려줘", job_id="j1")
    assert "서울 날씨" not in info and "<9 chars>" in info and "j1" in info
    assert "서울 날씨 알려줘" in debug


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = "job 3f2a finished in 1.2 s on gpu-1 (redis://redis:6379/0)"
    assert scrub(text) == text
