"""The terminal chat waiting for a worker and stopping an answer: it says how long it waits, keeps saying where the
question stands, ends with "no worker took the question" when none did, and prints not a word after Ctrl-C."""

from __future__ import annotations

import asyncio
import io
import os
import pty

import pytest
import redis.asyncio as aioredis

import adapters.console
from adapters.console import ANSWER_PREFIX, Interrupts, answer
from adapters.console_sink import ConsoleSink
from komt_bot import messages
from komt_bot.chat.editor import MessageView, ViewKind
from komt_bot.jobs import Turn
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from tests.fake_engine import ScriptedEngine
from tests.helpers import eventually, running_worker

LONG = "천천히 길게 답하는 중입니다. " * 60


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> JobQueue:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    return q


async def _has(stream: io.StringIO, text: str) -> bool:
    return text in stream.getvalue()


async def test_without_a_worker_it_says_how_long_it_waits_and_that_no_worker_took_it(
    queue: JobQueue, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapters.console, "STILL_LINE_SECONDS", 0.6)
    settings = settings.model_copy(update={"queue": settings.queue.model_copy(update={"job_timeout_seconds": 2.0})})
    out, err = io.StringIO(), io.StringIO()
    turns = [Turn(role="user", text="안녕")]
    assert await asyncio.wait_for(answer(queue, settings, turns, out=out, err=err, prefix=ANSWER_PREFIX), 15) is None
    lines = err.getvalue().splitlines()
    assert lines[:3] == [messages.TERMINAL_NO_WORKER, messages.terminal_wait_limit(2.0), messages.queue_position(0)]
    assert lines[3].startswith("⏳ 아직 대기 중: 1번째, ") and "still waiting: number 1 in the queue" in lines[3]
    assert lines[3].endswith("(up to 2 s)")
    assert out.getvalue() == messages.TERMINAL_NOT_TAKEN + "\n"  # not "the answer took too long"
    assert await queue.backlog() == 0  # the question left the queue with the chat


def test_the_wait_is_worded_in_both_languages() -> None:
    assert messages.terminal_wait_limit(600) == "⏳ 작업자를 최대 10분 기다립니다 / it waits up to 10 min for a worker"
    for text in (messages.TERMINAL_NOT_TAKEN, messages.terminal_wait_limit(45), messages.still_waiting(0, 30, 600)):
        korean, english = text.split(" / ", 1)
        assert any("가" <= ch <= "힣" for ch in korean) and english.isascii()
    assert messages.TERMINAL_NOT_TAKEN.endswith("no worker took the question, gave up waiting")


async def test_not_a_word_is_printed_after_ctrl_c(queue: JobQueue, settings: Settings) -> None:
    engine = ScriptedEngine(lambda prompt: LONG, piece_chars=2, delay=0.01)
    out, err, keys = io.StringIO(), io.StringIO(), Interrupts()
    async with running_worker(queue, engine, settings):
        with keys.taken():
            turns = [Turn(role="user", text="길게")]
            asking = asyncio.create_task(answer(queue, settings, turns, out=out, err=err, interrupts=keys, prefix="> "))
            await eventually(lambda: _has(out, "> 천천히 길게"))
            at_the_press = out.getvalue()
            assert keys.press()
            assert await asyncio.wait_for(asking, 10) is None
    assert out.getvalue() == at_the_press + "\n" + messages.STOPPED + "\n"


async def test_a_held_sink_prints_only_the_closing_line() -> None:
    out = io.StringIO()
    sink = ConsoleSink(out, prefix="> ")
    sink.show(MessageView("첫 마디", ViewKind.ANSWER))
    sink.hold()
    sink.show(MessageView("첫 마디 그리고 더", ViewKind.ANSWER))
    sink.show(MessageView(f"첫 마디 그리고 더\n\n{messages.STOPPED}", ViewKind.FINAL))
    assert out.getvalue() == f"> 첫 마디\n{messages.STOPPED}\n"
    finished = io.StringIO()
    sink = ConsoleSink(finished, prefix="> ")
    sink.show(MessageView("답", ViewKind.ANSWER))
    sink.hold()
    sink.show(MessageView("답\n\n끝난 답변", ViewKind.FINAL))  # the answer ended before the stop: still "stopped"
    assert finished.getvalue() == f"> 답\n{messages.STOPPED}\n"


def test_ctrl_c_is_not_echoed_into_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    termios = pytest.importorskip("termios")
    leader, follower = pty.openpty()
    try:
        with os.fdopen(os.dup(follower)) as terminal:
            monkeypatch.setattr("sys.stdin", terminal)
            assert termios.tcgetattr(follower)[3] & termios.ECHOCTL
            with adapters.console._ctrl_c_not_echoed():
                assert not termios.tcgetattr(follower)[3] & termios.ECHOCTL  # no "^C" mid-line
            assert termios.tcgetattr(follower)[3] & termios.ECHOCTL  # the terminal is as it was
    finally:
        os.close(leader)
        os.close(follower)
