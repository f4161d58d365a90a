"""The replies an adapter has in flight, so that shutting down can wait for them, then cancel the rest.

Where the platform library already runs each event in a task of its own (discord.py), the adapter tracks the reply
in that task (:meth:`ReplyTasks.track`); where handlers must return at once (slack-bolt), it spawns the reply as a
task of its own (:meth:`ReplyTasks.spawn`). A cancelled reply stops its job and says so (see the adapters).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class ReplyTasks:
    """The set of reply tasks in flight for one adapter (``platform`` names it in logs)."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """How many replies are in flight (the adapters' heartbeat records report it)."""
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task of its own, kept until it ends; a failure is logged, not lost."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def track(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the current task, which :meth:`close` may cancel while it runs."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await work
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def close(self, grace: float = 0.0) -> None:
        """Give the replies in flight up to ``grace`` seconds to finish, then cancel the rest and wait for them."""
        tasks = self._tasks - {asyncio.current_task()}
        if not tasks:
            return
        pending: set[asyncio.Task[Any]] = set(tasks)
        if grace > 0:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s handler failed", self.platform, exc_info=task.exception())
