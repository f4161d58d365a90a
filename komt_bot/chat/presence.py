"""An adapter's presence record (``komt-bot health --component slack|discord`` reads it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from komt_bot.errors import QueueError
from komt_bot.queue import JobQueue
from komt_bot.queue.presence import ComponentRecord

log = logging.getLogger(__name__)
STALE_PERIODS = 3  # a record is stale after this many missed heartbeats


def component_name(component: str) -> str:
    """``slack-host-pid``: the record's key; the ``component`` field inside says which adapter it is."""
    return f"{component}-{socket.gethostname()}-{os.getpid()}"


async def component_heartbeat(
    queue: JobQueue,
    component: str,
    status: Callable[[], dict[str, Any]] | None = None,
    *,
    interval: float = 5.0,
) -> None:
    """Publish ``{component, host, ...status()}`` every ``interval`` seconds until cancelled, then remove it."""
    name = component_name(component)
    try:
        while True:
            record = ComponentRecord(
                component=component,
                host=socket.gethostname(),
                stale_after=STALE_PERIODS * interval,
                **(status() if status else {}),
            )
            try:
                await queue.presence.publish("component", name, record)
            except QueueError as e:
                log.warning("%s heartbeat failed: %s", component, e)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(QueueError, asyncio.CancelledError):
            await asyncio.shield(queue.presence.remove("component", name))


@contextlib.asynccontextmanager
async def adapter_presence(
    queue: JobQueue, component: str, status: Callable[[], dict[str, Any]] | None = None
) -> AsyncIterator[None]:
    """Keep the adapter's presence record fresh for the duration of the block, and remove it afterwards."""
    task = asyncio.create_task(component_heartbeat(queue, component, status), name=f"{component}-heartbeat")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
