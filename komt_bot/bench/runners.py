"""The three paths, each run once over a batch of requests: (a) sequential, (b) engine, (c) queue + worker."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from komt_bot.bench.environment import worker_environment
from komt_bot.bench.measure import PathResult, PeakMemory, RequestTiming, gpu_peak_reset, summarize, timed
from komt_bot.bench.requests import BenchRequest
from komt_bot.engine.base import Engine, GenerationRequest, SamplingParams
from komt_bot.settings import ModelSettings, Settings

# -- (a) the model card's way ----------------------------------------------------------------------------------


class _FirstTokenClock:
    """A transformers streamer that notes when the first new token appears (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, _value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        return None


def run_sequential(loaded: Any, requests: list[BenchRequest], sampling: SamplingParams) -> list[RequestTiming]:
    """``model.generate`` one request at a time in arrival order, as the model card does."""
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    timings: list[RequestTiming] = []
    start = time.perf_counter()
    for request in requests:
        wait = start + request.arrival - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        inputs = tokenizer(request.prompt, return_tensors="pt").to(loaded.device)
        clock = _FirstTokenClock()
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                streamer=clock,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        arrived = start + request.arrival
        timings.append(
            RequestTiming(
                ttft=(clock.first - arrived) if clock.first else None,
                e2e=time.perf_counter() - arrived,
                tokens=int(output.shape[-1] - inputs["input_ids"].shape[-1]),
            )
        )
    return timings


def sequential_row(
    loaded: Any,
    batch: list[BenchRequest],
    sampling: SamplingParams,
    concurrency: int,
    cap: int | None,
    progress: Callable[[str], None],
) -> PathResult:
    """(a) once over ``batch`` (its first ``cap`` requests), measured."""
    subset = batch[: cap or len(batch)]
    progress(f"(a) sequential generate, {len(subset)} requests")
    gpu_peak = gpu_peak_reset()
    with PeakMemory() as memory, timed() as took:
        timings = run_sequential(loaded, subset, sampling)
    row = summarize("sequential", concurrency, timings, took[0], memory.peak)
    row.peak_gpu_mb = gpu_peak()
    if len(subset) < len(batch):
        row.note = f"ran {len(subset)} of {len(batch)} requests"
    return row


# -- (b) the engine alone ---------------------------------------------------------------------------------------


async def run_engine(engine: Engine, requests: list[BenchRequest], sampling: SamplingParams) -> list[RequestTiming]:
    """Every request into the engine at its arrival time, concurrently."""
    start = time.perf_counter()

    async def one(index: int, request: BenchRequest) -> RequestTiming:
        await asyncio.sleep(max(0.0, start + request.arrival - time.perf_counter()))
        arrived = start + request.arrival
        timing = RequestTiming()
        async for update in engine.generate(GenerationRequest(f"bench-{index}", request.prompt, sampling)):
            if update.text and timing.ttft is None:
                timing.ttft = time.perf_counter() - arrived
            timing.tokens = update.completion_tokens
        timing.e2e = time.perf_counter() - arrived
        return timing

    return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))


async def engine_row(
    engine: Any, batch: list[BenchRequest], sampling: SamplingParams, concurrency: int, progress: Callable[[str], None]
) -> PathResult:
    """(b) once over ``batch``, measured."""
    progress(f"(b) engine, {len(batch)} requests at concurrency {concurrency}")
    engine.stats.batch_sizes.clear()
    gpu_peak = gpu_peak_reset()
    with PeakMemory() as memory, timed() as took:
        timings = await run_engine(engine, batch, sampling)
    row = summarize("engine", concurrency, timings, took[0], memory.peak)
    row.peak_gpu_mb = gpu_peak()
    row.batch_size_max = max(engine.stats.batch_sizes, default=None)
    return row


# -- (c) the whole path -----------------------------------------------------------------------------------------


async def run_queue_path(
    settings: Settings,
    model: ModelSettings,
    requests: list[BenchRequest],
    sampling: SamplingParams,
    capacity: int,
) -> tuple[list[RequestTiming], float, float]:
    """Start a worker process, submit every request through Redis, read the answers back.

    Returns (timings, the worker's peak memory, seconds from the first arrival to the last answer); the worker's
    start-up (model loading) is not counted.
    """
    from komt_bot.queue import JobQueue, connect

    prefix = f"komt-bench-{uuid.uuid4().hex[:8]}"
    queue_settings = settings.queue.model_copy(update={"prefix": prefix, "max_backlog": max(1000, len(requests))})
    client = connect(settings)
    queue = JobQueue(client, queue_settings)
    worker = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; the bench owns the loop
        [sys.executable, "-m", "komt_bot", "worker", "--name", f"{prefix}-worker"],
        env=worker_environment(settings, model, prefix, capacity),
    )
    try:
        await _wait_for_worker(queue, worker)
        with PeakMemory(worker.pid) as memory:
            start = time.perf_counter()
            asks = (_ask_through_queue(queue, r, start + r.arrival, sampling.max_new_tokens) for r in requests)
            timings = list(await asyncio.gather(*asks))
            seconds = time.perf_counter() - start
        return timings, memory.peak, seconds
    finally:
        worker.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(30)
        worker.kill()
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _ask_through_queue(queue: Any, request: BenchRequest, arrival: float, max_new_tokens: int) -> RequestTiming:
    """Submit one question at its arrival time (perf_counter) and read its answer back, as an adapter does."""
    from komt_bot.jobs import JobRequest, Origin, Turn

    await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
    job = JobRequest(
        conversation=[Turn(role="user", text=request.question)],
        origin=Origin(platform="bench"),
        max_new_tokens=max_new_tokens,
    )
    submission = await queue.submit(job)
    timing = RequestTiming()
    async for event in queue.events(submission.job_id, block_seconds=5):
        if event is None:
            continue
        if event.type == "delta" and timing.ttft is None:
            timing.ttft = time.perf_counter() - arrival
        if event.terminal and event.usage:
            timing.tokens = event.usage.get("completion_tokens", 0)
    timing.e2e = time.perf_counter() - arrival
    return timing


async def _wait_for_worker(queue: Any, worker: subprocess.Popen[bytes], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not await queue.presence.workers():
        if worker.poll() is not None:
            raise RuntimeError(f"the benchmark worker exited with code {worker.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark worker did not start in time")
        await asyncio.sleep(0.2)
