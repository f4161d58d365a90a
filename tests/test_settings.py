"""Settings: environment over TOML, readable errors with exit code 2, secrets never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from komt_bot.errors import ConfigError
from komt_bot.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("KOMT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_model_cards() -> None:
    settings = load_settings()
    assert settings.model.base == "davidkim205/komt-llama2-13b-v1"
    assert settings.model.adapter == "davidkim205/komt-llama2-13b-v1-lora"
    assert (settings.generation.temperature, settings.generation.top_p, settings.generation.top_k) == (0.8, 0.8, 100)
    assert settings.generation.max_new_tokens == 512
    assert settings.generation.stop == ("###", "</s>", "<|end|>")
    assert settings.queue.prefix == "komt"
    assert settings.redis_url is None


def test_environment_wins_over_the_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "komt.toml"
    config.write_text('[model]\nbase = "from-file"\nadapter = ""\n[queue]\nprefix = "filed"\n')
    monkeypatch.setenv("KOMT_CONFIG", str(config))
    monkeypatch.setenv("KOMT_QUEUE__PREFIX", "from-env")
    settings = load_settings()
    assert settings.model.base == "from-file"
    assert settings.model.adapter is None
    assert settings.queue.prefix == "from-env"


def test_the_default_config_file_is_read_when_present(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "komt-bot.toml").write_text("[generation]\nmax_new_tokens = 64\n")
    assert load_settings().generation.max_new_tokens == 64


def test_a_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMT_QUEUE__MAX_BACKLOG", "lots")
    with pytest.raises(ConfigError, match="KOMT_QUEUE__MAX_BACKLOG"):
        load_settings()


def test_a_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    env["KOMT_GENERATION__TEMPERATURE"] = "hot"
    result = subprocess.run(
        [sys.executable, "-m", "komt_bot", "dev", "settings"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "KOMT_GENERATION__TEMPERATURE" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_secrets_are_masked_in_json_output(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    env |= {"KOMT_SLACK__BOT_TOKEN": "xoxb-very-secret", "KOMT_REDIS_URL": "redis://:hunter2@localhost:6379/0"}
    result = subprocess.run(
        [sys.executable, "-m", "komt_bot", "dev", "settings", "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert "xoxb-very-secret" not in result.stdout
    assert "hunter2" not in result.stdout
    assert json.loads(result.stdout)["slack"]["bot_token"] == "**********"


def test_a_slack_api_url_gets_its_trailing_slash() -> None:
    assert load_settings(slack={"api_url": "http://127.0.0.1:9/api"}).slack.api_url == "http://127.0.0.1:9/api/"
