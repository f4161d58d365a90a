"""What a benchmark measures: per-request timings, one row per path and concurrency, peak memory, ratios."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class RequestTiming:
    """What one request measured (seconds from its arrival)."""

    ttft: float | None = None
    e2e: float = 0.0
    tokens: int = 0


@dataclass(slots=True)
class PathResult:
    """One path's numbers at one concurrency."""

    path: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    tokens_per_second: float
    ttft_p50: float | None
    ttft_p95: float | None
    e2e_p50: float
    e2e_p95: float
    peak_rss_mb: float
    peak_gpu_mb: float | None = None
    batch_size_max: int | None = None
    note: str = ""
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # who used the CPU during the run (bench.usage)
    redis_calls: dict[str, int] = field(default_factory=dict)  # commands Redis ran, scripts' own included
    redis_commands_per_token: float | None = None


@dataclass(slots=True)
class BenchReport:
    """Everything one ``komt-bot bench`` run measured."""

    machine: dict[str, Any]
    model: dict[str, Any]
    options: dict[str, Any]
    results: list[PathResult] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    ratio_runs: dict[str, list[float]] = field(default_factory=dict)  # per repetition, where two paths took turns


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def median_run(rows: list[PathResult]) -> PathResult:
    """Of repeated runs of one path, the one with the median tokens/s (noted when there was more than one)."""
    ordered = sorted(rows, key=lambda r: r.tokens_per_second)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(rows) > 1:
        spread = ", ".join(f"{r.tokens_per_second:.0f}" for r in rows)
        chosen.note = "; ".join(filter(None, [chosen.note, f"median of {len(rows)} runs (tok/s {spread})"]))
    return chosen


def summarize(path: str, concurrency: int, timings: list[RequestTiming], seconds: float, peak: float) -> PathResult:
    """Aggregate per-request timings into one row."""
    ttfts = [t.ttft for t in timings if t.ttft is not None]
    e2es = [t.e2e for t in timings]
    tokens = sum(t.tokens for t in timings)
    return PathResult(
        path=path,
        concurrency=concurrency,
        requests=len(timings),
        tokens=tokens,
        seconds=round(seconds, 3),
        tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else 0.0,
        ttft_p50=round(_percentile(ttfts, 50), 3) if ttfts else None,
        ttft_p95=round(_percentile(ttfts, 95), 3) if ttfts else None,
        e2e_p50=round(_percentile(e2es, 50), 3),
        e2e_p95=round(_percentile(e2es, 95), 3),
        peak_rss_mb=round(peak / 2**20, 1),
    )


class PeakMemory:
    """Samples a process's resident memory in a thread; ``peak`` is the highest value seen."""

    def __init__(self, pid: int | None = None, interval: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process(pid or os.getpid())
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, GPU and library versions, for the benchmark table."""
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def compute_ratios(results: list[PathResult]) -> dict[str, float]:
    """tokens/s ratios engine/sequential, queue/sequential, queue/engine, remote/server at each concurrency."""
    first_sequential = next((r.tokens_per_second for r in results if r.path == "sequential"), None)
    ratios: dict[str, float] = {}
    for concurrency in sorted({r.concurrency for r in results}):
        rows = {r.path: r.tokens_per_second for r in results if r.concurrency == concurrency}
        sequential = rows.get("sequential", first_sequential)
        if sequential and "engine" in rows:
            ratios[f"engine/sequential@{concurrency}"] = round(rows["engine"] / sequential, 2)
        if sequential and "queue" in rows:
            ratios[f"queue/sequential@{concurrency}"] = round(rows["queue"] / sequential, 2)
        if rows.get("engine") and "queue" in rows:
            ratios[f"queue/engine@{concurrency}"] = round(rows["queue"] / rows["engine"], 2)
        if rows.get("server") and "remote" in rows:
            ratios[f"remote/server@{concurrency}"] = round(rows["remote"] / rows["server"], 2)
    return ratios


def gpu_peak_reset() -> Callable[[], float | None]:
    import torch

    if not torch.cuda.is_available():
        return lambda: None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return lambda: round(torch.cuda.max_memory_allocated() / 2**20, 1)


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box = [time.perf_counter()]
    yield box
    box[0] = time.perf_counter() - box[0]
