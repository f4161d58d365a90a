"""How the processes are put together: Redis client, engine, worker, adapters, the all-in-one stack."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from komt_bot.cli.preflight import check_model
from komt_bot.engine.base import CheckedEngine, Engine
from komt_bot.errors import ConfigError, EngineError
from komt_bot.metrics import Metrics, process_metrics
from komt_bot.queue import JobQueue, open_queue
from komt_bot.queue.embedded import serve_redis
from komt_bot.settings import Settings
from komt_bot.worker import Worker, default_worker_name
from komt_bot.worker.metrics import MetricsHooks, sampling
from komt_bot.worker.warmup import warm_up

if TYPE_CHECKING:
    from adapters.console import Interrupts

log = logging.getLogger(__name__)
T = TypeVar("T")

ADAPTERS = {"slack": "adapters.slack", "discord": "adapters.discord"}


class AdapterServe(Protocol):
    def __call__(
        self, settings: Settings, queue: JobQueue, *, metrics: Metrics | None = None
    ) -> Coroutine[Any, Any, None]: ...


def configured_adapters(settings: Settings) -> list[str]:
    """The adapters whose credentials are set."""
    names = []
    if settings.slack.bot_token is not None:
        names.append("slack")
    if settings.discord.token is not None:
        names.append("discord")
    return names


def adapter_serve(name: str) -> AdapterServe:
    """The ``serve(settings, queue)`` coroutine function of an adapter module."""
    try:
        module = importlib.import_module(ADAPTERS[name])
    except ImportError as e:
        raise ConfigError(f"the {name} adapter needs its extra: pip install 'komt-bot[{name}]' ({e})") from e
    serve: AdapterServe = module.serve
    return serve


async def load_warm_engine(settings: Settings) -> Engine:
    """Load the configured engine (in a thread) and warm it up (:mod:`komt_bot.worker.warmup`)."""
    from komt_bot.engine import load_engine

    engine = await in_daemon_thread(lambda: load_engine(settings.model, settings.generation, settings.openai))
    if isinstance(engine, CheckedEngine):  # a remote server: serve even while it is down (jobs wait for it a while)
        problem = await engine.check()
        if problem:
            log.warning("%s; serving anyway: answers wait for it a while, then fail", problem)
            return engine
    try:
        await warm_up(engine, settings.model.max_prompt_tokens)
    except EngineError as e:
        if not isinstance(engine, CheckedEngine):
            await engine.close()
            raise
        log.warning("the model server failed the warm-up (%s); serving anyway", e)
    except BaseException:
        await engine.close()
        raise
    return engine


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """Run ``work`` in a daemon thread, so a process told to stop need not wait for it (a model load)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the waiting task was cancelled (the process is stopping)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = work()
        except BaseException as e:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(settle, None, e)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name="komt-load", daemon=True).start()
    return await future


async def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    name: str | None = None,
    on_ready: Callable[[Callable[[], None]], None] | None = None,
) -> None:
    """``komt-bot worker``: wait for Redis, load the model, then serve jobs until stopped.

    ``on_ready`` gets the worker's graceful stop once the worker exists (the signal handlers use it).
    """
    check_model(settings)
    worker_name = name or settings.worker.name or default_worker_name()
    queue_client = open_queue(settings, wait=True, name=f"komt-worker-{worker_name}")
    async with queue_client as queue, process_metrics(settings.metrics, queue) as metrics:
        if settings.model.engine == "openai":
            log.info("answering through %s (model %s)", settings.openai.base_url, settings.openai.model)
        else:
            log.info(
                "loading the model %s (adapter %s); this can take minutes", settings.model.base, settings.model.adapter
            )
        engine = await load_warm_engine(settings)
        try:
            worker = Worker(queue, engine, settings, name=worker_name, hooks=MetricsHooks(queue, metrics))
            if on_ready:
                on_ready(worker.stop)
            async with sampling(worker, metrics):
                await worker.run(burst=burst)
        finally:
            await engine.close()


async def run_adapter(settings: Settings, name: str) -> None:
    """``komt-bot slack`` / ``komt-bot discord``."""
    serve = adapter_serve(name)
    async with (
        open_queue(settings, wait=True, name=f"komt-{name}") as queue,
        process_metrics(settings.metrics, queue) as metrics,
    ):
        await serve(settings, queue, metrics=metrics)


async def run_stack(settings: Settings, *, chat: bool, interrupts: Interrupts | None = None) -> None:
    """``komt-bot serve``: a worker and every configured adapter (and the terminal chat) in one process.

    Without KOMT_REDIS_URL it runs the embedded redis-server (komt_bot.queue.embedded) for as long as it runs.
    ``interrupts`` are the chat's Ctrl-C presses (see adapters.console).
    """
    check_model(settings)
    adapters = configured_adapters(settings)
    if not adapters and not chat:
        log.warning("no Slack or Discord credentials are set: only the worker runs (add --chat to talk here)")
    with serve_redis(settings, announce=_say if chat else log.info) as settings:
        await _run_stack(settings, adapters, chat=chat, interrupts=interrupts)


def _say(line: str) -> None:
    """A line for the person at the terminal: the chat keeps the log to warnings."""
    print(line, file=sys.stderr, flush=True)


async def _run_stack(settings: Settings, adapters: list[str], *, chat: bool, interrupts: Interrupts | None) -> None:
    from adapters.console import repl

    async with open_queue(settings, embedded_ok=True) as queue, process_metrics(settings.metrics, queue) as metrics:
        engine = await load_warm_engine(settings)
        worker = Worker(queue, engine, settings, hooks=MetricsHooks(queue, metrics))
        tasks = [asyncio.create_task(worker.run(), name="worker")]
        tasks += [asyncio.create_task(adapter_serve(n)(settings, queue, metrics=metrics), name=n) for n in adapters]
        try:
            async with sampling(worker, metrics):
                if chat:
                    await repl(queue, settings, interrupts=interrupts)
                else:
                    await asyncio.gather(*tasks)
        finally:
            worker.stop()
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await engine.close()
