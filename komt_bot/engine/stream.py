"""The per-request channel between an engine and the caller of ``generate``.

The engine side (:class:`RequestChannel`) pushes :class:`GenerationUpdate` objects from the event loop; the caller's
side (:class:`RequestStream`) is the async iterator. The engine only ever holds the channel, never the stream, so a
caller that drops its stream (leaves an ``async for`` early) lets it be collected, and that cancels the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace

from komt_bot.engine.base import FinishReason, GenerationRequest, GenerationUpdate


class RequestChannel:
    """Engine-side state of one request's output: a queue of updates and the cancel hook."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.queue: asyncio.Queue[GenerationUpdate] = asyncio.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.last_update: GenerationUpdate | None = None
        self.on_cancel: Callable[[RequestChannel], None] | None = None

    @property
    def request_id(self) -> str:
        """The request's id."""
        return self.request.request_id

    @property
    def done(self) -> bool:
        """Whether the final update has been pushed."""
        return self.last_update is not None

    def push(self, update: GenerationUpdate) -> None:
        """Queue an update for the caller (on the event loop thread). Ignored once the request has ended."""
        if self.done:
            return
        self.prompt_tokens = max(self.prompt_tokens, update.prompt_tokens)
        self.completion_tokens = max(self.completion_tokens, update.completion_tokens)
        if update.finished:
            self.last_update = update
        self.queue.put_nowait(update)

    def push_text(self, text: str) -> None:
        """Queue a delta (nothing when ``text`` is empty)."""
        if text:
            self.push(self.update(text))

    def finish(self, text: str, reason: FinishReason, error: str | None = None) -> None:
        """Queue the final update."""
        self.push(replace(self.update(text), finished=True, finish_reason=reason, error=error))

    def update(self, text: str) -> GenerationUpdate:
        """A non-final update carrying the current usage counts."""
        return GenerationUpdate(
            request_id=self.request_id,
            text=text,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )

    def cancel(self) -> None:
        """End the request with ``"cancelled"`` and tell the engine to free its slot (on the event loop thread)."""
        if self.done:
            return
        self.finish("", "cancelled")
        if self.on_cancel is not None:
            self.on_cancel(self)

    def cancel_threadsafe(self) -> None:
        """:meth:`cancel` from any thread (e.g. a garbage-collected stream)."""
        loop = self.loop
        if loop is None or self.done or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self.cancel)


class RequestStream:
    """The async iterator ``generate`` returns (see :class:`komt_bot.engine.base.GenerationStream`).

    Work starts on the first ``__anext__``; ``start`` is called then, on the running event loop.
    """

    def __init__(self, channel: RequestChannel, start: Callable[[RequestChannel], None]) -> None:
        self._channel = channel
        self._start = start
        self._started = False
        self._ended = False

    @property
    def request_id(self) -> str:
        """The request's id."""
        return self._channel.request_id

    @property
    def last_update(self) -> GenerationUpdate | None:
        """The request's final update, once there is one."""
        return self._channel.last_update

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> GenerationUpdate:
        if self._ended:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            self._channel.loop = asyncio.get_running_loop()
            if not self._channel.done:  # cancelled before it started
                self._start(self._channel)
        update = await self._channel.queue.get()
        if update.finished:
            self._ended = True
        return update

    def cancel(self) -> None:
        """Stop the request; the next ``__anext__`` returns its final ``"cancelled"`` update."""
        self._channel.cancel()

    async def aclose(self) -> None:
        """Cancel the request (if it is still running) and end the iteration."""
        self._channel.cancel()
        self._ended = True

    def __del__(self) -> None:
        if self._started and not self._channel.done:
            self._channel.cancel_threadsafe()
