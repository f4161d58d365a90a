"""The ``openai`` engine against a real OpenAI-compatible server (``transformers serve`` on the tiny model).

The whole path runs for real: a question through the queue to a real :class:`Worker`, the engine's HTTP stream to
the server, the answer back through Redis to a reader. Plus the failures a remote server brings: cancelled
mid-answer, killed mid-answer, not up yet, silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from komt_bot import messages
from komt_bot.cli.health import judge_workers
from komt_bot.cli.render import engine_cell
from komt_bot.engine import GenerationRequest, SamplingParams, load_engine
from komt_bot.engine.remote import OpenAIEngine
from komt_bot.engine.reply import TextReplyDecoder
from komt_bot.engine.tokencount import load_token_counter
from komt_bot.errors import EngineError
from komt_bot.jobs import Event, JobRequest, Origin, Turn
from komt_bot.prompt import clean_answer, render_turn
from komt_bot.queue import JobQueue
from komt_bot.queue.inspect import QueueAdmin
from komt_bot.settings import GenerationSettings, OpenAISettings, Settings
from tests.helpers import collect_events, eventually, running_worker, until_running
from tests.model_fixtures import collect, joined, stop_across_tokens
from tests.openai_server import ServerProcess, transformers_server
from tests.private_redis import free_port

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "한국의 수도는 어디인가요?"
PROMPT = render_turn(QUESTION)
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24, stop=())


def remote(settings: Settings, base_url: str, model_dir: Path, *, max_new_tokens: int = 24, **openai: Any) -> Settings:
    """``settings`` with the openai engine pointed at ``base_url``, greedy, no stop sequences."""
    base = str(model_dir / "base")
    return settings.model_copy(
        update={
            "model": settings.model.model_copy(
                update={"engine": "openai", "base": base, "adapter": None, "max_prompt_tokens": 256}
            ),
            "openai": OpenAISettings(base_url=base_url, model=base, **openai),
            "generation": GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens, stop=()),
        }
    )


def engine_for(settings: Settings) -> OpenAIEngine:
    engine = load_engine(settings.model, settings.generation, settings.openai)
    assert isinstance(engine, OpenAIEngine)
    return engine


def question(text: str = QUESTION) -> JobRequest:
    return JobRequest(conversation=[Turn(role="user", text=text)], origin=Origin(platform="test", channel="C1"))


def direct_stream(server: ServerProcess, prompt: str, max_tokens: int) -> str:
    """The server's own streamed text for ``prompt`` (greedy), read with a plain HTTP client."""
    payload = {"model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    pieces = []
    with httpx.stream("POST", f"{server.base_url}/completions", json=payload, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                for choice in json.loads(line[5:])["choices"]:
                    pieces.append(choice.get("text") or "")
    return "".join(pieces)


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[JobQueue]:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    yield q


@pytest.fixture
async def engine(settings: Settings, openai_server: ServerProcess, tiny_model_dir: Path) -> AsyncIterator[OpenAIEngine]:
    engine = engine_for(remote(settings, openai_server.base_url, tiny_model_dir))
    yield engine
    await engine.close()


class Reader:
    """Reads one job's events in the background, so a test can act while the answer streams."""

    def __init__(self, queue: JobQueue, job_id: str) -> None:
        self.events: list[Event] = []
        self.task = asyncio.create_task(self._read(queue, job_id))

    async def _read(self, queue: JobQueue, job_id: str) -> None:
        async for event in queue.events(job_id, block_seconds=0.2):
            if event is not None:
                self.events.append(event)

    async def streaming(self) -> bool:
        return any(e.type == "delta" for e in self.events)

    async def finished(self, timeout: float) -> list[Event]:
        async with asyncio.timeout(timeout):
            await self.task
        return self.events


# -- the whole path -------------------------------------------------------------------------------------------------


async def test_an_answer_streams_from_the_server_through_the_queue(
    queue: JobQueue, settings: Settings, engine: OpenAIEngine, openai_server: ServerProcess, tiny_model_dir: Path
) -> None:
    config = remote(settings, openai_server.base_url, tiny_model_dir)
    # The tiny server writes 24 tokens faster than the default 200 ms tick: publish often enough to see them stream.
    config = config.model_copy(update={"worker": config.worker.model_copy(update={"coalesce_ms": 5})})
    async with running_worker(queue, engine, config):
        sub = await queue.submit(question())
        events = await collect_events(queue, sub.job_id, timeout=40)
    deltas = [e.text for e in events if e.type == "delta"]
    assert events[0].type == "start" and len(deltas) >= 3  # streamed, not in one piece
    assert (events[-1].type, events[-1].finish_reason) == ("done", "length")
    expected = clean_answer(direct_stream(openai_server, PROMPT, 24).replace("\ufffd", ""))
    assert "".join(deltas) == expected
    prompt_tokens = engine.counter.count(PROMPT, with_special=True)
    assert events[-1].usage == {"prompt_tokens": prompt_tokens, "completion_tokens": 24}  # the server's usage
    assert engine.open_streams == 0


class StatusLog(httpx.AsyncHTTPTransport):
    """A real HTTP transport that notes the status of every response."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


async def test_a_field_the_server_refuses_is_sent_once_then_left_out(
    settings: Settings, openai_server: ServerProcess, tiny_model_dir: Path
) -> None:
    """transformers serve answers 422 to top_k: the first request is sent again without it, and later ones never
    carry it; every answer still comes."""
    config = remote(settings, openai_server.base_url, tiny_model_dir)
    log = StatusLog()
    counter = load_token_counter(config.model.base)
    engine = OpenAIEngine(config.openai, config.model, counter, transport=log)
    sampling = SamplingParams(temperature=0.0, top_k=40, max_new_tokens=4, stop=())
    try:
        answers = [await collect(engine.generate(GenerationRequest(f"k{i}", PROMPT, sampling))) for i in range(2)]
    finally:
        await engine.close()
    assert [updates[-1].finish_reason for updates in answers] == ["length", "length"]
    assert log.statuses == [422, 200, 200]


async def test_a_stop_sequence_is_cut_here_even_where_the_server_leaves_it_in(engine: OpenAIEngine) -> None:
    reference = await collect(engine.generate(GenerationRequest("ref", PROMPT, GREEDY)))
    stop, before = stop_across_tokens(reference)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=24, stop=(stop,))
    updates = await collect(engine.generate(GenerationRequest("stop", PROMPT, sampling)))
    assert joined(updates) == before
    assert updates[-1].finished and updates[-1].finish_reason == "stop"
    assert 0 < updates[-1].completion_tokens < 24
    assert engine.open_streams == 0


async def test_cancel_mid_answer_ends_it_cancelled_and_closes_the_stream(
    queue: JobQueue, settings: Settings, openai_server: ServerProcess, tiny_model_dir: Path
) -> None:
    config = remote(settings, openai_server.base_url, tiny_model_dir, max_new_tokens=200)
    engine = engine_for(config)
    try:
        async with running_worker(queue, engine, config):
            sub = await queue.submit(question())
            reader = Reader(queue, sub.job_id)
            await eventually(reader.streaming, timeout=30)
            assert engine.open_streams == 1
            assert await queue.cancel(sub.job_id) == "running"
            events = await reader.finished(timeout=10)
            await eventually(lambda: _none_open(engine), timeout=5)
    finally:
        await engine.close()
    assert (events[-1].type, events[-1].finish_reason) == ("done", "cancelled")
    assert 0 < (events[-1].usage or {}).get("completion_tokens", 0) < 200


async def _none_open(engine: OpenAIEngine) -> bool:
    return engine.open_streams == 0


# -- a server that goes away, is not there, or says nothing ---------------------------------------------------------


async def test_a_server_killed_mid_answer_fails_the_job_and_the_reader_hears_it(
    queue: JobQueue, settings: Settings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with transformers_server(tiny_model_dir / "base", tmp_path) as server:
        config = remote(settings, server.base_url, tiny_model_dir, max_new_tokens=200, unavailable_seconds=0.5)
        engine = engine_for(config)
        try:
            async with running_worker(queue, engine, config):
                sub = await queue.submit(question())
                reader = Reader(queue, sub.job_id)
                await eventually(reader.streaming, timeout=30)
                server.kill()
                killed = time.monotonic()
                events = await reader.finished(timeout=30)
                took = time.monotonic() - killed
                verdict = await eventually(lambda: _model_server_down(queue), timeout=10)
        finally:
            await engine.close()
    # Cut off mid-answer: retried; the retry found no server for the half second it waits, and ended the job.
    assert [e.attempt for e in events if e.type == "start"] == [1, 2]
    assert (events[-1].type, events[-1].code) == ("error", "engine_unavailable")
    assert (events[-1].message or "").endswith("; waited 0.5 s for it") and took < 20
    assert "model server does not answer" in verdict


async def _model_server_down(queue: JobQueue) -> str:
    """The health verdict once the worker's record says its model server does not answer ("" before)."""
    workers = await QueueAdmin(queue).workers()
    if not workers or workers[0].record.engine_ok is not False:
        return ""
    assert workers[0].record.endpoint and f"{workers[0].record.endpoint} DOWN" in engine_cell(workers[0])
    verdict = judge_workers(workers, None)
    assert not verdict.ok
    return verdict.reason


async def test_a_server_that_stays_down_fails_the_job_clearly_after_its_wait(
    queue: JobQueue, settings: Settings, tiny_model_dir: Path
) -> None:
    config = remote(settings, f"http://127.0.0.1:{free_port()}/v1", tiny_model_dir, unavailable_seconds=1.0)
    engine = engine_for(config)
    started = time.monotonic()
    try:
        async with running_worker(queue, engine, config):
            sub = await queue.submit(question())
            events = await collect_events(queue, sub.job_id, timeout=20)
            verdict = await eventually(lambda: _model_server_down(queue), timeout=10)
    finally:
        await engine.close()
    assert [e.attempt for e in events if e.type == "start"] == [1]  # no attempts spent on a server that is away
    assert (events[-1].type, events[-1].code) == ("error", "engine_unavailable")
    message = events[-1].message or ""
    assert "is unreachable" in message and message.endswith("; waited 1 s for it")
    assert messages.failed(events[-1].code, events[-1].message) == messages.ENGINE_UNAVAILABLE
    assert "is unreachable" in verdict
    assert time.monotonic() - started < 20


async def test_a_question_waiting_for_its_server_can_be_stopped(
    queue: JobQueue, settings: Settings, tiny_model_dir: Path
) -> None:
    config = remote(settings, f"http://127.0.0.1:{free_port()}/v1", tiny_model_dir, unavailable_seconds=90.0)
    engine = engine_for(config)
    try:
        async with running_worker(queue, engine, config):
            sub = await queue.submit(question())

            await until_running(queue, sub.job_id)
            assert await queue.cancel(sub.job_id) == "running"
            events = await collect_events(queue, sub.job_id, timeout=20)  # well before the 90 s wait is over
    finally:
        await engine.close()
    assert (events[-1].type, events[-1].finish_reason) == ("done", "cancelled")
    assert (await queue.job(sub.job_id)).state == "cancelled"


@pytest.mark.slow
async def test_a_question_asked_while_the_server_restarts_is_answered_once_it_is_back(
    queue: JobQueue, settings: Settings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """vLLM reloads its model for a minute or two after a restart: a question asked meanwhile waits for it."""
    port = free_port()
    config = remote(settings, f"http://127.0.0.1:{port}/v1", tiny_model_dir, unavailable_seconds=90.0)
    engine = engine_for(config)
    try:
        async with running_worker(queue, engine, config), contextlib.AsyncExitStack() as stack:
            sub = await queue.submit(question())

            await until_running(queue, sub.job_id)
            server = transformers_server(tiny_model_dir / "base", tmp_path, port)
            await asyncio.to_thread(stack.enter_context, server)  # the worker keeps running while it starts
            events = await collect_events(queue, sub.job_id, timeout=60)
    finally:
        await engine.close()
    assert [e.attempt for e in events if e.type == "start"] == [1]
    assert (events[-1].type, events[-1].finish_reason) == ("done", "length")
    assert "".join(e.text for e in events if e.type == "delta")


async def test_a_silent_server_times_out_with_a_readable_error(settings: Settings, tiny_model_dir: Path) -> None:
    """A server that accepts and reads but never answers: the read timeout ends the request; the request it got
    carried the raw prompt, the sampling fields, the stops and the API key."""
    received: list[bytes] = []
    done = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        await done.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/"
    config = remote(settings, url, tiny_model_dir, read_timeout_seconds=0.5, api_key="sekret-key")
    engine = engine_for(config)
    sampling = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, max_new_tokens=5, stop=("###",))
    started = time.monotonic()
    try:
        with pytest.raises(EngineError, match=r"sent nothing for 0.5 s") as failure:
            await collect(engine.generate(GenerationRequest("quiet", PROMPT, sampling)))
    finally:
        await engine.close()
        done.set()
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < 5
    assert "sekret-key" not in str(failure.value) and engine.open_streams == 0
    head, _, body = received[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/completions ") and b"authorization: bearer sekret-key" in head.lower()
    payload = json.loads(body)
    assert payload["prompt"] == PROMPT and payload["stream"] is True
    assert (payload["temperature"], payload["top_p"], payload["top_k"]) == (0.7, 0.9, 40)
    assert (payload["max_tokens"], payload["stop"], payload["model"]) == (5, ["###"], str(tiny_model_dir / "base"))


# -- the pieces -----------------------------------------------------------------------------------------------------


def test_the_text_decoder_holds_back_a_possible_stop_and_drops_replacement_characters() -> None:
    decoder = TextReplyDecoder(["###"])
    assert [decoder.feed(t).text for t in ("안녕\ufffd하세요 #", "#")] == ["안녕하세요 ", ""]
    step = decoder.feed("#끝")
    assert (step.text, step.finish_reason) == ("", "stop")
    held = TextReplyDecoder(["###"])
    held.feed("네 ##")
    assert held.finish("stop").text == "##"  # the server ended (EOS): the held text was an answer after all
    matched = TextReplyDecoder(["###"])
    matched.feed("네 ##")
    assert matched.finish("stop", stopped_by_server=True).text == ""  # the server matched the stop itself


def test_prompt_tokens_are_counted_from_tokenizer_json_without_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    counter = load_token_counter(str(tiny_model_dir / "base"))
    reference = AutoTokenizer.from_pretrained(str(tiny_model_dir / "base"))
    for text in (PROMPT, "hello 힣 world", ""):
        assert counter.count(text) == len(reference(text, add_special_tokens=False)["input_ids"])
        assert counter.count(text, with_special=True) == len(reference(text)["input_ids"])
    probe = (
        "import sys\nfrom komt_bot.engine import load_engine\nfrom komt_bot.settings import ModelSettings, "
        "GenerationSettings\n"
        f"engine = load_engine(ModelSettings(engine='openai', base={str(tiny_model_dir / 'base')!r}), "
        "GenerationSettings())\n"
        "assert engine.count_tokens('안녕하세요') > 0\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\nassert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    with pytest.raises(EngineError, match=r"no tokenizer\.json in"):
        load_token_counter(str(tmp_path))
