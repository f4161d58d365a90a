"""Paths (a) sequential and (b) engine, each run once over a batch of requests ((c) is :mod:`.queuepath`)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from komt_bot.bench.measure import PathResult, PeakMemory, RequestTiming, gpu_peak_reset, summarize, timed
from komt_bot.bench.requests import BenchRequest
from komt_bot.bench.usage import engine_cpu, process_cpu
from komt_bot.engine.base import Engine, GenerationRequest, SamplingParams

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
    cpu_before = process_cpu(os.getpid())
    with PeakMemory() as memory, timed() as took:
        timings = await run_engine(engine, batch, sampling)
    row = summarize("engine", concurrency, timings, took[0], memory.peak)
    row.cpu_seconds = engine_cpu(cpu_before, process_cpu(os.getpid()))
    row.peak_gpu_mb = gpu_peak()
    row.batch_size_max = max(engine.stats.batch_sizes, default=None)
    return row
