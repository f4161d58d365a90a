"""Heartbeat records for adapters (``komt-bot health --component slack|discord`` reads them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from komt_bot.errors import QueueError
from komt_bot.queue import JobQueue

log = logging.getLogger(__name__)


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
    """Publish ``{component, host, ...status()}`` every ``interval`` seconds until cancelled."""
    name = component_name(component)
    try:
        while True:
            record = {"component": component, "host": socket.gethostname(), **(status() if status else {})}
            try:
                await queue.register("component", name, record, ttl=3 * interval)
            except QueueError as e:
                log.warning("%s heartbeat failed: %s", component, e)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(QueueError, asyncio.CancelledError):
            await asyncio.shield(queue.unregister("component", name))
