"""The embedded Redis of `komt-bot serve`: a real redis-server with an append-only file that the other commands find.

The unit tests run the embedded server in this process; the last one runs `komt-bot serve` with the tiny model in a
subprocess and drives it with other `komt-bot` processes, as a person with two terminals would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from komt_bot.errors import ConfigError, QueueError
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.queue import JobQueue, connect
from komt_bot.queue.embedded import (
    STATE_FILE,
    EmbeddedRedis,
    ServerRecord,
    discover,
    embedded_dir,
    pid_alive,
    read_record,
    serve_redis,
)
from komt_bot.queue.inspect import open_admin
from komt_bot.settings import Settings, load_settings
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "제주도 여행 코스를 만들어줘"


@pytest.fixture
def no_komt_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("KOMT_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def embedded(no_komt_env: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings without KOMT_REDIS_URL whose embedded Redis lives in this test's directory."""
    return load_settings(queue={"embedded_dir": str(tmp_path / "redis"), "heartbeat_seconds": 0.2})


async def submit(url: str, settings: Settings) -> str:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        queue = JobQueue(client, settings.queue)
        await queue.ensure_group()
        request = JobRequest(conversation=[Turn(role="user", text=QUESTION)], origin=Origin(platform="console"))
        return (await queue.submit(request)).job_id
    finally:
        await client.aclose()


async def job_state(url: str, settings: Settings, job_id: str) -> tuple[str, int | None]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        queue = JobQueue(client, settings.queue)
        return (await queue.job(job_id)).state, await queue.position(job_id)
    finally:
        await client.aclose()


def test_the_default_directory_follows_xdg_state_home(no_komt_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_komt_env.setenv("XDG_STATE_HOME", str(tmp_path))
    assert embedded_dir(load_settings()) == tmp_path / "komt-bot" / "redis"
    no_komt_env.setenv("XDG_STATE_HOME", "relative/is/ignored")
    assert embedded_dir(load_settings()) == Path.home() / ".local" / "state" / "komt-bot" / "redis"
    assert embedded_dir(load_settings(queue={"embedded_dir": str(tmp_path / "x")})) == tmp_path / "x"


async def test_queued_jobs_survive_a_restart_and_other_commands_find_the_server(embedded: Settings) -> None:
    directory = embedded_dir(embedded)
    with pytest.raises(ConfigError, match="komt-bot serve"):
        connect(embedded)  # nothing runs yet: the error says how to get a Redis
    with serve_redis(embedded) as served:
        assert served.redis_url is not None
        url = served.redis_url.get_secret_value()
        assert url.startswith("redis://:") and "@127.0.0.1:" in url  # loopback, with a password of its own
        assert discover(embedded) == url  # what every other command (no KOMT_REDIS_URL) connects to
        assert stat.S_IMODE((directory / STATE_FILE).stat().st_mode) == 0o600
        record = read_record(directory)
        assert record is not None and record.owner == os.getpid()
        job_id = await submit(url, embedded)
        async with open_admin(embedded) as admin:  # found through the state file alone
            assert (await admin.status()).waiting == 1
    assert discover(embedded) is None and not (directory / STATE_FILE).exists()
    assert not pid_alive(record.pid)
    with serve_redis(embedded) as again:
        assert again.redis_url is not None and again.redis_url.get_secret_value() == url  # same port and password
        assert await job_state(url, embedded, job_id) == ("queued", 0)  # the append-only file kept it
    assert list(directory.glob("appendonlydir/*.aof"))


def test_a_second_serve_is_refused_and_a_left_server_is_adopted(embedded: Settings) -> None:
    directory = embedded_dir(embedded)
    first = EmbeddedRedis(directory, "redis-server")
    first.start()
    try:
        record = read_record(directory)
        assert record is not None
        # Another live serve owns it: a second one says how to work beside it instead.
        other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        (directory / STATE_FILE).write_text(
            json.dumps({"url": record.url, "pid": record.pid, "owner": other.pid, "started": record.started})
        )
        with pytest.raises(QueueError, match="another komt-bot serve"):
            EmbeddedRedis(directory, "redis-server").start()
        other.communicate(b"")  # that serve is gone (killed without stopping its Redis)
        adopter = EmbeddedRedis(directory, "redis-server")
        assert adopter.start() == record.url
        assert adopter.pid == record.pid
        adopter.stop()
        assert not pid_alive(record.pid)
        assert discover(embedded) is None
    finally:
        first.stop()


def test_without_a_binary_serve_falls_back_and_says_what_is_lost(
    embedded: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING), serve_redis(embedded) as served:
        assert served.redis_url is None  # open_queue(embedded_ok=True) then uses fakeredis
    [warning] = [r.getMessage() for r in caplog.records if "fakeredis" in r.getMessage()]
    assert "lost when serve stops" in warning and "apt-get install redis-server" in warning
    assert not embedded_dir(embedded).exists()


def komt(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "komt_bot", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def serve_env(tiny_model_dir: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    env |= {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "KOMT_MODEL__BASE": str(tiny_model_dir / "base"),
        "KOMT_MODEL__ADAPTER": str(tiny_model_dir / "lora"),
        "KOMT_MODEL__QUANTIZATION": "none",
        "KOMT_GENERATION__MAX_NEW_TOKENS": "16",
        "KOMT_QUEUE__HEARTBEAT_SECONDS": "0.5",
        "KOMT_WORKER__DRAIN_SECONDS": "5",
        "PYTHONPATH": str(ROOT),
    }
    yield env


@pytest.mark.slow
async def test_serve_runs_redis_that_commands_from_another_terminal_use(
    serve_env: dict[str, str], no_komt_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_komt_env.setenv("XDG_STATE_HOME", serve_env["XDG_STATE_HOME"])
    settings = load_settings()
    # A question queued in an earlier run of the embedded Redis, while no worker ran.
    with serve_redis(settings) as earlier:
        assert earlier.redis_url is not None
        job_id = await submit(earlier.redis_url.get_secret_value(), settings)
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log_file:
        serve = subprocess.Popen(  # noqa: ASYNC220  (it runs beside this test's event loop, never waited on there)
            [sys.executable, "-m", "komt_bot", "serve"], env=serve_env, cwd=ROOT, stderr=log_file
        )
    try:

        async def answered() -> bool:
            url = discover(settings)
            return url is not None and (await job_state(url, settings, job_id))[0] == "done"

        await eventually(answered, timeout=90, interval=0.2)  # serve restarted, loaded the job, answered it
        status = json.loads(komt("queue", "status", "--json", env=serve_env).stdout)
        assert [w["engine"] for w in status["workers"]] == ["batching"]
        assert status["redis"].startswith("redis://:**********@127.0.0.1:")  # the password is masked
        shown = json.loads(komt("queue", "show", job_id, "--json", env=serve_env).stdout)
        assert shown["record"]["state"] == "done" and shown["conversation"][0]["text"] == QUESTION
        health = komt("health", env=serve_env)
        assert health.returncode == 0 and health.stdout.startswith("ok: 1 worker(s) serving")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    log = log_path.read_text()
    assert serve.returncode == 0, log
    assert "embedded Redis: redis-server" in log
    gone = komt("queue", "status", env=serve_env)
    assert gone.returncode == 2 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    assert "start `komt-bot serve`" in gone.stderr


def test_serve_names_the_redis_it_uses_without_the_password(embedded: Settings) -> None:
    lines: list[str] = []
    outside = embedded.model_copy(update={"redis_url": SecretStr("redis://:secret@10.1.2.3:7000/0")})
    with serve_redis(outside, announce=lines.append):
        pass
    assert lines == ["Redis: 10.1.2.3:7000 (KOMT_REDIS_URL)"]
    with serve_redis(embedded, announce=lines.append) as served:
        assert served.redis_url is not None
        password = served.redis_url.get_secret_value().split(":")[2].split("@")[0]
        assert lines[1].startswith("embedded Redis: redis-server (pid ") and ", started) on 127.0.0.1:" in lines[1]
        assert password not in lines[1]


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_the_embedded_redis_ends_with_serve_whatever_ends_it(
    serve_env: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    directory = Path(serve_env["XDG_STATE_HOME"]) / "komt-bot" / "redis"
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log_file:
        serve = subprocess.Popen([sys.executable, "-m", "komt_bot", "serve"], env=serve_env, cwd=ROOT, stderr=log_file)
    record: ServerRecord | None = None
    try:

        def running() -> bool:
            nonlocal record
            record = read_record(directory)
            announced = "embedded Redis: redis-server" in log_path.read_text()
            return record is not None and pid_alive(record.pid) and announced

        wait_until(running, timeout=60)
        assert record is not None
        assert f"embedded Redis: redis-server (pid {record.pid}, started) on 127.0.0.1:" in log_path.read_text()
        serve.send_signal(sig)
        serve.wait(timeout=30)
        wait_until(lambda: not pid_alive(record.pid), timeout=30)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        if record is not None and pid_alive(record.pid):
            os.kill(record.pid, signal.SIGKILL)
    assert list(directory.glob("appendonlydir/*.aof"))  # its data stays for the next serve
