"""Small helpers shared by tests: waiting for a condition, running a worker in the background."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from komt_bot.engine.base import Engine
from komt_bot.jobs import Event
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from komt_bot.worker import Worker

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value: {value!r})")
        await asyncio.sleep(interval)


async def until_running(queue: JobQueue, job_id: str) -> None:
    """Wait until a worker has started the job."""

    async def running() -> bool:
        return (await queue.job(job_id)).state == "running"

    await eventually(running)


async def collect_events(queue: JobQueue, job_id: str, *, timeout: float = 30.0) -> list[Event]:
    """Every event of a job up to its terminal one."""
    events: list[Event] = []

    async def read() -> None:
        async for event in queue.events(job_id, block_seconds=0.2):
            if event is not None:
                events.append(event)

    await asyncio.wait_for(read(), timeout)
    return events


@contextlib.asynccontextmanager
async def running_worker(
    queue: JobQueue, engine: Engine, settings: Settings, *, name: str = "test-worker"
) -> AsyncIterator[Worker]:
    """A real Worker serving ``queue`` in the background for the duration of the block."""
    worker = Worker(queue, engine, settings, name=name)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
