"""Terminal chat and the all-in-one `serve`, with the tiny real model, a real worker and a real Redis."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from adapters.console import answer
from komt_bot.jobs import Turn
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from tests.fake_engine import ScriptedEngine
from tests.helpers import running_worker

ROOT = Path(__file__).resolve().parents[1]
JEJU = "제주도를 1박2일로 혼자 여행하려고 하는데 여행 코스를 만들어줘"


def tiny_env(tiny_model_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    env |= {
        "KOMT_MODEL__BASE": str(tiny_model_dir / "base"),
        "KOMT_MODEL__ADAPTER": str(tiny_model_dir / "lora"),
        "KOMT_MODEL__QUANTIZATION": "none",
        "KOMT_GENERATION__MAX_NEW_TOKENS": "48",
        "PYTHONPATH": str(ROOT),
        **extra,
    }
    return env


async def test_chat_prints_the_answer_as_it_streams(redis_client: aioredis.Redis, settings: Settings) -> None:
    queue = JobQueue(redis_client, settings.queue)
    out = io.StringIO()
    async with running_worker(queue, ScriptedEngine("제주 공항에서 시작해요. 성산일출봉!"), settings):
        reply = await answer(queue, settings, [Turn(role="user", text=JEJU)], out=out)
    assert reply == "제주 공항에서 시작해요. 성산일출봉!"
    assert out.getvalue().startswith("제주 공항에서 시작해요. 성산일출봉!")


async def test_chat_says_what_went_wrong(redis_client: aioredis.Redis, settings: Settings) -> None:
    queue = JobQueue(redis_client, settings.queue)
    out = io.StringIO()
    assert await answer(queue, settings, [Turn(role="user", text="   ")], out=out) is None
    assert "질문이 비어 있습니다" in out.getvalue()
    out = io.StringIO()
    async with running_worker(queue, ScriptedEngine("x", fail_with="boom"), settings):
        assert await answer(queue, settings, [Turn(role="user", text="hi")], out=out) is None
    assert "💥" in out.getvalue()


@pytest.mark.slow
def test_worker_and_chat_commands_answer_in_korean_without_broken_characters(tiny_model_dir: Path, prefix: str) -> None:
    env = tiny_env(tiny_model_dir, KOMT_REDIS_URL="redis://127.0.0.1:6379/0", KOMT_QUEUE__PREFIX=prefix)
    worker = subprocess.Popen(
        [sys.executable, "-m", "komt_bot", "worker"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        chat = subprocess.run(
            [sys.executable, "-m", "komt_bot", "chat", JEJU],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        worker.terminate()
        _out, worker_log = worker.communicate(timeout=30)
    assert chat.returncode == 0, chat.stderr + worker_log
    assert chat.stdout.strip(), "the answer was empty"
    assert "\ufffd" not in chat.stdout
    assert worker.returncode == 0, worker_log


@pytest.mark.slow
def test_serve_runs_the_whole_stack_in_one_process(tiny_model_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "komt_bot", "serve", "--chat"],
        input=f"{JEJU}\n/quit\n",
        env=tiny_env(tiny_model_dir, KOMT_LOG__LEVEL="INFO"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "komt>" in result.stdout
    answer_text = result.stdout.split("komt>", 1)[1].strip()
    assert answer_text and "\ufffd" not in answer_text
    assert "embedded" in result.stderr  # no KOMT_REDIS_URL: the in-process Redis was used
