"""The per-request channel between a built-in engine and the caller of ``generate``.

The engine side (:class:`RequestChannel`) pushes :class:`GenerationUpdate` objects, or one final
:class:`~komt_bot.errors.EngineError`, from the event loop; the caller's side (:class:`RequestStream`) is the
:class:`~komt_bot.engine.base.GenerationStream`, which yields the updates and raises the error. The engine only ever
holds the channel, never the stream, so a caller that drops its stream (leaves an ``async for`` early) lets it be
collected, and that cancels the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace

from komt_bot.engine.base import FinishReason, GenerationRequest, GenerationUpdate
from komt_bot.errors import EngineError


class RequestChannel:
    """Engine-side state of one request's output: a queue of updates (or its error) and the cancel hook."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.queue: asyncio.Queue[GenerationUpdate | EngineError] = asyncio.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.done = False  # the request has ended: finished, failed or cancelled
        self.on_cancel: Callable[[RequestChannel], None] | None = None

    @property
    def request_id(self) -> str:
        """The request's id."""
        return self.request.request_id

    def push_text(self, text: str) -> None:
        """Queue a delta (nothing when ``text`` is empty). Ignored once the request has ended."""
        if text and not self.done:
            self.queue.put_nowait(self.update(text))

    def finish(self, text: str, reason: FinishReason) -> None:
        """Queue the final update. Ignored once the request has ended."""
        if not self.done:
            self.done = True
            self.queue.put_nowait(replace(self.update(text), finished=True, finish_reason=reason))

    def fail(self, error: EngineError) -> None:
        """End the request with ``error``, which the stream raises. Ignored once the request has ended."""
        if not self.done:
            self.done = True
            self.queue.put_nowait(error)

    def update(self, text: str) -> GenerationUpdate:
        """A non-final update carrying the current usage counts."""
        return GenerationUpdate(
            request_id=self.request_id,
            text=text,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )

    def cancel(self) -> None:
        """End the request and tell the engine to free its slot (on the event loop thread)."""
        if self.done:
            return
        self.done = True
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
    """The :class:`~komt_bot.engine.base.GenerationStream` the built-in engines return.

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

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> GenerationUpdate:
        if self._ended:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            self._channel.loop = asyncio.get_running_loop()
            if self._channel.done:  # closed before it started
                self._ended = True
                raise StopAsyncIteration
            self._start(self._channel)
        item = await self._channel.queue.get()
        if isinstance(item, EngineError):
            self._ended = True
            raise item
        if item.finished:
            self._ended = True
        return item

    async def aclose(self) -> None:
        """Cancel the request (if it is still running) and end the iteration."""
        self._channel.cancel()
        self._ended = True

    def __del__(self) -> None:
        if self._started and not self._channel.done:
            self._channel.cancel_threadsafe()
