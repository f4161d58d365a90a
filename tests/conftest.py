"""Shared fixtures: a real Redis with a key prefix of its own per test, and the tiny real model."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from komt_bot.dev.fakes.slack import FakeSlack
from komt_bot.settings import Settings, load_settings
from tests.model_fixtures import tiny_model_dir  # noqa: F401  (fixture)
from tests.openai_server import openai_server  # noqa: F401  (fixture)

REDIS_URL = os.environ.get("KOMT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session", autouse=True)
def private_state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test finds (or leaves) the embedded Redis of a `komt-bot serve` the developer runs: XDG_STATE_HOME is the
    session's own, for this process and every command it starts."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses, so tests share one Redis safely."""
    return f"komt-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the real Redis; every key under this test's prefix is deleted afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as e:  # pragma: no cover - environment problem, not a test failure
        pytest.fail(f"no Redis answers at {REDIS_URL}: {e}")
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def settings(prefix: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at the test Redis and prefix, with no config file and fast queue timings."""
    for name in list(os.environ):
        if name.startswith("KOMT_"):
            monkeypatch.delenv(name)
    return load_settings(
        redis_url=REDIS_URL,
        # A short outage window: tests of a Redis that is gone should not wait the default minute.
        queue={"prefix": prefix, "claim_idle_seconds": 1.0, "heartbeat_seconds": 0.2, "outage_seconds": 2.0},
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    """The fake Slack Web API on 127.0.0.1 (komt_bot/dev/fakes/slack.py), for the Slack tests."""
    server = FakeSlack()
    await server.start()
    yield server
    await server.stop()
