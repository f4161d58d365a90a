"""The terminal chat: Ctrl-C stops an answer and keeps the conversation, Ctrl-C at the prompt or Ctrl-D leaves, and
the status lines say what is going on (no worker, the queue position). Also the worker's second Ctrl-C.

The REPL runs in this process with a scripted input and presses of its own; `komt-bot chat` runs as a subprocess
that gets real SIGINTs. The worker is real (scripted engine) and so is Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import queue as threads
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from adapters.console import ANSWER_PREFIX, Interrupts, answer, repl
from adapters.console_sink import TERMINAL_LIMITS, ConsoleSink
from komt_bot import messages
from komt_bot.chat.editor import ReplyEditor
from komt_bot.jobs import Turn
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from tests.conftest import REDIS_URL
from tests.fake_engine import ScriptedEngine
from tests.helpers import eventually, running_worker

ROOT = Path(__file__).resolve().parents[1]
LONG = "천천히 길게 답하는 중입니다. " * 60  # ~6 s at the engine's pace: long enough to be stopped
SHORT = "짧은 답변입니다."


def answers(prompt: str) -> str:
    """A long answer to a question with 길게 in it, a short one otherwise."""
    return LONG if prompt.rsplit("### instruction:", 1)[-1].find("길게") != -1 else SHORT


class ScriptedInput:
    """``input()`` for the REPL: lines the test gives, end of input when it says so."""

    def __init__(self) -> None:
        self.lines: threads.Queue[str | None] = threads.Queue()

    def __call__(self, prompt: str) -> str:
        line = self.lines.get()
        if line is None:
            raise EOFError
        return line

    def close(self) -> None:
        self.lines.put(None)  # a reader thread still waiting ends


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> JobQueue:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    return q


@pytest.fixture
async def engine(queue: JobQueue, settings: Settings) -> AsyncIterator[ScriptedEngine]:
    scripted = ScriptedEngine(answers, piece_chars=2, delay=0.02)
    async with running_worker(queue, scripted, settings):
        yield scripted


async def test_ctrl_c_stops_the_answer_and_the_conversation_goes_on(
    queue: JobQueue, settings: Settings, engine: ScriptedEngine
) -> None:
    read, out, err, keys = ScriptedInput(), io.StringIO(), io.StringIO(), Interrupts()
    chat = asyncio.create_task(repl(queue, settings, read, interrupts=keys, out=out, err=err))
    try:
        read.lines.put("첫 질문")
        await eventually(lambda: _has(out, SHORT))
        read.lines.put("길게 답해 주세요")
        await eventually(lambda: _has(out, "komt> 천천히"))
        assert keys.press()  # Ctrl-C during the answer
        await eventually(lambda: _has(out, messages.STOPPED))
        await eventually(lambda: _cancelled(engine))  # the worker stopped generating
        read.lines.put("세 번째 질문")
        await eventually(lambda: _has(out, SHORT, times=2))
        # The conversation kept the first exchange; the stopped one is not part of it.
        assert "첫 질문" in engine.prompts[-1] and SHORT in engine.prompts[-1]
        assert "길게" not in engine.prompts[-1]
        assert keys.press()  # Ctrl-C at the prompt leaves, with a newline
        await asyncio.wait_for(chat, 10)
        assert out.getvalue().endswith("\n") and keys.reader_blocked
        assert not keys.press()  # the chat is over: Ctrl-C is the command's again
    finally:
        read.close()
        chat.cancel()


async def test_ctrl_d_leaves_with_a_newline(queue: JobQueue, settings: Settings) -> None:
    read, out = ScriptedInput(), io.StringIO()
    read.close()
    await asyncio.wait_for(repl(queue, settings, read, out=out), 10)
    assert out.getvalue() == messages.TERMINAL_WELCOME + "\n\n"


async def test_without_a_worker_it_says_so_once_and_shows_the_position(queue: JobQueue, settings: Settings) -> None:
    out, err, keys = io.StringIO(), io.StringIO(), Interrupts()
    with keys.taken():
        asking = asyncio.create_task(
            answer(queue, settings, [Turn(role="user", text="안녕")], out=out, err=err, interrupts=keys)
        )
        await eventually(lambda: _has(err, messages.queue_position(0)))
        assert keys.press()  # Ctrl-C while it waits: the queued job is cancelled
        assert await asyncio.wait_for(asking, 10) is None
    assert err.getvalue().count(messages.TERMINAL_NO_WORKER) == 1
    assert "starting shortly" not in err.getvalue() + out.getvalue()
    assert messages.STOPPED in out.getvalue()
    assert await queue.backlog() == 0


async def test_a_second_ctrl_c_stops_waiting_for_a_worker_that_never_confirms(
    queue: JobQueue, settings: Settings
) -> None:
    out, err, keys = io.StringIO(), io.StringIO(), Interrupts()
    with keys.taken():
        turns = [Turn(role="user", text="안녕")]
        asking = asyncio.create_task(answer(queue, settings, turns, out=out, err=err, interrupts=keys, prefix="komt> "))
        await eventually(lambda: _has(err, messages.TERMINAL_NO_WORKER))
        [job] = await queue.claim("frozen-worker", 1, block_seconds=1)  # it starts the job, then hangs
        await eventually(lambda: _has(out, "komt> "))
        assert keys.press()
        await eventually(lambda: queue.cancelled([job.job_id]))  # the stop was asked for; nobody confirms it
        assert not asking.done()
        assert keys.press()
        assert await asyncio.wait_for(asking, 10) is None
    assert out.getvalue() == "komt> \n" + messages.STOPPED + "\n"


async def test_messages_fit_the_terminal(queue: JobQueue, settings: Settings) -> None:
    out = io.StringIO()
    assert await answer(queue, settings, [Turn(role="user", text="  ")], out=out) is None
    assert out.getvalue().strip() == messages.TERMINAL_EMPTY
    for text in (messages.TERMINAL_EMPTY, messages.TERMINAL_NO_WORKER, messages.queue_position(2)):
        korean, english = text.split(" / ", 1)
        assert any("가" <= ch <= "힣" for ch in korean) and english.isascii()
        assert "mention" not in text


async def test_a_normal_answer_is_the_prefix_the_answer_and_a_newline(
    queue: JobQueue, settings: Settings, engine: ScriptedEngine
) -> None:
    out, err = io.StringIO(), io.StringIO()
    reply = await answer(queue, settings, [Turn(role="user", text="안녕")], out=out, err=err, prefix=ANSWER_PREFIX)
    assert reply == SHORT
    assert out.getvalue() == ANSWER_PREFIX + SHORT + "\n"
    assert err.getvalue() == ""


async def test_the_terminal_only_appends_what_each_view_adds() -> None:
    out = io.StringIO()
    ticks = itertools.count(step=1.0)  # every edit is past the interval: each flush is shown
    editor = ReplyEditor(ConsoleSink(out, prefix=ANSWER_PREFIX), TERMINAL_LIMITS, clock=lambda: next(ticks))
    await editor.status(messages.queued(0))  # the wait is the terminal's own line, not the thread's placeholder
    assert out.getvalue() == ""
    for piece in ("첫 ", "답변"):
        editor.append(piece)
        await editor.flush()
    assert out.getvalue() == "komt> 첫 답변"
    editor.reset()  # the worker restarted the job: the notice, and the answer again from its start
    await editor.flush()
    editor.append("다시 쓴 답변")
    await editor.flush()
    assert await editor.finish(messages.TRUNCATED, feedback="job")
    assert out.getvalue() == (
        "komt> 첫 답변\n" + messages.RESTARTED + "\nkomt> 다시 쓴 답변\n" + messages.TRUNCATED + "\n"
    )


async def test_a_closing_line_alone_goes_below_the_prefix() -> None:
    out = io.StringIO()
    sink = ConsoleSink(out, prefix=ANSWER_PREFIX)
    sink.begin()  # a worker has the job; it fails before its first words
    editor = ReplyEditor(sink, TERMINAL_LIMITS)
    await editor.finish(messages.failed(None, "boom"))
    sink.abandon(messages.STOPPED)  # the reply is over: nothing more is printed
    sink.begin()
    assert out.getvalue() == "komt> \n" + messages.failed(None, "boom") + "\n"


async def _has(stream: io.StringIO, text: str, *, times: int = 1) -> bool:
    return stream.getvalue().count(text) >= times


async def _cancelled(engine: ScriptedEngine) -> bool:
    return bool(engine.cancelled)


class Terminal:
    """`komt-bot chat` in a subprocess: lines in, output collected as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output = ""
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(4096):
            self.output += chunk.decode(errors="replace")

    async def shows(self, text: str, times: int = 1) -> None:
        async def seen() -> bool:
            return self.output.count(text) >= times

        await eventually(seen, timeout=30)

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((line + "\n").encode())
        await self.process.stdin.drain()

    async def exit_code(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), 20)
        await self._reader
        return code


@contextlib.asynccontextmanager
async def terminal(settings: Settings) -> AsyncIterator[Terminal]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    env |= {"KOMT_REDIS_URL": REDIS_URL, "KOMT_QUEUE__PREFIX": settings.queue.prefix, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "komt_bot", "chat",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        yield Terminal(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.slow
async def test_the_chat_command_takes_ctrl_c_for_the_answer_and_leaves_on_the_next(
    settings: Settings, engine: ScriptedEngine
) -> None:
    async with terminal(settings) as chat:
        await chat.shows("you> ")
        await chat.type("길게 답해 주세요")
        await chat.shows("komt> 천천히")
        chat.process.send_signal(signal.SIGINT)
        await chat.shows(messages.STOPPED)
        await eventually(lambda: _cancelled(engine))
        await chat.type("다음 질문")
        await chat.shows(SHORT)
        await chat.shows("you> ", times=3)
        chat.process.send_signal(signal.SIGINT)  # at the prompt: leave
        assert await chat.exit_code() == 0
        assert chat.output.endswith("\n") and "Traceback" not in chat.output


@pytest.mark.slow
async def test_the_chat_command_leaves_at_end_of_input(settings: Settings) -> None:
    async with terminal(settings) as chat:
        await chat.shows("you> ")
        assert chat.process.stdin is not None
        chat.process.stdin.close()  # Ctrl-D
        assert await chat.exit_code() == 0
        assert chat.output.endswith("you> \n")


STUCK_DRAIN = textwrap.dedent(
    """
    import asyncio
    from komt_bot.cli.signals import Shutdown

    shutdown = Shutdown(hard_deadline=60)

    async def main():
        shutdown.graceful = lambda: print("draining", flush=True)  # a drain that does not end by itself
        print("ready", flush=True)
        await asyncio.Event().wait()

    shutdown.run(main)
    """
)


@pytest.mark.parametrize("ready_first", [True, False])
def test_a_second_ctrl_c_stops_a_draining_worker_at_once(ready_first: bool) -> None:
    source = STUCK_DRAIN if ready_first else STUCK_DRAIN.replace("shutdown.graceful =", "_ =")
    process = subprocess.Popen(
        [sys.executable, "-c", source],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGINT)
    if ready_first:  # the first Ctrl-C starts the drain, the second ends the process
        assert process.stdout.readline() == "draining\n"
        process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=20)
    assert (process.returncode, "stopping now" in err) == ((130, True) if ready_first else (0, False))
