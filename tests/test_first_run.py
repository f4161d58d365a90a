"""First run and everyday use: settings mistakes are one line, the worker fails fast without a model, questions the
model could never fit are refused at once, and the CLI's help and errors read cleanly."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from komt_bot import messages
from komt_bot.chat.ask import Refusal, admit, check, max_question_chars
from komt_bot.cli import app
from komt_bot.cli.preflight import check_default_model, connect_problem, hub_problem
from komt_bot.errors import ConfigError
from komt_bot.prompt import question_char_limit
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings, load_settings
from tests.private_redis import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("KOMT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "100", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


# -- settings --------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_a_redis_url_without_a_scheme_is_one_line() -> None:
    code, _out, err = run("queue", "status", env={"KOMT_REDIS_URL": "localhost:6379"})
    assert code == 2
    assert err.strip() == (
        "configuration error: KOMT_REDIS_URL: needs a scheme: redis://HOST:PORT/DB (rediss:// for TLS, "
        "unix:///PATH for a socket)"
    )
    assert load_settings(redis_url="").redis_url is None  # set but empty: unset


def test_a_toml_syntax_error_names_the_file_and_line(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "komt.toml"
    config.write_text('[queue]\nprefix = "ok"\nmax_backlog = = 3\n')
    clean_env.setenv("KOMT_CONFIG", str(config))
    code, _out, err = run("dev", "settings")
    assert code == 2
    assert err.startswith(f"configuration error: {config}:3: ")
    assert len(err.strip().splitlines()) == 1


def test_unknown_names_are_warned_about_with_the_closest_setting(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "komt.toml"
    config.write_text('redis_ur = "redis://x:1/0"\n[queue]\nprefx = "filed"\nmax_backlog = 7\n')
    clean_env.setenv("KOMT_CONFIG", str(config))
    clean_env.setenv("KOMT_MODEL__BASSE", "my/model")
    clean_env.setenv("KOMT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")  # the tests' own variable: no warning
    with caplog.at_level(logging.WARNING, logger="komt_bot.settings"):
        settings = load_settings()
    assert settings.queue.max_backlog == 7 and settings.redis_url is None
    assert sorted(r.getMessage() for r in caplog.records) == sorted(
        [
            "KOMT_MODEL__BASSE is not a komt-bot setting and is ignored (did you mean KOMT_MODEL__BASE?)",
            f"{config}: queue.prefx is not a komt-bot setting and is ignored (did you mean queue.prefix?)",
            f"{config}: redis_ur is not a komt-bot setting and is ignored (did you mean redis_url?)",
        ]
    )


# -- one question limit for adapters and the model --------------------------------------------------------------------


async def test_a_question_the_model_could_never_fit_is_refused_at_once(
    redis_client: aioredis.Redis, settings: Settings
) -> None:
    small = load_settings(redis_url="redis://127.0.0.1:6379/0", model={"max_prompt_tokens": 64})
    limit = question_char_limit(64)
    assert max_question_chars(small.limits) == limit == 6 * (64 - 16) < small.limits.max_question_chars
    question = "가" * (limit + 1)
    refusal = check(question, small.limits)
    assert isinstance(refusal, Refusal) and refusal.kind == "too_long"
    assert refusal.text == messages.too_long(limit + 1, limit)  # the same "too long" message as ever
    queue = JobQueue(redis_client, settings.queue)
    assert await admit(queue, small.limits, "U1", question) == refusal
    assert await queue.backlog() == 0  # never queued for a worker to fail
    assert check("가" * limit, small.limits) == "가" * limit
    assert max_question_chars(load_settings().limits) == 8000  # the default budget holds the default limit


# -- the worker without a model ---------------------------------------------------------------------------------------


def test_the_worker_fails_fast_offline_without_a_model(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMT_", "HF_"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "komt_bot", "worker"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - started < 30  # not a minute of hub retries
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "HF_HUB_OFFLINE is set" in line
    assert "komt-bot dev tiny-model models/tiny" in line and "KOMT_MODEL__BASE" in line


def test_the_hub_check_is_cheap_and_skips_explicit_models(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.delenv("HF_HUB_OFFLINE", raising=False)
    clean_env.delenv("TRANSFORMERS_OFFLINE", raising=False)
    clean_env.setenv("HF_HOME", str(tmp_path / "hf"))
    port = free_port()  # nobody listens: the connection is refused at once
    clean_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    problem = hub_problem()
    assert problem is not None and problem.startswith(f"127.0.0.1:{port}: ")
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        check_default_model(load_settings())
    check_default_model(load_settings(model={"base": "some/explicit-model"}))  # the loader's to report
    check_default_model(load_settings(model={"load_format": "dummy"}))
    assert connect_problem("127.0.0.1", port, 1.0) is not None


# -- the CLI ---------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_help_shows_no_type_noise_and_plain_argument_names() -> None:
    for args in (["--help"], ["queue", "show", "--help"], ["worker", "--help"], ["dev", "tiny-model", "--help"]):
        code, out, _err = run(*args)
        assert code == 0, args
        assert "<bool>" not in out and "{" not in out, out  # flags take no value; arguments are NAME
    shown = run("queue", "show", "--help")[1]
    assert "queue show [OPTIONS] JOB_ID" in shown and "JOB_ID        the job's id" in shown
    assert "queue requeue [OPTIONS] [JOB_ID]" in run("queue", "requeue", "--help")[1]


@pytest.mark.usefixtures("clean_env")
def test_usage_errors_are_not_boxed_or_wrapped_off_a_terminal() -> None:
    long_value = "x" * 150
    code, _out, err = run("queue", "jobs", "--limit", long_value)
    assert code == 2
    assert not any(ch in err for ch in "╭│╰")
    assert any(line.startswith("Error: Invalid value for '--limit'") for line in err.splitlines())
    code, _out, err = run("queue", "show")
    assert "Error: Missing argument 'JOB_ID'." in err


@pytest.mark.usefixtures("clean_env")
def test_dev_settings_is_a_table_with_secrets_masked() -> None:
    code, out, _err = run("dev", "settings", env={"KOMT_SLACK__BOT_TOKEN": "xoxb-very-secret", "COLUMNS": "160"})
    assert code == 0
    assert "xoxb-very-secret" not in out and "{'" not in out
    rows = {line.split("│")[0].strip(): line.split("│")[1].strip() for line in out.splitlines() if "│" in line}
    assert rows["KOMT_SLACK__BOT_TOKEN"] == "**********"
    assert rows["KOMT_QUEUE__PREFIX"] == "komt"
    assert rows["KOMT_REDIS_URL"] == "-"
