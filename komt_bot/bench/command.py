"""``komt-bot bench``: the Typer command, and one run of the chosen paths over the same requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from komt_bot.bench.measure import BenchReport, PathResult, compute_ratios, machine_info, median_run
from komt_bot.bench.queuepath import QueueWorker
from komt_bot.bench.remote import remote_row, remote_settings, server_row
from komt_bot.bench.report import render
from komt_bot.bench.requests import BenchRequest, make_requests
from komt_bot.bench.runners import engine_row, run_sequential, sequential_row
from komt_bot.engine.base import SamplingParams
from komt_bot.settings import GenerationSettings, ModelSettings, Settings, load_settings
from komt_bot.worker.warmup import warm_up

T = TypeVar("T")
DEFAULT_BENCH_DIR = Path(".bench")


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
    ratio_runs: dict[str, list[float]] = field(default_factory=dict)

    @property
    def warm_up(self) -> tuple[list[BenchRequest], SamplingParams]:
        s = self.sampling
        return [BenchRequest("안녕하세요", 0.0)], SamplingParams(s.temperature, s.top_p, s.top_k, 4, s.stop)

    async def remote(self, path: str) -> list[PathResult]:
        """(d): ``server`` (straight to the OpenAI-compatible server) or ``remote`` (queue + openai worker)."""
        results, s = [], self.sampling
        for c, batch in self.batches.items():
            rows = []
            for _ in range(self.repeat):
                if path == "server":
                    rows.append(await server_row(self.settings, self.model, batch, s, self.warm_up, c, self.progress))
                else:
                    rows.append(await remote_row(self.settings, self.model, batch, s, c, self.progress))
            results.append(median_run(rows))
        return results

    def sequential(self, loaded: Any) -> list[PathResult]:
        """(a) on a thread of its own that then ends: torch work left on the event loop's thread measurably slows
        the engine's thread later in the same process."""

        def rows() -> list[PathResult]:
            run_sequential(loaded, *self.warm_up)
            return [
                median_run(
                    [
                        sequential_row(loaded, batch, self.sampling, c, self.sequential_requests, self.progress)
                        for _ in range(self.repeat)
                    ]
                )
                for c, batch in self.batches.items()
            ]

        return run_in_own_thread(rows)

    async def batched(self, loaded: Any | None, *, queue: bool) -> list[PathResult]:
        """(b) on ``loaded`` (when given) and (c) (when ``queue``) at each concurrency.

        When both run, their repetitions take turns (b, c, b, c, ...) with the engine and the worker process both
        kept warm, so each pair sees the machine in the same state; ``ratio_runs`` keeps each pair's (c)/(b).
        """
        results = []
        for c, batch in self.batches.items():
            async with contextlib.AsyncExitStack() as stack:
                engine = await stack.enter_async_context(self._engine(loaded)) if loaded is not None else None
                worker = await stack.enter_async_context(QueueWorker(self.settings, self.model, c)) if queue else None
                engine_rows: list[PathResult] = []
                queue_rows: list[PathResult] = []
                for _ in range(self.repeat):
                    if engine is not None:
                        engine_rows.append(await engine_row(engine, batch, self.sampling, c, self.progress))
                    if worker is not None:
                        self.progress(f"(c) queue + worker process, {len(batch)} requests at concurrency {c}")
                        queue_rows.append(await worker.row("queue", batch, self.sampling))
            if engine_rows and queue_rows:
                pairs = zip(engine_rows, queue_rows, strict=True)
                ratios = [round(q.tokens_per_second / e.tokens_per_second, 2) for e, q in pairs if e.tokens_per_second]
                if ratios:
                    self.ratio_runs[f"queue/engine@{c}"] = ratios
            results += [median_run(rows) for rows in (engine_rows, queue_rows) if rows]
        return results

    @contextlib.asynccontextmanager
    async def _engine(self, loaded: Any) -> AsyncIterator[Any]:
        """(b)'s engine, warmed up as a worker warms up its own; closed afterwards, so its thread competes with
        nothing that runs later."""
        from komt_bot.engine.batching import BatchingEngine

        s = self.sampling
        generation = GenerationSettings(
            temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_new_tokens=s.max_new_tokens
        )
        engine = BatchingEngine(loaded, self.model, generation)
        try:
            await warm_up(engine, self.model.max_prompt_tokens)
            yield engine
        finally:
            await engine.close()


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
        # On a GPU the worker process's copy of the model and its KV cache must not share memory with this one's.
        in_turn = "queue" in paths and loaded.plan.device != "cuda"
        if "engine" in paths:
            report.results += await run.batched(loaded, queue=in_turn)
        del loaded
    else:
        in_turn = False
    if "queue" in paths and not in_turn:
        report.results += await run.batched(None, queue=True)
    for path in ("server", "remote"):
        if path in paths:
            report.model |= {"openai_url": settings.openai.base_url, "served_model": settings.openai.model}
            report.results += await run.remote(path)
    report.ratios = compute_ratios(report.results)
    report.ratio_runs = run.ratio_runs
    for name, runs in run.ratio_runs.items():  # pairs measured side by side: the median pair, not two medians
        report.ratios[name] = statistics.median_low(runs)
    return report


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
    paths: Annotated[
        str, typer.Option(help="which of sequential,engine,queue (this model) and server,remote (--openai-url) to run")
    ] = "sequential,engine,queue",
    openai_url: Annotated[
        str | None, typer.Option(help="server,remote: the OpenAI-compatible server (default KOMT_OPENAI__BASE_URL)")
    ] = None,
    openai_model: Annotated[
        str | None, typer.Option(help="server,remote: the served model name (default KOMT_OPENAI__MODEL)")
    ] = None,
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
    unknown = chosen - {"sequential", "engine", "queue", "server", "remote"}
    if unknown:
        raise typer.BadParameter(f"unknown paths: {', '.join(sorted(unknown))}", param_hint="--paths")
    if chosen & {"queue", "remote"} and settings.redis_url is None:
        settings = load_settings(redis_url=os.environ.get("KOMT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    err = Console(stderr=True)
    model_settings = resolve_model(model, adapter, quantization, DEFAULT_BENCH_DIR, settings.model)
    if kv_cache_blocks is not None:
        model_settings = model_settings.model_copy(update={"kv_cache_blocks": kv_cache_blocks})
    if chosen & {"server", "remote"}:
        if chosen & {"sequential", "engine", "queue"}:
            raise typer.BadParameter("server,remote run on their own (the model is the server's)", param_hint="--paths")
        settings, model_settings = remote_settings(settings, model_settings, openai_url, openai_model)
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
