"""Mistakes fail fast and name the setting: a model path typo, a malformed hub id, a hub model out of reach, and a
wrong Redis URL (the worker waits, but says for which setting, and after a minute that it still does)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from komt_bot.cli import app
from komt_bot.cli.preflight import check_model
from komt_bot.engine.loading import load_model
from komt_bot.errors import ConfigError, EngineError
from komt_bot.queue import connection, open_queue
from komt_bot.settings import ModelSettings, load_settings
from tests.private_redis import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub_out_of_reach(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No KOMT_ settings, an empty Hugging Face cache, and a Hub whose connection is refused at once."""
    for name in list(os.environ):
        if name.startswith(("KOMT_", "HF_", "TRANSFORMERS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def worker(env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "komt_bot", "worker"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("models/nope", "KOMT_MODEL__BASE: base model directory not found: models/nope"),  # ./models exists
        ("./nope", "KOMT_MODEL__BASE: base model directory not found: ./nope"),
        ("nope", "KOMT_MODEL__BASE: base model 'nope' is neither a directory nor a hub id of the form owner/name"),
        ("someone/nope", "KOMT_MODEL__BASE: base model 'someone/nope' is not in the local Hugging Face cache"),
    ],
)
def test_a_model_mistake_is_one_line_naming_the_setting_at_once(
    hub_out_of_reach: pytest.MonkeyPatch, tmp_path: Path, base: str, expected: str
) -> None:
    (tmp_path / "models").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    env |= {"KOMT_MODEL__BASE": base, "PYTHONPATH": str(ROOT)}
    result, seconds = worker(env, tmp_path)
    print(f"{base}: failed in {seconds:.2f} s")
    assert seconds < 30  # not a minute of hub retries (about 1 s measured, interpreter start included)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"configuration error: {expected}")
    assert "set KOMT_MODEL__BASE to a local" in line


def test_a_hub_adapter_out_of_reach_names_its_setting(
    hub_out_of_reach: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    started = time.monotonic()
    settings = load_settings(model={"base": str(tiny_model_dir / "base")})  # the default adapter: a hub id
    with pytest.raises(ConfigError, match=r"^KOMT_MODEL__ADAPTER: adapter 'davidkim205/.*not in the local") as caught:
        check_model(settings)
    assert "or to none for no adapter" in str(caught.value)
    with pytest.raises(EngineError, match=r"^KOMT_MODEL__ADAPTER: "):  # the loader says the same before loading
        load_model(ModelSettings(base=str(tiny_model_dir / "base"), adapter="someone/lora", quantization="none"))
    assert time.monotonic() - started < 30
    hub_out_of_reach.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"KOMT_MODEL__ADAPTER: .*\(HF_HUB_OFFLINE is set\)"):
        check_model(settings)
    check_model(load_settings(model={"base": str(tiny_model_dir / "base"), "adapter": str(tiny_model_dir / "lora")}))


@pytest.mark.slow
def test_a_cached_hub_model_loads_quietly_while_the_hub_is_out_of_reach(
    hub_out_of_reach: pytest.MonkeyPatch, tiny_model_dir: Path, tmp_path: Path
) -> None:
    snapshot = tmp_path / "hf" / "hub" / "models--someone--tiny" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model_dir / "base", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    script = (
        "from komt_bot.engine.loading import load_model\nfrom komt_bot.settings import ModelSettings\n"
        "m = load_model(ModelSettings(base='someone/tiny', adapter=None, quantization='none'))\nprint(m.base)"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "someone/tiny"
    assert time.monotonic() - started < 60
    assert "huggingface.co" not in result.stderr and "thrown while requesting" not in result.stderr


def test_an_http_redis_url_says_which_schemes_are_accepted(hub_out_of_reach: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["queue", "status"], env={"KOMT_REDIS_URL": "http://127.0.0.1:6379/0"})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "configuration error: KOMT_REDIS_URL: the scheme http:// is not accepted: use redis://HOST:PORT/DB "
        "(rediss:// for TLS, unix:///PATH for a socket)"
    )


async def test_a_worker_waiting_for_a_wrong_redis_url_names_it_and_says_it_still_waits(
    hub_out_of_reach: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hub_out_of_reach.setattr(connection, "STILL_WAITING_SECONDS", 1.0)  # a minute, shortened
    port = free_port()
    settings = load_settings(redis_url=f"redis://:hunter2@127.0.0.1:{port}/0")
    with caplog.at_level(logging.WARNING, logger="komt_bot.queue.connection"), pytest.raises(TimeoutError):
        async with asyncio.timeout(3.0), open_queue(settings, wait=True):
            pass  # pragma: no cover - nothing answers there
    said = [r.getMessage() for r in caplog.records]
    where = f"127.0.0.1:{port} (KOMT_REDIS_URL=redis://**********@127.0.0.1:{port}/0)"
    assert said[0].startswith(f"waiting for Redis at {where} (")
    assert any(line.startswith(f"still waiting for Redis at {where} after ") for line in said), said
    assert "if the address is wrong, fix it and restart" in said[-1]
    assert not any("hunter2" in line for line in said)
