"""The terminal adapter: ``komt-bot chat [PROMPT]`` (and ``serve --chat``), through the queue like every adapter.

Without a prompt it is a REPL that keeps the conversation as context: ``/reset`` forgets it; ``/quit``, Ctrl-D, or
Ctrl-C at the prompt leaves (with a newline). Ctrl-C during an answer stops that answer — its job is cancelled, the
text so far stays — and the chat goes on; a second Ctrl-C stops waiting for the worker to confirm.

The answer takes the path every adapter's does (:func:`komt_bot.chat.ask.deliver` and the reply editor) into an
append-only :class:`~adapters.console_sink.ConsoleSink`; only the wait in the queue is worded here.

Ctrl-C reaches the chat as :meth:`Interrupts.press` (komt_bot.cli.signals.Shutdown hands SIGINT to it while a chat
runs). Lines are read in a thread of their own, so the event loop — and Ctrl-C — stays live while the prompt waits;
tests pass a scripted ``read`` and press the keys themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from adapters.console_sink import TERMINAL_LIMITS, ConsoleSink
from komt_bot import messages
from komt_bot.chat.ask import Refusal, check, deliver
from komt_bot.chat.editor import ReplyEditor
from komt_bot.errors import KomtError, QueueError
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.queue import JobQueue, open_queue
from komt_bot.settings import Settings

PROMPT = "\nyou> "
ANSWER_PREFIX = "komt> "
WAIT_LINE_SECONDS = 0.5  # how often a waiting job's place in the queue is read
STILL_LINE_SECONDS = 30.0  # a waiting job's place is said again this often while it does not change


class Interrupts:
    """Ctrl-C as the terminal chat sees it: each press wakes whatever the chat is waiting on."""

    def __init__(self) -> None:
        self._pressed = asyncio.Event()
        self.active = False  # a chat is running: Ctrl-C is its, not the command's
        self.reader_blocked = False  # a line reader was left waiting on stdin (Ctrl-C at the prompt)
        self.on_press: Callable[[], None] | None = None  # run at the press itself: an answer stops printing there

    def press(self) -> bool:
        """One Ctrl-C (call it on the event loop's thread). True when a chat took it."""
        if not self.active:
            return False
        if self.on_press is not None:
            self.on_press()
        self._pressed.set()
        return True

    def clear(self) -> None:
        """Forget presses so far."""
        self._pressed.clear()

    async def wait(self) -> None:
        """Return at the next press (at once if one is pending)."""
        await self._pressed.wait()

    @contextlib.contextmanager
    def taken(self) -> Iterator[Interrupts]:
        """Ctrl-C belongs to the chat for the duration of the block."""
        self.active = True
        self.clear()
        try:
            yield self
        finally:
            self.active = False

    def leave(self) -> None:
        """End the process now if a line reader still waits on stdin: a thread blocked reading it could crash the
        interpreter's shutdown. Called by the command once the chat is over."""
        if self.reader_blocked:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


async def _first(work: asyncio.Future[Any], keys: Interrupts) -> bool:
    """Wait for ``work`` or a Ctrl-C, whichever comes first: True when ``work`` is done."""
    pressed = asyncio.ensure_future(keys.wait())
    try:
        await asyncio.wait({work, pressed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        pressed.cancel()
    return work.done()


def _read_in_thread(read: Callable[[str], str], prompt: str) -> asyncio.Future[str | None]:
    """``read(prompt)`` in a daemon thread; the future holds the line, or None at end of input."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()

    def settle(line: str | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(line)

    def target() -> None:
        line: str | None = None
        error: BaseException | None = None
        try:
            line = read(prompt)
        except EOFError:
            pass
        except BaseException as e:
            error = e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, line, error)

    threading.Thread(target=target, name="komt-chat-input", daemon=True).start()
    return future


async def answer(
    queue: JobQueue,
    settings: Settings,
    conversation: list[Turn],
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    interrupts: Interrupts | None = None,
    prefix: str = "",
) -> str | None:
    """Ask the queue and print the answer as it streams (status lines go to ``err``). Returns the answer, or None
    if it did not finish. A Ctrl-C (``interrupts``) cancels the job; the text so far stays on screen."""
    keys = interrupts or Interrupts()
    question = check(conversation[-1].text, settings.limits)
    if isinstance(question, Refusal):
        print(messages.TERMINAL_EMPTY if question.kind == "empty" else question.text, file=out, flush=True)
        return None
    request = JobRequest(
        conversation=[*conversation[:-1], Turn(role="user", text=question)], origin=Origin(platform="console")
    )
    try:
        submission = await queue.submit(request)
        if not await queue.presence.workers():
            print(messages.TERMINAL_NO_WORKER, file=err, flush=True)
            print(messages.terminal_wait_limit(settings.queue.job_timeout_seconds), file=err, flush=True)
    except KomtError as e:
        print(messages.for_error(e), file=out, flush=True)
        return None
    sink = ConsoleSink(out, prefix=prefix)
    try:
        with _ctrl_c_not_echoed():
            return await _follow(queue, submission.job_id, settings, keys, sink, err=err)
    except QueueError:
        sink.abandon(messages.QUEUE_DOWN)
        return None
    finally:
        with contextlib.suppress(KomtError):
            if (await queue.job(submission.job_id)).state in ("queued", "running"):
                await queue.cancel(submission.job_id)


async def _follow(
    queue: JobQueue, job_id: str, settings: Settings, keys: Interrupts, sink: ConsoleSink, *, err: TextIO
) -> str | None:
    """The reply through the shared flow; the first Ctrl-C cancels the job (the worker's confirmation ends the
    reply with "stopped"), a second one stops waiting for it."""
    editor = ReplyEditor(sink, TERMINAL_LIMITS)
    timeout = settings.queue.job_timeout_seconds
    reply = asyncio.ensure_future(deliver(queue, job_id, editor, timeout_seconds=timeout))
    waiting = asyncio.ensure_future(_wait_lines(queue, job_id, sink, err, limit=timeout))
    keys.on_press = sink.hold  # not a word more after the press: the next line says "stopped"
    try:
        if not await _first(reply, keys):
            keys.clear()
            cancelling = asyncio.ensure_future(queue.cancel(job_id))
            cancelling.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
            if not (await _first(cancelling, keys) and await _first(reply, keys)):
                sink.abandon(messages.STOPPED)  # the second Ctrl-C: stop waiting for the worker (or Redis)
                return None
        outcome = reply.result()
    finally:
        keys.on_press = None
        for task in (reply, waiting):
            task.cancel()
        await asyncio.gather(reply, waiting, return_exceptions=True)
    return outcome.text if outcome.kind == "done" else None


async def _wait_lines(queue: JobQueue, job_id: str, sink: ConsoleSink, err: TextIO, *, limit: float) -> None:
    """While the job waits, its place in the queue on ``err`` at each change, and again every
    ``STILL_LINE_SECONDS`` with the time waited and ``limit``; once a worker has it, the answer's prefix. The terminal
    words the wait itself: the shared placeholder says "starting shortly" even when no worker runs, and nothing is
    shown when a worker starts the job before its first words."""
    shown: int | None = None
    started = said = time.monotonic()
    with contextlib.suppress(KomtError):  # the reply itself says what became of the queue
        while not sink.finished:
            await asyncio.sleep(WAIT_LINE_SECONDS)
            position = await queue.position(job_id)
            if position is None:
                if (await queue.job(job_id)).state == "running":
                    sink.begin()
                return
            now = time.monotonic()
            if position != shown:
                print(messages.queue_position(position), file=err, flush=True)
                shown, said = position, now
            elif now - said >= STILL_LINE_SECONDS and not sink.finished:
                print(messages.still_waiting(position, now - started, limit), file=err, flush=True)
                said = now


def _terminal_attributes() -> tuple[int, list[Any]] | None:
    """stdin's file descriptor and terminal attributes, or None when it is not a POSIX terminal."""
    try:
        import termios

        fd = sys.stdin.fileno()
        return (fd, termios.tcgetattr(fd)) if os.isatty(fd) else None
    except (ImportError, OSError, ValueError, AttributeError):  # not a terminal, or not a POSIX one
        return None


@contextlib.contextmanager
def _ctrl_c_not_echoed() -> Iterator[None]:
    """While an answer prints, Ctrl-C does not echo ``^C`` into the middle of its line (the terminal's ECHOCTL)."""
    attributes = _terminal_attributes()
    if attributes is None:
        yield
        return
    import termios

    fd, saved = attributes
    quiet = list(saved)
    quiet[3] = saved[3] & ~termios.ECHOCTL
    with contextlib.suppress(OSError, termios.error):
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, saved)


@contextlib.contextmanager
def _terminal_kept() -> Iterator[None]:
    """Put the terminal back as it was: a line editor stopped mid-line (Ctrl-C at the prompt) may leave it raw."""
    attributes = _terminal_attributes()
    if attributes is None:
        yield
        return
    import termios

    fd, saved = attributes
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def repl(
    queue: JobQueue,
    settings: Settings,
    read: Callable[[str], str] = input,
    *,
    interrupts: Interrupts | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> None:
    """Chat until ``/quit``, end of input or Ctrl-C at the prompt, keeping the conversation."""
    keys = interrupts or Interrupts()
    conversation: list[Turn] = []
    print(messages.TERMINAL_WELCOME, file=out, flush=True)
    with keys.taken(), _terminal_kept():
        while True:
            keys.clear()
            reading = _read_in_thread(read, PROMPT)
            if not await _first(reading, keys):
                keys.reader_blocked = True
                print(file=out, flush=True)
                return
            line = reading.result()
            if line is None:  # Ctrl-D
                print(file=out, flush=True)
                return
            command = line.strip()
            if command in ("/quit", "/exit"):
                return
            if command == "/reset":
                conversation = []
                print(messages.TERMINAL_RESET, file=out, flush=True)
                continue
            if not command:
                continue
            turns = [*conversation, Turn(role="user", text=line)]
            reply = await answer(queue, settings, turns, out=out, err=err, interrupts=keys, prefix=ANSWER_PREFIX)
            if reply is not None:
                conversation += [Turn(role="user", text=line), Turn(role="assistant", text=reply)]


async def run_chat(settings: Settings, prompt: str | None, interrupts: Interrupts | None = None) -> None:
    """``komt-bot chat``: one question (Ctrl-C cancels it), or the REPL."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    keys = interrupts or Interrupts()
    async with open_queue(settings) as queue:
        if prompt is None:
            await repl(queue, settings, interrupts=keys)
            return
        with keys.taken():
            reply = await answer(queue, settings, [Turn(role="user", text=prompt)], interrupts=keys)
        if reply is None:
            raise SystemExit(1)
