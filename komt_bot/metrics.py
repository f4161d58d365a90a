"""Prometheus metrics. One :class:`Metrics` per process, on its own registry (no module globals).

The worker and the adapters take a ``Metrics`` and count what they do; ``serve_metrics`` exposes the registry
over HTTP when ``metrics.port`` is set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
