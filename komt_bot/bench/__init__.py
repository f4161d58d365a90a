"""``komt-bot bench``: three ways to answer the same questions on the same model, side by side in one run.

(a) ``sequential``: the model card's way, ``model.generate`` one request after another, in process;
(b) ``engine``: komt-bot's engine alone (continuous batching), in process;
(c) ``queue``: the whole komt-bot path: jobs through Redis to a worker process, answers read back from the
    output streams by concurrent clients.
(d) ``server`` and ``remote`` (with ``--openai-url``): the same against an OpenAI-compatible server, straight from
    this process and through the queue to a worker with the ``openai`` engine (:mod:`.remote`).

Each reports aggregate tokens/s, time to first token and end-to-end latency (p50/p95, measured from each request's
arrival), and peak memory; the ratios between them are the result. Absolute numbers move with the machine's load:
compare ratios from one run.
"""

from komt_bot.bench.command import bench_command, resolve_model, run_benchmark
from komt_bot.bench.environment import settings_environment, worker_environment
from komt_bot.bench.measure import (
    BenchReport,
    PathResult,
    PeakMemory,
    RequestTiming,
    compute_ratios,
    machine_info,
    median_run,
    summarize,
)
from komt_bot.bench.queuepath import QueueWorker
from komt_bot.bench.report import render
from komt_bot.bench.requests import BenchRequest, load_questions, make_requests
from komt_bot.bench.runners import run_engine, run_sequential

__all__ = [
    "BenchReport",
    "BenchRequest",
    "PathResult",
    "PeakMemory",
    "QueueWorker",
    "RequestTiming",
    "bench_command",
    "compute_ratios",
    "load_questions",
    "machine_info",
    "make_requests",
    "median_run",
    "render",
    "resolve_model",
    "run_benchmark",
    "run_engine",
    "run_sequential",
    "settings_environment",
    "summarize",
    "worker_environment",
]
