"""Prometheus metrics. One :class:`Metrics` per process, on its own registry (no module globals).

The worker and the adapters take a ``Metrics`` and count what they do; ``serve_metrics`` exposes the registry
over HTTP when ``metrics.port`` is set, and :func:`process_metrics` does that plus the queue-depth sampling for a
whole process. Adapters count their platform calls with :class:`MeteredSink` (or :func:`platform_call`); the worker's
series come from :mod:`komt_bot.worker.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from komt_bot.errors import ConfigError, QueueError
from komt_bot.queue import JobQueue
from komt_bot.settings import MetricsSettings

log = logging.getLogger(__name__)

QUEUE_SAMPLE_SECONDS = 5.0

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Every series komt-bot exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("komt_queue_depth", "Jobs waiting to start", registry=r)
        self.jobs = Counter("komt_jobs_total", "Jobs ended, by outcome", ["outcome"], registry=r)
        self.wait_seconds = Histogram(
            "komt_job_wait_seconds", "Time from submission to start", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ttft_seconds = Histogram(
            "komt_time_to_first_token_seconds", "Time from start to first text", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("komt_generated_tokens_total", "Tokens generated", registry=r)
        self.tokens_per_second = Gauge("komt_tokens_per_second", "Generation rate over the last 10 s", registry=r)
        self.batch_size = Histogram(
            "komt_batch_size", "Requests decoded together", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.in_flight = Gauge("komt_jobs_in_flight", "Jobs running on this worker", registry=r)
        self.edits = Counter("komt_platform_edits_total", "Messages posted or edited", ["platform"], registry=r)
        self.platform_errors = Counter(
            "komt_platform_errors_total", "Failed platform API calls", ["platform"], registry=r
        )
        self.rate_limited = Counter(
            "komt_platform_rate_limited_total", "Platform rate-limit responses (429)", ["platform"], registry=r
        )
        self.requests = Counter(
            "komt_requests_total", "Questions received by adapters, by result", ["platform", "result"], registry=r
        )
        self.feedback = Counter(
            "komt_feedback_total",
            "Ratings of answers given with the feedback buttons (a changed rating counts as the new one)",
            ["platform", "rating"],
            registry=r,
        )
        self.replies_resumed = Counter(
            "komt_replies_resumed_total",
            "Replies an adapter took over from a process that died or handed them over, and continued",
            ["platform"],
            registry=r,
        )
        self.replies_handed_over = Counter(
            "komt_replies_handed_over_total",
            "Open replies an adapter released for another process to continue as it shut down (a deploy)",
            ["platform"],
            registry=r,
        )
        self.endpoint: MetricsServer | None = None  # set by serve_metrics

    def watch_budget(self, platform: str, budget: BudgetView) -> None:
        """Export a platform budget's state at every scrape: each limit's tokens left and current rate (below the
        documented one after 429s), and the replies sharing it."""
        self.registry.register(_BudgetCollector(platform, budget))


class BucketView(Protocol):
    """What the metrics read of one limit of a platform budget (:class:`komt_bot.chat.budget.RateBucket`)."""

    name: str
    tokens: float
    rate: float


class BudgetView(Protocol):
    """What the metrics read of a platform budget (:class:`komt_bot.chat.budget.PlatformBudget`)."""

    open_replies: int

    def buckets(self) -> Sequence[BucketView]: ...


class _BudgetCollector(Collector):
    def __init__(self, platform: str, budget: BudgetView) -> None:
        self.platform = platform
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        tokens = GaugeMetricFamily(
            "komt_reply_budget_tokens", "Calls a platform limit allows at once now", labels=["platform", "limit"]
        )
        rate = GaugeMetricFamily(
            "komt_reply_budget_rate", "Calls a second a platform limit refills at now", labels=["platform", "limit"]
        )
        for bucket in self.budget.buckets():
            tokens.add_metric([self.platform, bucket.name], bucket.tokens)
            rate.add_metric([self.platform, bucket.name], bucket.rate)
        replies = GaugeMetricFamily("komt_replies_open", "Replies sharing the budget", labels=["platform"])
        replies.add_metric([self.platform], self.budget.open_replies)
        yield from (tokens, rate, replies)


@dataclass(slots=True)
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint (prometheus-client's WSGI server on a daemon thread)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when the setting was 0)."""
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(metrics: Metrics, settings: MetricsSettings) -> MetricsServer | None:
    """Expose ``metrics``' registry on ``settings.host:settings.port``; None when no port is set (the default).

    Raises :class:`ConfigError` when the port cannot be bound.
    """
    if settings.port is None:
        return None
    try:
        server, thread = start_http_server(settings.port, addr=settings.host, registry=metrics.registry)
    except OSError as e:
        raise ConfigError(f"KOMT_METRICS__PORT: cannot listen on {settings.host}:{settings.port}: {e}") from e
    log.info("metrics on http://%s:%d/metrics", settings.host, server.server_port)
    metrics.endpoint = MetricsServer(server, thread)
    return metrics.endpoint


async def sample_queue_depth(metrics: Metrics, queue: JobQueue, interval: float = QUEUE_SAMPLE_SECONDS) -> None:
    """Set the queue-depth gauge from Redis every ``interval`` seconds until cancelled."""
    while True:
        try:
            metrics.queue_depth.set(await queue.backlog())
        except QueueError as e:
            log.warning("could not sample the queue depth: %s", e)
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def process_metrics(
    settings: MetricsSettings, queue: JobQueue, *, sample_seconds: float = QUEUE_SAMPLE_SECONDS
) -> AsyncIterator[Metrics]:
    """The process's :class:`Metrics`; with a port set, also its endpoint and the queue-depth sampler.

    The worker and each adapter wrap their run in this and count into the yielded ``Metrics``.
    """
    metrics = Metrics()
    server = serve_metrics(metrics, settings)
    sampler = asyncio.create_task(sample_queue_depth(metrics, queue, sample_seconds)) if server else None
    try:
        yield metrics
    finally:
        if sampler:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        if server:
            server.close()


def is_rate_limited(error: BaseException) -> bool:
    """Whether a platform library's error is an HTTP 429 (slack_sdk, discord.py and httpx all carry the status)."""
    response = getattr(error, "response", None)
    status = (
        getattr(error, "status", None) or getattr(response, "status_code", None) or getattr(response, "status", None)
    )
    return status == 429


def count_platform_error(metrics: Metrics | None, platform: str, error: BaseException) -> None:
    """Count a failed platform API call, and a rate-limit hit when it was a 429 (no-op without metrics)."""
    if metrics is None:
        return
    metrics.platform_errors.labels(platform).inc()
    if is_rate_limited(error):
        metrics.rate_limited.labels(platform).inc()
