"""The CLI's surface: one help style everywhere, ``--version`` and ``-h``, and one rule for exit codes on every
command (usage and configuration mistakes exit 2, everything else 1)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from komt_bot import __version__
from komt_bot.cli import app
from komt_bot.cli.boundary import COMMAND_ORDER
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from tests.conftest import REDIS_URL
from tests.private_redis import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("KOMT_") or name == "COLUMNS":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "100", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def komt_bot(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real console command, in a process of its own (the adapters install signal handlers)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "komt_bot", *args], env=base | env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


# -- help ------------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_the_top_level_help_is_boxed_like_the_subcommands_in_a_sensible_order() -> None:
    code, out, _err = run("--help")
    assert code == 0
    assert "╭─ Commands" in out and "╭─ Commands" in run("queue", "--help")[1]  # one style, also when piped
    listed = [line.split()[1] for line in out.splitlines() if line.startswith("│ ") and not line[2:3].isspace()]
    commands = [name for name in listed if not name.startswith("-")]
    assert commands == list(COMMAND_ORDER)
    assert "--version" in out and "-h" in out
    assert run("-h")[1] == out
    assert run("queue", "jobs", "-h")[1] == run("queue", "jobs", "--help")[1]


@pytest.mark.usefixtures("clean_env")
def test_version() -> None:
    assert run("--version")[:2] == (0, f"komt-bot {__version__}\n")


@pytest.mark.usefixtures("clean_env")
def test_help_says_what_a_newcomer_looks_for() -> None:
    assert "soak" in run("--help", env={"COLUMNS": "200"})[1].split("dev ")[-1]
    assert "soak" in run("dev", "--help")[1]
    chat = run("chat", "--help")[1]
    assert "/reset" in chat and "/quit" in chat
    slack = run("slack", "--help", env={"COLUMNS": "200"})[1]
    for name in ("KOMT_SLACK__BOT_TOKEN", "KOMT_SLACK__APP_TOKEN", "KOMT_SLACK__SIGNING_SECRET", "docs/SLACK.md"):
        assert name in slack
    discord = run("discord", "--help", env={"COLUMNS": "200"})[1]
    assert "KOMT_DISCORD__TOKEN" in discord and "docs/DISCORD.md" in discord
    health = run("health", "--help", env={"COLUMNS": "200"})[1]
    assert "<worker|slack|discord>" in health  # a choice, not free text


# -- exit codes: mistakes 2, failures 1 --------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_usage_and_configuration_mistakes_exit_2_on_every_command() -> None:
    code, out, _err = run("health", env={"KOMT_LOG__LEVEL": "LOUD"})
    assert code == 2 and out.startswith("unhealthy: configuration error: KOMT_LOG__LEVEL")
    code, _out, err = run("health", "--component", "wrker")
    assert code == 2 and "'wrker' is not one of 'worker', 'slack', 'discord'" in err
    code, _out, err = run("dev", "tiny-model", "models/x", "--size", "huge")
    assert code == 2 and "'huge' is not one of 'tiny', 'small'" in err
    assert run("queue", "status", env={"KOMT_LOG__LEVEL": "LOUD"})[0] == 2


def test_missing_platform_settings_are_named_at_once_with_the_guide(tmp_path: Path) -> None:
    slack = komt_bot("slack", env={}, cwd=tmp_path)
    assert slack.returncode == 2, slack.stderr
    [line] = slack.stderr.strip().splitlines()
    assert line.startswith("configuration error: not set: KOMT_SLACK__BOT_TOKEN, KOMT_SLACK__APP_TOKEN (Socket Mode)")
    assert "KOMT_SLACK__SIGNING_SECRET" in line and "docs/SLACK.md" in line
    discord = komt_bot("discord", env={}, cwd=tmp_path)
    assert discord.returncode == 2, discord.stderr
    [line] = discord.stderr.strip().splitlines()
    assert "KOMT_DISCORD__TOKEN" in line and "docs/DISCORD.md" in line


def test_an_unreachable_slack_is_a_failure_not_a_setting(tmp_path: Path, settings: Settings) -> None:
    env = {
        "KOMT_REDIS_URL": REDIS_URL,
        "KOMT_QUEUE__PREFIX": settings.queue.prefix,
        "KOMT_SLACK__BOT_TOKEN": "xoxb-test",
        "KOMT_SLACK__SIGNING_SECRET": "secret",
        "KOMT_SLACK__PORT": "0",
        "KOMT_SLACK__API_URL": f"http://127.0.0.1:{free_port()}/api/",  # nobody listens
    }
    result = komt_bot("slack", env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "error: cannot reach Slack at http://127.0.0.1:" in result.stderr
    assert "configuration error" not in result.stderr


# -- output ----------------------------------------------------------------------------------------------------------


async def test_queue_jobs_piped_is_not_cut_to_80_columns(
    redis_client: aioredis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    queue = JobQueue(redis_client, settings.queue)
    question = "서울의 오래된 궁궐 가운데 가장 먼저 지어진 곳은 어디인가요 and why does it matter today"
    origin = Origin(platform="test", channel="C-a-rather-long-channel-id", user="U-a-rather-long-user-id")
    job_id = (await queue.submit(JobRequest(conversation=[Turn(role="user", text=question)], origin=origin))).job_id
    env = {"KOMT_REDIS_URL": REDIS_URL, "KOMT_QUEUE__PREFIX": settings.queue.prefix}
    result = await asyncio.to_thread(lambda: CliRunner().invoke(app, ["queue", "jobs"], env=env))
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if job_id in line]
    assert len(row) > 80 and "…" not in row.split(job_id)[0]


def test_tiny_model_keeps_third_party_warnings_out_of_the_terminal(tmp_path: Path) -> None:
    result = komt_bot("dev", "tiny-model", "tiny", env={"HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gemm_4bit" not in result.stderr and "pip install kernels" not in result.stderr, result.stderr
    assert (tmp_path / "tiny" / "base").is_dir() and "KOMT_MODEL__BASE=" in result.stdout
