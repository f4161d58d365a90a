"""The Prometheus endpoint, scraped over HTTP while a real worker serves jobs from the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from komt_bot.chat.editor import MessageView, ViewKind
from komt_bot.chat.sinks import MeteredSink
from komt_bot.engine.base import GenerationRequest, GenerationUpdate
from komt_bot.errors import ConfigError
from komt_bot.metrics import (
    Metrics,
    count_platform_error,
    is_rate_limited,
    process_metrics,
    serve_metrics,
)
from komt_bot.queue import JobQueue
from komt_bot.settings import MetricsSettings, Settings
from komt_bot.worker import Worker
from komt_bot.worker.metrics import MetricsHooks, sampling
from tests.fake_engine import ScriptedEngine
from tests.helpers import collect_events, eventually
from tests.test_admin import ask

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
LOCAL_ANY_PORT = MetricsSettings(port=0, host="127.0.0.1")


class BatchingScriptedEngine(ScriptedEngine):
    """The scripted engine, also recording (like a batching engine) how many requests decode at each step."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer, delay=0.01)
        self.active = 0

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationUpdate, None]:
        self.active += 1
        try:
            async with contextlib.aclosing(super().generate(request)) as updates:
                async for update in updates:
                    self.stats.batch_sizes.append(self.active)
                    yield update
        finally:
            self.active -= 1


class MemorySink:
    """A reply sink that keeps messages in a list and can be told to fail like a platform API."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.error: Exception | None = None

    async def post(self, view: MessageView) -> str:
        if self.error:
            raise self.error
        self.messages.append(view.text)
        return str(len(self.messages) - 1)

    async def edit(self, handle: str, view: MessageView) -> None:
        if self.error:
            raise self.error
        self.messages[int(handle)] = view.text


class TooManyRequests(Exception):
    """What discord.py's HTTPException looks like to the counter: an error with ``status``."""

    status = 429


async def scrape(port: int) -> Samples:
    """GET /metrics over HTTP and parse it."""

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[JobQueue]:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    yield q


async def test_the_endpoint_serves_every_series_while_a_worker_runs_jobs(queue: JobQueue, settings: Settings) -> None:
    async with process_metrics(LOCAL_ANY_PORT, queue, sample_seconds=0.05) as metrics:
        assert metrics.endpoint is not None
        port = metrics.endpoint.port
        for n in range(3):
            await queue.submit(ask(f"질문 {n}"))
        await eventually(lambda: _sampled(port, "komt_queue_depth", 3.0))
        engine = BatchingScriptedEngine("메트릭을 세는 중입니다. " * 3)
        worker = Worker(queue, engine, settings, name="metered", hooks=MetricsHooks(queue, metrics))
        async with sampling(worker, metrics, interval=0.05):
            task = asyncio.create_task(worker.run())
            for job_id in await queue.redis.zrange(queue.keys.waiting, 0, -1):
                await collect_events(queue, str(job_id))
            await _count_platform_calls(metrics)
            samples = await eventually(lambda: _tokens_flowing(port))
            worker.stop()
            await task

    assert samples[("komt_jobs_total", (("outcome", "done"),))] == 3
    assert samples[("komt_job_wait_seconds_count", ())] == 3
    assert samples[("komt_time_to_first_token_seconds_count", ())] == 3
    assert samples[("komt_generated_tokens_total", ())] > 0
    assert samples[("komt_batch_size_count", ())] > 0
    assert ("komt_jobs_in_flight", ()) in samples
    assert ("komt_queue_depth", ()) in samples
    assert samples[("komt_platform_edits_total", (("platform", "slack"),))] == 2
    assert samples[("komt_platform_errors_total", (("platform", "slack"),))] == 2
    assert samples[("komt_platform_rate_limited_total", (("platform", "slack"),))] == 1
    with pytest.raises(OSError):
        await scrape(port)  # closed with the block


async def _sampled(port: int, name: str, value: float) -> bool:
    return (await scrape(port)).get((name, ())) == value


async def _tokens_flowing(port: int) -> Samples:
    """The samples once the token-rate gauge shows generation (empty until then)."""
    samples = await scrape(port)
    return samples if samples.get(("komt_tokens_per_second", ()), 0) > 0 else {}


async def _count_platform_calls(metrics: Metrics) -> None:
    """An adapter's reply: one post, one edit, then a 429 and another platform error."""
    sink = MemorySink()
    metered = MeteredSink(sink, metrics, "slack")
    handle = await metered.post(MessageView("생각 중…", ViewKind.STATUS, active=True))
    await metered.edit(handle, MessageView("답변", ViewKind.FINAL))
    for error in (TooManyRequests("slow down"), RuntimeError("channel_not_found")):
        sink.error = error
        with pytest.raises(type(error)):
            await metered.edit(handle, MessageView("답변", ViewKind.FINAL))


async def test_failures_are_counted_by_outcome(queue: JobQueue, settings: Settings) -> None:
    metrics = Metrics()
    worker = Worker(
        queue, ScriptedEngine("x" * 8, fail_with="CUDA error"), settings, hooks=MetricsHooks(queue, metrics)
    )
    job_id = (await queue.submit(ask())).job_id
    task = asyncio.create_task(worker.run())
    events = await collect_events(queue, job_id)
    worker.stop()
    await task
    assert events[-1].code == "dead_letter"
    assert metrics.registry.get_sample_value("komt_jobs_total", {"outcome": "retried"}) == 2
    assert metrics.registry.get_sample_value("komt_jobs_total", {"outcome": "dead_letter"}) == 1


def test_no_port_means_no_endpoint() -> None:
    metrics = Metrics()
    assert serve_metrics(metrics, MetricsSettings()) is None
    assert metrics.endpoint is None


def test_a_busy_port_is_a_configuration_error() -> None:
    first = serve_metrics(Metrics(), LOCAL_ANY_PORT)
    assert first is not None
    try:
        with pytest.raises(ConfigError, match=r"KOMT_METRICS__PORT: cannot listen on 127\.0\.0\.1"):
            serve_metrics(Metrics(), MetricsSettings(port=first.port, host="127.0.0.1"))
    finally:
        first.close()


def test_rate_limits_are_recognised_from_each_librarys_error_shape() -> None:
    class SlackResponse:
        status_code = 429

    class SlackApiError(Exception):
        response = SlackResponse()

    assert is_rate_limited(SlackApiError())
    assert is_rate_limited(TooManyRequests())
    assert not is_rate_limited(RuntimeError("500"))


def test_platform_errors_are_counted_with_their_rate_limits() -> None:
    metrics = Metrics()
    count_platform_error(metrics, "discord", TooManyRequests())
    count_platform_error(metrics, "discord", RuntimeError("Missing Access"))
    count_platform_error(None, "discord", TooManyRequests())  # adapters without metrics
    assert metrics.registry.get_sample_value("komt_platform_errors_total", {"platform": "discord"}) == 2
    assert metrics.registry.get_sample_value("komt_platform_rate_limited_total", {"platform": "discord"}) == 1
