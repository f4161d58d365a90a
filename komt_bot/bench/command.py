"""``komt-bot bench``: three ways to answer the same questions on the same model, side by side in one run.

(a) ``sequential``: the model card's way, ``model.generate`` one request after another, in process;
(b) ``engine``: komt-bot's engine alone (continuous batching), in process;
(c) ``queue``: the whole komt-bot path: jobs through Redis to a worker process, answers read back from the
    output streams by concurrent clients.

Each reports aggregate tokens/s, time to first token and end-to-end latency (p50/p95, measured from each request's
arrival), and peak memory; the ratios between them are the result. Absolute numbers move with the machine's load:
compare ratios from one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from komt_bot.engine.base import Engine, GenerationRequest, SamplingParams
from komt_bot.prompt import render_turn
from komt_bot.settings import GenerationSettings, ModelSettings, Settings, load_settings

T = TypeVar("T")
DUMMY_SHAPES = ("llama2-7b", "llama2-13b", "small", "tiny")
DEFAULT_BENCH_DIR = Path(".bench")


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One question and when it arrives, relative to the start of the run."""

    question: str
    arrival: float

    @property
    def prompt(self) -> str:
        """The question in the model card's template (what (a) and (b) generate from; (c)'s worker builds it)."""
        return render_turn(self.question)


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


@dataclass(slots=True)
class BenchReport:
    """Everything one ``komt-bot bench`` run measured."""

    machine: dict[str, Any]
    model: dict[str, Any]
    options: dict[str, Any]
    results: list[PathResult] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)


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


def load_questions() -> list[str]:
    """The 37 Korean questions of komt's own evaluation (mixed lengths)."""
    text = resources.files("komt_bot.data").joinpath("eval_questions.jsonl").read_text(encoding="utf-8")
    return [json.loads(line)["instruction"] for line in text.splitlines() if line.strip()]


def make_requests(count: int, *, stagger: float) -> list[BenchRequest]:
    """``count`` prompts in the komt template, arriving all at once (stagger 0) or every ``stagger`` seconds."""
    questions = load_questions()
    return [BenchRequest(questions[i % len(questions)], i * stagger) for i in range(count)]


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


# -- (c) the whole path -----------------------------------------------------------------------------------------


def worker_environment(settings: Settings, model: ModelSettings, prefix: str, capacity: int) -> dict[str, str]:
    """Environment for a ``komt-bot worker`` process that loads the same model as the in-process paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    assert settings.redis_url is not None
    env |= {
        "KOMT_REDIS_URL": settings.redis_url.get_secret_value(),
        "KOMT_QUEUE__PREFIX": prefix,
        "KOMT_QUEUE__MAX_BACKLOG": str(max(1000, capacity * 4)),
        "KOMT_MODEL__BASE": model.base,
        "KOMT_MODEL__ADAPTER": model.adapter or "",
        "KOMT_MODEL__QUANTIZATION": model.quantization,
        "KOMT_MODEL__LOAD_FORMAT": model.load_format,
        "KOMT_MODEL__DUMMY_SHAPE": model.dummy_shape,
        "KOMT_MODEL__MAX_BATCH_SIZE": str(model.max_batch_size),
        "KOMT_MODEL__MAX_PROMPT_TOKENS": str(model.max_prompt_tokens),
        **({"KOMT_MODEL__MAX_BATCH_TOKENS": str(model.max_batch_tokens)} if model.max_batch_tokens else {}),
        **({"KOMT_MODEL__KV_CACHE_BLOCKS": str(model.kv_cache_blocks)} if model.kv_cache_blocks else {}),
        "KOMT_WORKER__CAPACITY": str(capacity),
        "KOMT_WORKER__COALESCE_MS": str(settings.worker.coalesce_ms),
        "KOMT_GENERATION__MAX_NEW_TOKENS": str(settings.generation.max_new_tokens),
        "KOMT_LOG__LEVEL": "WARNING",
    }
    return env


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


# -- orchestration ----------------------------------------------------------------------------------------------


def resolve_model(
    model: str, adapter: str | None, quantization: str, bench_dir: Path, defaults: ModelSettings
) -> ModelSettings:
    """Which weights to load, on top of ``defaults`` (the configured KOMT_MODEL__* settings).

    A directory or hub id as is; ``dummy:SHAPE`` as random real-shaped weights; ``small``/``tiny`` built here.
    """
    if model.startswith("dummy:"):
        shape = model.split(":", 1)[1]
        # A random LoRA on the card's target modules comes with the dummy weights unless --adapter "" says none.
        lora = None if adapter == "" else f"dummy:{shape}-lora"
        chosen = {"base": shape, "adapter": lora, "load_format": "dummy", "dummy_shape": shape}
    elif model in ("small", "tiny") and not Path(model).exists():
        from komt_bot.engine.fakes.tiny import BENCH_KWARGS, build_tiny_model

        target = bench_dir / model
        if not (target / "base" / "config.json").exists():
            build_tiny_model(target, **(BENCH_KWARGS if model == "small" else {}))
        lora = str(target / "lora") if adapter is None else (adapter or None)
        chosen = {"base": str(target / "base"), "adapter": lora, "load_format": "auto"}
    else:
        chosen = {"base": model, "adapter": adapter or None, "load_format": "auto"}
    return ModelSettings.model_validate({**defaults.model_dump(), **chosen, "quantization": quantization})


def _gpu_peak_reset() -> Callable[[], float | None]:
    import torch

    if not torch.cuda.is_available():
        return lambda: None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return lambda: round(torch.cuda.max_memory_allocated() / 2**20, 1)


def run_in_own_thread(work: Callable[[], T]) -> T:
    """Run ``work`` on a new thread, wait for it, and return its result (or raise its error)."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=target, name="bench-sequential")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


@contextlib.contextmanager
def _timed() -> Iterator[list[float]]:
    box = [time.perf_counter()]
    yield box
    box[0] = time.perf_counter() - box[0]


def run_benchmark(
    settings: Settings,
    model: ModelSettings,
    *,
    concurrencies: list[int],
    requests: int | None,
    max_new_tokens: int,
    stagger: float,
    paths: set[str],
    sequential_requests: int | None,
    progress: Callable[[str], None],
    repeat: int = 1,
) -> BenchReport:
    """Run the chosen paths at each concurrency and compute the ratios (one event loop for the whole run)."""
    return asyncio.run(
        _run_all(
            settings,
            model.model_copy(update={"max_batch_size": max(concurrencies)}),
            concurrencies=concurrencies,
            requests=requests,
            stagger=stagger,
            paths=paths,
            sequential_requests=sequential_requests,
            sampling=_sampling(settings.generation, max_new_tokens),
            progress=progress,
            repeat=repeat,
        )
    )


def _sampling(generation: GenerationSettings, max_new_tokens: int) -> SamplingParams:
    return SamplingParams(
        generation.temperature, generation.top_p, generation.top_k, max_new_tokens, tuple(generation.stop)
    )


def _load(model: ModelSettings) -> Any:
    if model.load_format == "dummy":
        from komt_bot.engine.fakes.dummy import load_dummy_model

        return load_dummy_model(model)
    from komt_bot.engine.loading import load_model

    return load_model(model)


@dataclass(slots=True)
class _BenchRun:
    """One ``komt-bot bench`` invocation: the same requests through each chosen path."""

    settings: Settings
    model: ModelSettings
    batches: dict[int, list[BenchRequest]]
    sampling: SamplingParams
    sequential_requests: int | None
    repeat: int
    progress: Callable[[str], None]

    @property
    def warm_up(self) -> tuple[list[BenchRequest], SamplingParams]:
        s = self.sampling
        return [BenchRequest("안녕하세요", 0.0)], SamplingParams(s.temperature, s.top_p, s.top_k, 4, s.stop)

    def sequential(self, loaded: Any) -> list[PathResult]:
        """(a) on a thread of its own that then ends: torch work left on the event loop's thread measurably slows
        the engine's thread later in the same process."""

        def rows() -> list[PathResult]:
            run_sequential(loaded, *self.warm_up)
            return [
                median_run(
                    [
                        _sequential_row(loaded, batch, self.sampling, c, self.sequential_requests, self.progress)
                        for _ in range(self.repeat)
                    ]
                )
                for c, batch in self.batches.items()
            ]

        return run_in_own_thread(rows)

    async def engine(self, loaded: Any) -> list[PathResult]:
        """(b); the engine is closed afterwards so its thread does not compete with (c)'s worker process."""
        from komt_bot.engine.batching import BatchingEngine

        s = self.sampling
        generation = GenerationSettings(
            temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens
        )
        engine = BatchingEngine(loaded, self.model, generation)
        try:
            await run_engine(engine, *self.warm_up)
            results = []
            for c, batch in self.batches.items():
                rows = [await _engine_row(engine, batch, s, c, self.progress) for _ in range(self.repeat)]
                results.append(median_run(rows))
            return results
        finally:
            await engine.close()

    async def queue(self) -> list[PathResult]:
        """(c), with a worker process of its own per concurrency level and repetition."""
        results = []
        for c, batch in self.batches.items():
            self.progress(f"(c) queue + worker process, {len(batch)} requests at concurrency {c}")
            rows = []
            for _ in range(self.repeat):
                timings, peak, seconds = await run_queue_path(self.settings, self.model, batch, self.sampling, c)
                rows.append(summarize("queue", c, timings, seconds, peak))
            results.append(median_run(rows))
        return results


async def _run_all(
    settings: Settings,
    model: ModelSettings,
    *,
    concurrencies: list[int],
    requests: int | None,
    stagger: float,
    paths: set[str],
    sequential_requests: int | None,
    sampling: SamplingParams,
    progress: Callable[[str], None],
    repeat: int,
) -> BenchReport:
    shown = ("base", "adapter", "quantization", "load_format", "kv_cache_blocks", "max_batch_size")
    report = BenchReport(
        machine=machine_info(),
        model={k: v for k, v in model.model_dump().items() if k in shown},
        options={
            "concurrency": concurrencies,
            "requests": requests,
            "max_new_tokens": sampling.max_new_tokens,
            "stagger_seconds": stagger,
            "paths": sorted(paths),
            "repeat": repeat,
        },
    )
    batches = {c: make_requests(requests or c, stagger=stagger) for c in concurrencies}
    run = _BenchRun(settings, model, batches, sampling, sequential_requests, repeat, progress)
    if paths & {"sequential", "engine"}:
        progress(f"loading {model.base} ({model.quantization})")
        loaded = _load(model)
        report.model |= {"device": loaded.plan.device, "quantization": loaded.plan.quantization}
        # The model card's way first: the batching engine may change the model's attention setup.
        if "sequential" in paths:
            report.results += run.sequential(loaded)
        if "engine" in paths:
            report.results += await run.engine(loaded)
        del loaded
    if "queue" in paths:
        report.results += await run.queue()
    report.ratios = compute_ratios(report.results)
    return report


async def _engine_row(
    engine: Any, batch: list[BenchRequest], sampling: SamplingParams, concurrency: int, progress: Callable[[str], None]
) -> PathResult:
    progress(f"(b) engine, {len(batch)} requests at concurrency {concurrency}")
    engine.stats.batch_sizes.clear()
    gpu_peak = _gpu_peak_reset()
    with PeakMemory() as memory, _timed() as took:
        timings = await run_engine(engine, batch, sampling)
    row = summarize("engine", concurrency, timings, took[0], memory.peak)
    row.peak_gpu_mb = gpu_peak()
    row.batch_size_max = max(engine.stats.batch_sizes, default=None)
    return row


def _sequential_row(
    loaded: Any,
    batch: list[BenchRequest],
    sampling: SamplingParams,
    concurrency: int,
    cap: int | None,
    progress: Callable[[str], None],
) -> PathResult:
    subset = batch[: cap or len(batch)]
    progress(f"(a) sequential generate, {len(subset)} requests")
    gpu_peak = _gpu_peak_reset()
    with PeakMemory() as memory, _timed() as took:
        timings = run_sequential(loaded, subset, sampling)
    row = summarize("sequential", concurrency, timings, took[0], memory.peak)
    row.peak_gpu_mb = gpu_peak()
    if len(subset) < len(batch):
        row.note = f"ran {len(subset)} of {len(batch)} requests"
    return row


def compute_ratios(results: list[PathResult]) -> dict[str, float]:
    """tokens/s ratios engine/sequential, queue/sequential, queue/engine at each concurrency."""
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
    return ratios


def render(report: BenchReport, console: Console) -> None:
    """The human-readable table."""
    m = report.machine
    console.print(f"[bold]machine[/]: {m['cpu']} · {m['cores']} cores · {m['memory_gb']} GB · GPU {m['gpu'] or 'none'}")
    console.print(f"[bold]model[/]: {report.model}")
    table = Table(
        "path", "conc.", "reqs", "tokens", "tok/s", "TTFT p50", "TTFT p95", "E2E p50", "E2E p95", "peak RSS MB"
    )
    for r in report.results:
        table.add_row(
            r.path,
            str(r.concurrency),
            str(r.requests),
            str(r.tokens),
            f"{r.tokens_per_second:.1f}",
            f"{r.ttft_p50:.2f}" if r.ttft_p50 is not None else "-",
            f"{r.ttft_p95:.2f}" if r.ttft_p95 is not None else "-",
            f"{r.e2e_p50:.2f}",
            f"{r.e2e_p95:.2f}",
            f"{r.peak_rss_mb:.0f}" + (f" (GPU {r.peak_gpu_mb:.0f})" if r.peak_gpu_mb else ""),
        )
    console.print(table)
    for name, value in report.ratios.items():
        console.print(f"  {name}: [bold]{value:.2f}x[/]")


def bench_command(
    model: Annotated[
        str, typer.Option(help="model dir or hub id; 'small'/'tiny' (built here); 'dummy:llama2-13b'")
    ] = "small",
    adapter: Annotated[str | None, typer.Option(help="LoRA dir ('' = none; default: the built model's)")] = None,
    quantization: Annotated[str, typer.Option(help="auto, nf4 or none")] = "auto",
    concurrency: Annotated[str, typer.Option(help="concurrent requests, or a list like 1,8,32")] = "16",
    requests: Annotated[
        int | None, typer.Option(help="requests per concurrency level (default: = concurrency)")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens per answer")] = 64,
    stagger_ms: Annotated[float, typer.Option(help="0 = all at once; else one arrival every N ms")] = 0.0,
    paths: Annotated[str, typer.Option(help="which of sequential,engine,queue to run")] = "sequential,engine,queue",
    sequential_requests: Annotated[int | None, typer.Option(help="cap (a) at this many requests (slow models)")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="run each path N times and keep the median run")] = 1,
    kv_cache_blocks: Annotated[
        int | None, typer.Option(help="KV cache pages (default: sized for the worst case)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Compare the model card's sequential generate, the batching engine, and the whole queue path."""
    settings = load_settings()
    chosen = {p.strip() for p in paths.split(",") if p.strip()}
    unknown = chosen - {"sequential", "engine", "queue"}
    if unknown:
        raise typer.BadParameter(f"unknown paths: {', '.join(sorted(unknown))}", param_hint="--paths")
    if "queue" in chosen and settings.redis_url is None:
        settings = load_settings(redis_url=os.environ.get("KOMT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    err = Console(stderr=True)
    model_settings = resolve_model(model, adapter, quantization, DEFAULT_BENCH_DIR, settings.model)
    if kv_cache_blocks is not None:
        model_settings = model_settings.model_copy(update={"kv_cache_blocks": kv_cache_blocks})
    report = run_benchmark(
        settings,
        model_settings,
        concurrencies=[int(c) for c in concurrency.split(",")],
        requests=requests,
        max_new_tokens=max_new_tokens,
        stagger=stagger_ms / 1000,
        paths=chosen,
        sequential_requests=sequential_requests,
        progress=lambda line: err.print(f"[dim]… {line}[/]"),
        repeat=repeat,
    )
    if as_json:
        print(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    else:
        render(report, Console())
