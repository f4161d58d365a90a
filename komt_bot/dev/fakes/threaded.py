"""A fake platform served from an event loop of its own, in a thread of its own.

The soak's harness loop is busy (delivering events, reading Redis, judging); a fake served from that loop would
answer the adapters late whenever the harness is busy, and the latencies measured at the fake would be the
harness's. In its own loop it answers as soon as the interpreter lets it. Everything that touches the fake's state
runs in its loop (:meth:`ThreadedFake.read`), so the harness never reads a dict the fake is changing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

START_SECONDS = 10.0
STOP_SECONDS = 10.0


class Served(Protocol):
    """A fake server: started and stopped in the loop that serves it."""

    async def start(self) -> None:
        """Listen."""

    async def stop(self) -> None:
        """Stop listening."""


F = TypeVar("F", bound=Served)
T = TypeVar("T")


class ThreadedFake(Generic[F]):
    """``fake`` served in a thread; ``await start()``, ``await read(fn)`` as often as needed, ``await stop()``."""

    def __init__(self, fake: F, *, name: str = "fake-platform") -> None:
        self.fake = fake
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def start(self) -> None:
        """Start the thread and the fake's server in it."""
        self._thread.start()
        async with asyncio.timeout(START_SECONDS):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.fake.start(), self._loop))

    async def read(self, fn: Callable[[F], T]) -> T:
        """``fn(fake)``, run in the fake's loop (between two of its requests); returns what it returned."""

        async def apply() -> T:
            return fn(self.fake)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(apply(), self._loop))

    async def stop(self) -> None:
        """Stop the fake's server, then its loop and thread. Safe to call when it never started."""
        if not self._thread.is_alive():
            if not self._loop.is_closed():
                self._loop.close()
            return
        try:
            async with asyncio.timeout(STOP_SECONDS):
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, STOP_SECONDS)
