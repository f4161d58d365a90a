"""`komt-bot eval` on a live deployment: real Redis, a real worker, a real HTTP judge (tests/fake_judge.py).

Every run goes through the CLI app (typer's CliRunner in a thread, or a real process for the stopped run); the
deployment is a ScriptedEngine worker whose answers have known lengths (so the fake judge's scores are known), or
the tiny real model for the whole 37-question run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from komt_bot.eval import PROMPT_VERSION, load_questions, load_reference, read_records
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings
from tests.fake_engine import ScriptedEngine
from tests.fake_judge import MODEL, FakeJudge, rule_score
from tests.helpers import eventually, running_worker
from tests.test_admin import Cli, make_cli

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = load_questions()
CARD_MODELS = [row.model for row in load_reference()]
LETTERS = "가나다라마바사아자차" * 6


def scripted_answer(prompt: str) -> str:
    """3 to 59 Korean characters, decided by the prompt: the fake judge's scores spread over 0..5."""
    return LETTERS[: 3 + (len(prompt) * 7) % 57]


def lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()]


@pytest.fixture
async def judge() -> AsyncIterator[FakeJudge]:
    server = FakeJudge()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def cli(settings: Settings, judge: FakeJudge) -> Cli:
    """The CLI on this test's queue, judged by the fake judge."""
    return Cli({**make_cli(settings).env, "KOMT_EVAL__JUDGE_URL": judge.url, "KOMT_EVAL__JUDGE_MODEL": MODEL})


@pytest.fixture
def queue(redis_client: aioredis.Redis, settings: Settings) -> JobQueue:
    return JobQueue(redis_client, settings.queue)


@pytest.fixture
async def deployment(queue: JobQueue, settings: Settings) -> AsyncIterator[ScriptedEngine]:
    """A live worker answering with :func:`scripted_answer`."""
    engine = ScriptedEngine(scripted_answer, capacity=8, piece_chars=8, delay=0.005)
    async with running_worker(queue, engine, settings, name="eval-worker"):
        await eventually(queue.presence.workers)
        yield engine


# -- against the deployment -----------------------------------------------------------------------------------------


async def test_every_answer_goes_through_the_queue_as_an_adapter_asks_and_is_scored(
    cli: Cli, judge: FakeJudge, deployment: ScriptedEngine, queue: JobQueue, tmp_path: Path
) -> None:
    out = tmp_path / "run.jsonl"
    summary = await cli.json("eval", "--limit", "10", "--concurrency", "4", "--out", str(out))
    assert (summary["questions"], summary["judged"], summary["unjudged"], summary["failed"]) == (10, 10, 0, 0)
    for item, question in zip(summary["items"], QUESTIONS, strict=False):
        assert item["question"] == question.instruction
        assert item["answer"] == scripted_answer(next(p for p in deployment.prompts if question.instruction in p))
        assert item["score"] == rule_score(item["answer"]), item["judge_reply"]  # the last score, not "점수: 0"
    assert summary["score"] == sum(rule_score(item["answer"]) for item in summary["items"])
    assert summary["max_score"] == 50 and summary["percentage"] == pytest.approx(summary["score"] * 2, abs=0.01)
    assert summary["deployment"] == "scripted (none, scripted)"
    assert all(a.body["temperature"] == 0 and a.body["model"] == MODEL for a in judge.asked)
    # Each answer came from a job shaped like an adapter's: one turn, origin "eval", the deployment's own sampling.
    saved, bad = read_records(out)
    assert bad == 0 and len(saved) == 10
    assert all(
        r.status == "judged" and r.prompt_version == PROMPT_VERSION and r.judge_model == MODEL for r in saved.values()
    )
    job = await queue.job(saved["3"].job_id or "")
    request = job.request
    assert request is not None and job.platform == "eval"
    assert [t.role for t in request.conversation] == ["user"] and request.conversation[0].text == QUESTIONS[
        3
    ].instruction
    assert (request.max_new_tokens, request.temperature, request.top_p, request.top_k) == (None, None, None, None)
    steps = [json.loads(line)["status"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(steps) == ["answered"] * 10 + ["judged"] * 10  # each step appended as it happened


async def test_a_reply_without_a_score_is_asked_again_once_then_counted_unjudged(
    cli: Cli, judge: FakeJudge, deployment: ScriptedEngine
) -> None:
    judge.omit_for = {QUESTIONS[1].instruction, QUESTIONS[4].instruction}
    result = await cli.ok("eval", "--limit", "6")
    retries = [a for a in judge.asked if a.retry]
    assert sorted(a.question for a in retries) == sorted(judge.omit_for)  # once each, then given up
    assert len(judge.asked) == 8
    table = result.stdout
    for model in CARD_MODELS:
        assert model in table
    assert "▶ scripted (none, scripted)" in table
    assert "4 of 6 answers judged, 2 unjudged, 0 failed" in " ".join(table.split())
    assert "unjudged (no score in the reply)" in result.stderr  # plain progress lines when not on a terminal


async def test_a_score_given_on_the_second_ask_counts(cli: Cli, judge: FakeJudge, deployment: ScriptedEngine) -> None:
    judge.omit_for, judge.omit_on_retry = {QUESTIONS[0].instruction}, False
    summary = await cli.json("eval", "--limit", "2")
    assert summary["judged"] == 2 and summary["unjudged"] == 0
    assert summary["items"][0]["score"] == rule_score(summary["items"][0]["answer"])
    assert summary["items"][0]["judge_reply"].endswith(f"Score: {summary['items'][0]['score']}")


async def test_resume_after_a_stopped_run_asks_and_judges_only_what_is_missing(
    cli: Cli, judge: FakeJudge, queue: JobQueue, settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "run.jsonl"
    engine = ScriptedEngine(scripted_answer, capacity=4, piece_chars=2, delay=0.05)
    judge.hold_after = 3  # the 4th verdict never comes: the run is stopped while it waits
    async with running_worker(queue, engine, settings, name="eval-worker") as worker:
        await eventually(queue.presence.workers)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "komt_bot", "eval", "--out", str(out), "--concurrency", "4"),
            env={**os.environ, **cli.env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.wait_for(judge.held.wait(), 60)
        process.send_signal(signal.SIGINT)
        _stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 1
        assert (
            lines(stderr.decode())[-1]
            == f"error: stopped: what was done is in {out}; continue with --resume --out {out}"
        )

        # What the stopped run had in flight was cancelled, not left running in the deployment.
        async def cancelled() -> list[str]:
            return engine.cancelled

        async def idle() -> bool:
            return worker.record().in_flight == 0 and await queue.backlog() == 0

        await eventually(cancelled)
        await eventually(idle)

        saved, _bad = read_records(out)
        answered = {key for key, r in saved.items() if r.has_answer}
        judged = {key for key, r in saved.items() if r.status == "judged"}
        assert len(judged) <= 3 < len(answered) < 37  # some answers wait for a verdict, some questions for an answer

        asked_before, judged_before = len(engine.prompts), len(judge.first_requests())
        engine.delay = 0.001
        judge.release()
        summary = await cli.json("eval", "--out", str(out), "--resume", "--concurrency", "8")
    assert summary["judged"] == 37 and summary["failed"] == 0
    new_prompts = engine.prompts[asked_before:]
    assert len(new_prompts) == 37 - len(answered)
    assert not [q.id for q in QUESTIONS if q.id in answered and any(q.instruction in p for p in new_prompts)]
    assert len(judge.first_requests()) - judged_before == 37 - len(judged)
    final, _bad = read_records(out)
    assert all(r.status == "judged" for r in final.values()) and len(final) == 37


async def test_judge_only_scores_saved_answers_again_with_another_judge(
    cli: Cli, queue: JobQueue, settings: Settings, tmp_path: Path
) -> None:
    first = tmp_path / "first.jsonl"
    engine = ScriptedEngine(scripted_answer, capacity=8, piece_chars=8, delay=0.005)
    async with running_worker(queue, engine, settings, name="eval-worker"):
        await eventually(queue.presence.workers)
        await cli.json("eval", "--limit", "5", "--out", str(first))
    asked = len(engine.prompts)
    generous = FakeJudge()
    generous.omit_for = {QUESTIONS[2].instruction}
    await generous.start()
    try:
        second = tmp_path / "second.jsonl"
        args = (
            "--judge-only",
            str(first),
            "--judge-url",
            generous.url,
            "--judge-model",
            "judge-b",
            "--out",
            str(second),
        )
        summary = await cli.json("eval", *args)  # no worker is running now: nothing is asked
    finally:
        await generous.stop()
    assert len(engine.prompts) == asked
    assert len(generous.first_requests()) == 5
    assert (summary["judged"], summary["unjudged"], summary["judge"]["model"]) == (4, 1, "judge-b")
    assert summary["deployment"] == "scripted (none, scripted)"
    saved, _bad = read_records(second)
    assert {r.judge_model for r in saved.values()} == {"judge-b"} and saved["2"].status == "unjudged"
    original, _bad = read_records(first)
    assert {k: r.answer for k, r in saved.items()} == {k: r.answer for k, r in original.items()}


async def test_a_judge_that_is_down_is_one_line_and_exit_1(cli: Cli, judge: FakeJudge, queue: JobQueue) -> None:
    await judge.stop()
    result = await cli("eval", "--limit", "3")
    assert result.exit_code == 1
    [line] = lines(result.output)
    assert re.fullmatch(rf"error: the judge at {re.escape(judge.url)} does not answer: .+", line), line
    assert await queue.backlog() == 0  # it stopped before asking anything


async def test_a_judge_failing_mid_run_is_one_line_that_points_at_resume(
    cli: Cli, judge: FakeJudge, deployment: ScriptedEngine, tmp_path: Path
) -> None:
    judge.fail_status = 400
    out = tmp_path / "run.jsonl"
    result = await cli("eval", "--limit", "3", "--out", str(out))
    assert result.exit_code == 1
    assert lines(result.stderr)[-1] == (
        f"error: the judge at {judge.url} answered HTTP 400: the judge is overloaded; "
        f"what was done is in {out}; continue with --resume --out {out}"
    )
    assert any(r.has_answer for r in read_records(out)[0].values())


async def test_no_live_worker_is_one_line_and_exit_1(cli: Cli) -> None:
    result = await cli("eval", "--limit", "2")
    assert result.exit_code == 1
    assert lines(result.output) == [
        "error: no live worker serves this queue: start `komt-bot worker` (or check KOMT_QUEUE__PREFIX)"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume"], "error: --resume continues an --out FILE: give it"),
        (
            ["--out", "{existing}"],
            "error: {existing} already holds a run: continue it with --resume, or choose a new --out",
        ),
        (["--judge-only", "{existing}", "--questions", "{existing}"], "error: --judge-only takes the questions"),
    ],
)
async def test_options_that_cannot_work_are_refused(cli: Cli, tmp_path: Path, args: list[str], message: str) -> None:
    existing = tmp_path / "old.jsonl"
    existing.write_text('{"id": "0", "question": "q", "status": "failed"}\n', encoding="utf-8")
    result = await cli("eval", *(a.format(existing=existing) for a in args))
    assert result.exit_code == 1
    [line] = lines(result.output)
    assert line.startswith(message.format(existing=existing))


async def test_the_api_key_is_sent_but_never_printed(cli: Cli, judge: FakeJudge, deployment: ScriptedEngine) -> None:
    secret = "sk-eval-very-secret"
    keyed = Cli(
        {
            **cli.env,
            "KOMT_EVAL__JUDGE_API_KEY": secret,
            "KOMT_EVAL__JUDGE_URL": f"http://u:pw@127.0.0.1:{judge.port}/v1",
        }
    )
    result = await keyed.ok("eval", "--limit", "1", "--json")
    assert secret not in result.output and ":pw@" not in result.output
    assert json.loads(result.stdout)["judge"]["url"] == f"http://u:****@127.0.0.1:{judge.port}/v1"


# -- the whole run on the tiny real model ---------------------------------------------------------------------------


async def test_json_answers_all_37_through_the_queue_and_the_table_has_the_cards_rows(
    cli: Cli, judge: FakeJudge, queue: JobQueue, settings: Settings, tiny_model_dir: Path
) -> None:
    from komt_bot.cli.run import load_warm_engine

    model: dict[str, Any] = {
        "base": str(tiny_model_dir / "base"),
        "adapter": str(tiny_model_dir / "lora"),
        "quantization": "none",
        "engine": "batching",
        "max_batch_size": 8,
    }
    served = settings.model_copy(
        update={
            "model": settings.model.model_copy(update=model),
            "generation": settings.generation.model_copy(update={"max_new_tokens": 8}),
        }
    )
    engine = await load_warm_engine(served)
    try:
        async with running_worker(queue, engine, served, name="tiny-worker"):
            await eventually(queue.presence.workers)
            summary = await cli.json("eval", "--concurrency", "8")
    finally:
        await engine.close()
    assert (summary["questions"], summary["answered"], summary["failed"]) == (37, 37, 0)
    assert summary["judged"] == 37 and len(judge.first_requests()) == 37
    name = f"{tiny_model_dir / 'base'} + {tiny_model_dir / 'lora'} (none, batching)"
    assert summary["deployment"] == name
    assert [row["model"] for row in summary["reference"]] == CARD_MODELS
    table = summary["table"]
    assert len(table) == 12
    assert sorted(row["model"] for row in table if not row["this"]) == sorted(CARD_MODELS)
    [ours] = [row for row in table if row["this"]]
    assert ours["model"] == name and ours["score"] == summary["score"] == sum(i["score"] for i in summary["items"])
    percentages = [row["percentage"] for row in table]
    assert percentages == sorted(percentages, reverse=True)  # placed by score


# -- a real OpenAI-compatible server as the judge -------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}### Response: {{ message['content'] }}\n\n"
    "{% else %}### instruction: {{ message['content'] }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Response: {% endif %}"
)


def serving_missing() -> str | None:
    """Why ``transformers serve`` cannot run here, or None."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing or not Path(sys.executable).with_name("transformers").exists():
        return f"`transformers serve` is not installed (transformers[serving] of the dev extra; missing: {missing})"
    return None


@pytest.mark.slow
@pytest.mark.timeout(300)  # starting the server alone can take a minute on a loaded 2-core machine
async def test_transformers_serve_as_the_judge(
    settings: Settings, queue: JobQueue, tiny_model_dir: Path, tmp_path: Path
) -> None:
    reason = serving_missing()
    if reason:
        pytest.skip(reason)
    from tests.openai_server import transformers_server

    # The tiny model as the judge: it needs a chat template for /v1/chat/completions; its replies are noise.
    model_dir = tmp_path / "judge-model"
    shutil.copytree(tiny_model_dir / "base", model_dir)
    (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    with transformers_server(model_dir, tmp_path) as server:
        cli = Cli(
            {**make_cli(settings).env, "KOMT_EVAL__JUDGE_URL": server.base_url, "KOMT_EVAL__JUDGE_MODEL": server.model}
        )
        engine = ScriptedEngine(scripted_answer, capacity=2, piece_chars=8, delay=0.005)
        async with running_worker(queue, engine, settings, name="eval-worker"):
            await eventually(queue.presence.workers)
            summary = await cli.json("eval", "--limit", "1")
        served_log = server.log.read_text(errors="replace")
    [item] = summary["items"]
    assert item["status"] in ("judged", "unjudged") and item["judge_reply"], item
    assert summary["judged"] + summary["unjudged"] == 1
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in served_log
