"""Path (d): an OpenAI-compatible server (vLLM, SGLang, ``transformers serve``) with and without komt-bot in front.

``server`` sends the requests straight to the server (the ``openai`` engine in this process, nothing else);
``remote`` runs the whole komt-bot path against it: jobs through Redis to a ``komt-bot worker`` process whose engine
is ``openai``, answers read back from the output streams. The ratio remote/server is what the queue adds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from komt_bot.bench.measure import PathResult, PeakMemory, RequestTiming, summarize, timed
from komt_bot.bench.queuepath import QueueWorker
from komt_bot.bench.requests import BenchRequest
from komt_bot.engine.base import Engine, GenerationRequest, SamplingParams
from komt_bot.errors import EngineError
from komt_bot.settings import ModelSettings, Settings


def remote_settings(
    settings: Settings, model: ModelSettings, url: str | None, served_model: str | None
) -> tuple[Settings, ModelSettings]:
    """``settings`` and ``model`` with the openai engine pointed at ``url`` (and ``served_model``), where given.

    ``model.base`` stays: its tokenizer counts the prompt tokens (tokenizer files only).
    """
    chosen = {"base_url": url, "model": served_model}
    openai = settings.openai.model_validate({**settings.openai.model_dump(), **{k: v for k, v in chosen.items() if v}})
    model = model.model_copy(update={"engine": "openai"})
    return settings.model_copy(update={"openai": openai, "model": model}), model


async def server_row(
    settings: Settings,
    model: ModelSettings,
    batch: list[BenchRequest],
    sampling: SamplingParams,
    warm_up: tuple[list[BenchRequest], SamplingParams],
    concurrency: int,
    progress: Callable[[str], None],
) -> PathResult:
    """(d) ``server``: every request of ``batch`` straight to the server, concurrently, measured."""
    from komt_bot.engine import load_remote_engine

    progress(f"(d) straight to {settings.openai.base_url}, {len(batch)} requests at concurrency {concurrency}")
    engine = load_remote_engine(model, settings.openai.model_copy(update={"max_concurrency": concurrency}))
    try:
        await run_direct(engine, *warm_up)
        with PeakMemory() as memory, timed() as took:
            timings, errors = await run_direct(engine, batch, sampling)
    finally:
        await engine.close()
    row = summarize("server", concurrency, timings, took[0], memory.peak)
    if errors:  # the remote path retries such a request through the queue; here it is counted, not retried
        row.note = f"{len(errors)} of {len(batch)} requests failed: {errors[0]}"
    return row


async def run_direct(
    engine: Engine, requests: list[BenchRequest], sampling: SamplingParams
) -> tuple[list[RequestTiming], list[str]]:
    """Every request to the engine at its arrival time, concurrently; a request the server fails is noted."""
    start = time.perf_counter()
    errors: list[str] = []

    async def one(index: int, request: BenchRequest) -> RequestTiming:
        await asyncio.sleep(max(0.0, start + request.arrival - time.perf_counter()))
        arrived = start + request.arrival
        timing = RequestTiming()
        try:
            async for update in engine.generate(GenerationRequest(f"bench-{index}", request.prompt, sampling)):
                if update.text and timing.ttft is None:
                    timing.ttft = time.perf_counter() - arrived
                timing.tokens = update.completion_tokens
        except EngineError as e:
            errors.append(str(e))
        timing.e2e = time.perf_counter() - arrived
        return timing

    return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))), errors


async def remote_row(
    settings: Settings,
    model: ModelSettings,
    batch: list[BenchRequest],
    sampling: SamplingParams,
    concurrency: int,
    progress: Callable[[str], None],
) -> PathResult:
    """(d) ``remote``: the whole komt-bot path, a worker process with the openai engine, against the server."""
    progress(f"(d) queue + openai worker process, {len(batch)} requests at concurrency {concurrency}")
    config = settings.model_copy(update={"openai": settings.openai.model_copy(update={"max_concurrency": concurrency})})
    async with QueueWorker(config, model, concurrency) as worker:
        return await worker.row("remote", batch, sampling)
