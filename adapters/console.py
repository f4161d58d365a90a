"""The terminal adapter: ``komt-bot chat [PROMPT]``, through the queue like every other adapter.

Without a prompt it is a REPL that keeps the conversation as context (``/reset`` forgets it, ``/quit`` or
Ctrl-D leaves). Ctrl-C during an answer stops that job.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import TextIO

from komt_bot import messages
from komt_bot.errors import KomtError, QueueError
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.prompt import check_question
from komt_bot.queue import JobQueue, open_queue
from komt_bot.settings import Settings

NO_WORKER = "⚠️ 실행 중인 작업자가 없습니다 / no worker is running: start one with `komt-bot worker`"


async def answer(
    queue: JobQueue, settings: Settings, conversation: list[Turn], *, out: TextIO = sys.stdout
) -> str | None:
    """Ask the queue and print the answer as it streams. Returns the answer, or None if it did not finish."""
    try:
        question = check_question(conversation[-1].text, max_chars=settings.limits.max_question_chars)
        request = JobRequest(
            conversation=[*conversation[:-1], Turn(role="user", text=question)], origin=Origin(platform="console")
        )
        submission = await queue.submit(request)
        if not await queue.presence.workers():
            print(NO_WORKER, file=sys.stderr)
    except KomtError as e:
        print(messages.for_error(e), file=out)
        return None
    try:
        return await _stream(queue, submission.job_id, settings, out)
    except QueueError:
        print("\n" + messages.QUEUE_DOWN, file=out)
        return None
    finally:
        with contextlib.suppress(KomtError):
            if (await queue.job(submission.job_id)).state in ("queued", "running"):
                await queue.cancel(submission.job_id)


async def _stream(queue: JobQueue, job_id: str, settings: Settings, out: TextIO) -> str | None:
    deadline = time.monotonic() + settings.queue.job_timeout_seconds
    text = ""
    shown_position: int | None = -1
    async for event in queue.events(job_id, block_seconds=0.5):
        if event is None:
            if time.monotonic() > deadline:
                print("\n" + messages.TIMEOUT, file=out)
                return None
            position = await queue.position(job_id)
            if position is not None and position != shown_position:
                print(messages.queued(position), file=sys.stderr)
                shown_position = position
            continue
        if event.type == "start" and event.attempt > 1:
            print("\n" + messages.RESTARTED, file=out)
            text = ""
        elif event.type == "delta":
            text += event.text
            out.write(event.text)
            out.flush()
        elif event.type == "error":
            print("\n" + messages.failed(event.code, event.message), file=out)
            return None
        elif event.type == "done":
            suffix = {"cancelled": messages.STOPPED, "length": messages.TRUNCATED}.get(event.finish_reason or "")
            print("\n" + suffix if suffix else "", file=out)
            return text if event.finish_reason != "cancelled" else None
    return None  # pragma: no cover - events() always ends with a terminal event


async def repl(queue: JobQueue, settings: Settings, read: Callable[[str], str] = input) -> None:
    """Chat until end of input, keeping the conversation."""
    conversation: list[Turn] = []
    print("komt-bot — 질문을 입력하세요 (/reset 새 대화, /quit 종료) / ask away (/reset, /quit)")
    while True:
        try:
            line = await asyncio.to_thread(read, "\nyou> ")
        except EOFError:
            print()
            return
        command = line.strip()
        if command in ("/quit", "/exit"):
            return
        if command == "/reset":
            conversation = []
            print("(새 대화 / new conversation)")
            continue
        print("komt> ", end="", flush=True)
        reply = await answer(queue, settings, [*conversation, Turn(role="user", text=line)])
        if reply is not None:
            conversation += [Turn(role="user", text=line), Turn(role="assistant", text=reply)]


async def run_chat(settings: Settings, prompt: str | None) -> None:
    """``komt-bot chat``: one question, or the REPL."""
    async with open_queue(settings) as queue:
        if prompt is None:
            await repl(queue, settings)
        elif await answer(queue, settings, [Turn(role="user", text=prompt)]) is None:
            raise SystemExit(1)
