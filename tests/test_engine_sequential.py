"""The sequential engine (one request at a time) on the tiny real model, alone and behind a worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from komt_bot.engine import GenerationRequest, GenerationStream, SamplingParams
from komt_bot.engine.loading import LoadedModel, load_model
from komt_bot.engine.sequential import SequentialEngine
from komt_bot.errors import EnginePromptTooLongError
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.prompt import render_turn
from komt_bot.queue import JobQueue
from komt_bot.settings import GenerationSettings, ModelSettings, Settings
from tests.helpers import collect_events, running_worker
from tests.model_fixtures import collect, greedy_reference, joined, stop_across_tokens

PROMPT = "### instruction: 한국의 수도는 어디인가요?\n\n### Response: "
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24, stop=())


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(settings_for(tiny_model_dir))


def settings_for(model_dir: Path) -> ModelSettings:
    return ModelSettings(
        base=str(model_dir / "base"),
        adapter=str(model_dir / "lora"),
        quantization="none",
        engine="sequential",
        max_prompt_tokens=128,
    )


@pytest.fixture
async def engine(loaded: LoadedModel, tiny_model_dir: Path) -> AsyncIterator[SequentialEngine]:
    engine = SequentialEngine(loaded, settings_for(tiny_model_dir), GenerationSettings())
    yield engine
    await engine.close()


async def test_streams_the_same_answer_as_the_model_cards_generate(
    engine: SequentialEngine, loaded: LoadedModel
) -> None:
    updates = await collect(engine.generate(GenerationRequest("a", PROMPT, GREEDY)))
    assert joined(updates) == greedy_reference(loaded, PROMPT, GREEDY.max_new_tokens)
    assert len(updates) > 5  # streamed, not in one piece
    last = updates[-1]
    assert (last.finished, last.finish_reason, last.completion_tokens) == (True, "length", 24)
    assert last.prompt_tokens == engine.count_tokens(PROMPT) + 1  # + BOS
    assert not any(update.finished for update in updates[:-1])
    assert engine.info.capacity == 1 and engine.info.kind == "sequential"


async def test_stop_sequence_split_across_tokens(engine: SequentialEngine) -> None:
    reference = await collect(engine.generate(GenerationRequest("ref", PROMPT, GREEDY)))
    stop, before = stop_across_tokens(reference)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=24, stop=(stop,))
    updates = await collect(engine.generate(GenerationRequest("stop", PROMPT, sampling)))
    assert joined(updates) == before
    assert updates[-1].finish_reason == "stop"


async def test_requests_take_turns(engine: SequentialEngine) -> None:
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8, stop=())
    results = await asyncio.gather(
        *(collect(engine.generate(GenerationRequest(f"r{i}", PROMPT, sampling))) for i in range(3))
    )
    assert [r[-1].completion_tokens for r in results] == [8, 8, 8]
    assert set(engine.stats.batch_sizes) == {1}
    assert engine.stats.generated_tokens == 24


async def test_closing_the_stream_cancels_between_tokens_and_frees_the_slot(engine: SequentialEngine) -> None:
    stream = engine.generate(GenerationRequest("long", PROMPT, SamplingParams(max_new_tokens=500, stop=())))
    assert isinstance(stream, GenerationStream)
    async for update in stream:
        if update.completion_tokens >= 3:
            break
    await stream.aclose()
    assert [update async for update in stream] == []  # a closed stream ends at once
    after = await collect(engine.generate(GenerationRequest("next", PROMPT, GREEDY)))
    assert after[-1].finish_reason == "length"
    assert 3 <= engine.stats.generated_tokens - GREEDY.max_new_tokens < 500


async def test_closing_mid_iteration_ends_the_stream_after_one_update(engine: SequentialEngine) -> None:
    stream = engine.generate(GenerationRequest("c", PROMPT, SamplingParams(max_new_tokens=500, stop=())))
    updates = []
    async for update in stream:
        updates.append(update)
        if len(updates) == 2:
            await stream.aclose()
    assert len(updates) == 2 and not any(u.finished for u in updates)
    assert engine.stats.generated_tokens < 500


async def test_leaving_the_loop_early_cancels(engine: SequentialEngine) -> None:
    async for _update in engine.generate(GenerationRequest("gone", PROMPT, SamplingParams(max_new_tokens=500))):
        break
    after = await collect(engine.generate(GenerationRequest("next", PROMPT, GREEDY)))
    assert after[-1].finish_reason == "length"
    assert engine.stats.generated_tokens < 500


async def test_too_long_prompt_raises_a_typed_error(engine: SequentialEngine) -> None:
    with pytest.raises(EnginePromptTooLongError, match="the limit is 128") as too_long:
        await collect(engine.generate(GenerationRequest("big", "안녕하세요 " * 200, GREEDY)))
    assert too_long.value.limit == 128 and too_long.value.tokens > 128


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> AsyncIterator[JobQueue]:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    yield q


async def test_a_prompt_only_the_engine_finds_too_long_ends_the_job_once(
    loaded: LoadedModel, tiny_model_dir: Path, queue: JobQueue, settings: Settings
) -> None:
    """The prompt builder counts without the BOS token the engine adds: with no safety margin, a question that just
    fits the builder's budget is one token over the engine's. The engine's typed error ends the job at once as
    prompt_too_long, like a prompt the builder refuses: one start, no retry."""
    question = "한국의 수도는 어디인가요?"
    limit = len(loaded.tokenizer(render_turn(question), add_special_tokens=False)["input_ids"])
    model = settings_for(tiny_model_dir).model_copy(update={"max_prompt_tokens": limit})
    config = settings.model_copy(update={"model": model})
    tight = SequentialEngine(loaded, model, GenerationSettings())
    try:
        async with running_worker(queue, tight, config) as worker:
            worker.runner.prompt_margin_tokens = 0
            sub = await queue.submit(
                JobRequest(conversation=[Turn(role="user", text=question)], origin=Origin(platform="test", channel="C"))
            )
            events = await collect_events(queue, sub.job_id)
    finally:
        await tight.close()
    assert [e.type for e in events] == ["start", "error"]
    assert events[-1].code == "prompt_too_long"
    assert events[-1].message == f"prompt is {limit + 1} tokens, the limit is {limit}"  # the engine said so
    assert (await queue.job(sub.job_id)).state == "failed"
    assert tight.stats.generated_tokens == 0
