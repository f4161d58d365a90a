"""`komt-bot bench` runs the three paths on one model and reports them side by side (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from komt_bot.bench import (
    PathResult,
    compute_ratios,
    load_questions,
    make_requests,
    median_run,
    settings_environment,
    worker_environment,
)
from komt_bot.settings import Settings, load_settings
from tests.openai_server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]


def row(path: str, tok_s: float, concurrency: int = 4) -> PathResult:
    return PathResult(path, concurrency, 4, 100, 1.0, tok_s, 0.1, 0.2, 1.0, 1.0, 100.0)


def test_the_questions_are_komts_own_korean_evaluation_set() -> None:
    questions = load_questions()
    assert len(questions) == 37
    assert all(any("가" <= ch <= "힣" for ch in q) for q in questions)
    staggered = make_requests(40, stagger=0.5)
    assert [r.arrival for r in staggered[:3]] == [0.0, 0.5, 1.0]
    assert staggered[0].prompt == f"### instruction: {staggered[0].question}\n\n### Response: "


def test_ratios_compare_paths_at_the_same_concurrency() -> None:
    ratios = compute_ratios([row("sequential", 50), row("engine", 200), row("queue", 180)])
    assert ratios == {"engine/sequential@4": 4.0, "queue/sequential@4": 3.6, "queue/engine@4": 0.9}


def test_repeated_runs_keep_the_median() -> None:
    chosen = median_run([row("engine", 300), row("engine", 100), row("engine", 200)])
    assert chosen.tokens_per_second == 200
    assert "median of 3 runs" in chosen.note


def changed(model: type[BaseModel], name: str) -> Any:
    """A valid value of ``model.name`` other than its default (None where the default is not, else not None)."""
    default = model.model_fields[name].get_default(call_default_factory=True)
    if isinstance(default, BaseModel):  # a nested section (e.g. slack.limits): every field of it changed
        return {field: changed(type(default), field) for field in type(default).model_fields}
    candidates: list[Any] = [None]
    if isinstance(default, bool):
        candidates.append(not default)
    elif isinstance(default, int | float):
        candidates += [default + 1, default - 1, default / 2]
    elif isinstance(default, str):
        candidates += [f"{default}x", f"{default}x/"]
    candidates += ["x", "/x", 64, 0.5, ["a", "b"], [7, 8], ("a", "b"), "redis://x:6379/1"]
    candidates += list(getattr(model.model_fields[name].annotation, "__args__", ()))  # a Literal's other choices
    for candidate in candidates:
        try:
            value = getattr(model.model_validate({name: candidate}), name)
        except ValidationError:
            continue
        if value != default:
            return candidate
    raise AssertionError(f"no other value for {model.__name__}.{name}: teach this test its type")


def test_the_worker_environment_carries_every_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every field of every section, changed from its default, comes back from the environment equal."""
    for name in list(os.environ):
        if name.startswith("KOMT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no config/komt-bot.toml
    data: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            data[name] = {field: changed(section, field) for field in section.model_fields}
        else:
            data[name] = changed(Settings, name)
    settings = load_settings(**data)
    assert settings.model.adapter is None and settings.worker.name is not None  # both ways of leaving a default
    env = settings_environment(settings)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings() == settings
    assert settings.redis_url is not None and env["KOMT_REDIS_URL"] == settings.redis_url.get_secret_value()

    monkeypatch.setenv("KOMT_CONFIG", "elsewhere.toml")
    worker = worker_environment(settings, settings.model, "komt-bench-x", 5)
    assert "KOMT_CONFIG" not in worker and worker["KOMT_QUEUE__PREFIX"] == "komt-bench-x"
    assert worker["KOMT_WORKER__CAPACITY"] == "5" and worker["KOMT_LOG__LEVEL"] == "WARNING"
    assert "KOMT_METRICS__PORT" not in worker and worker["KOMT_MODEL"] == '{"adapter": null}'


@pytest.mark.slow
def test_bench_json_reports_all_three_paths(tiny_model_dir: Path, prefix: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    env |= {"KOMT_REDIS_URL": "redis://127.0.0.1:6379/0", "KOMT_QUEUE__PREFIX": prefix, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "komt_bot",
            "bench",
            "--model",
            str(tiny_model_dir / "base"),
            "--adapter",
            str(tiny_model_dir / "lora"),
            "--concurrency",
            "3",
            "--max-new-tokens",
            "6",
            "--json",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["path"] for r in report["results"]] == ["sequential", "engine", "queue"]
    assert all(r["requests"] == 3 and r["tokens"] > 0 and r["ttft_p50"] is not None for r in report["results"])
    assert next(r for r in report["results"] if r["path"] == "engine")["batch_size_max"] > 1
    assert set(report["ratios"]) == {"engine/sequential@3", "queue/sequential@3", "queue/engine@3"}
    assert report["machine"]["cores"] and report["model"]["device"] == "cpu"
    # (b) and (c) took turns; each pair's ratio is kept, and who used the CPU and Redis in each.
    assert report["ratio_runs"] == {"queue/engine@3": [report["ratios"]["queue/engine@3"]]}
    engine, queue = report["results"][1], report["results"][2]
    assert set(engine["cpu_seconds"]) == {"event loop", "generation"}
    assert set(queue["cpu_seconds"]) == {"worker event loop", "worker generation", "clients", "redis"}
    assert queue["redis_calls"]["evalsha"] >= 3 * 3  # at least each job's submit, start and finish
    assert queue["redis_commands_per_token"] > 0


@pytest.mark.slow
def test_bench_server_and_remote_paths_report_both_rows(
    tiny_model_dir: Path, prefix: str, openai_server: ServerProcess
) -> None:
    """(d): the same requests straight to an OpenAI-compatible server, and through the queue to an openai worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    env |= {"KOMT_REDIS_URL": "redis://127.0.0.1:6379/0", "KOMT_QUEUE__PREFIX": prefix, "PYTHONPATH": str(ROOT)}
    env["KOMT_GENERATION__TEMPERATURE"] = "0"  # greedy: the same answers every run (the random model's are noise)
    command = [sys.executable, "-m", "komt_bot", "bench", "--model", openai_server.model, "--paths", "server,remote"]
    command += ["--openai-url", openai_server.base_url, "--openai-model", openai_server.model]
    command += ["--concurrency", "2", "--max-new-tokens", "6", "--json"]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["path"] for r in report["results"]] == ["server", "remote"]
    assert all(r["requests"] == 2 and r["tokens"] > 0 and r["ttft_p50"] is not None for r in report["results"])
    assert set(report["ratios"]) == {"remote/server@2"}
    assert report["model"]["openai_url"] == openai_server.base_url
