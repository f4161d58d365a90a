"""The continuous-batching engine on the tiny real model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from transformers import LlamaConfig

from komt_bot.engine import GenerationRequest, SamplingParams, load_engine
from komt_bot.engine.batching import BatchingEngine
from komt_bot.engine.loading import LoadedModel, load_model
from komt_bot.engine.policy import kv_block_bytes, kv_cache_blocks
from komt_bot.errors import EnginePromptTooLongError, GenerationFailedError
from komt_bot.settings import GenerationSettings, ModelSettings
from komt_bot.worker.warmup import warm_up, warm_up_width
from tests.model_fixtures import collect, greedy_reference, joined, stop_across_tokens

PROMPTS = [
    "### instruction: 한국의 수도는 어디인가요?\n\n### Response: ",
    "### instruction: 김치를 만드는 방법을 알려 주세요.\n\n### Response: ",
    "### instruction: How do I learn to program?\n\n### Response: ",
    "### instruction: 뷁 똠 햏\n\n### Response: ",
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24, stop=())


def settings_for(model_dir: Path, **overrides: Any) -> ModelSettings:
    values: dict[str, Any] = {
        "base": str(model_dir / "base"),
        "adapter": str(model_dir / "lora"),
        "quantization": "none",
        "engine": "batching",
        "max_batch_size": 4,
        "max_prompt_tokens": 128,
    }
    return ModelSettings(**(values | overrides))


GENERATION = GenerationSettings(max_new_tokens=64)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(settings_for(tiny_model_dir))


@pytest.fixture
async def engine(loaded: LoadedModel, tiny_model_dir: Path) -> AsyncIterator[BatchingEngine]:
    engine = BatchingEngine(loaded, settings_for(tiny_model_dir), GENERATION)
    yield engine
    await engine.close()


def request(index: int, sampling: SamplingParams = GREEDY, prefix: str = "r") -> GenerationRequest:
    return GenerationRequest(f"{prefix}{index}", PROMPTS[index % len(PROMPTS)], sampling)


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_kv_cache_is_sized_from_the_settings() -> None:
    model = ModelSettings(max_batch_size=16, max_prompt_tokens=1536)
    assert kv_cache_blocks(model, GenerationSettings(max_new_tokens=512), page_size=256) == 128
    assert kv_cache_blocks(model.model_copy(update={"kv_cache_blocks": 7}), GenerationSettings(), 256) == 7


def test_an_unconfigured_kv_cache_fits_in_the_free_gpu_memory() -> None:
    model = ModelSettings(max_batch_size=32, max_prompt_tokens=1536)
    generation = GenerationSettings(max_new_tokens=128)
    config = LlamaConfig(hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40)
    block = kv_block_bytes(config, 256, element_size=2)
    assert block == 2 * 40 * 5120 * 256 * 2  # 13B: ~210 MB a page of 256 tokens in bf16
    worst = kv_cache_blocks(model, generation, 256)
    assert worst == 208  # 32 x (1536 + 128) tokens
    fitted = kv_cache_blocks(model, generation, 256, bytes_per_block=block, free_bytes=16 * 10**9)
    assert fitted * block <= 0.8 * 16 * 10**9 < (fitted + 1) * block
    assert kv_cache_blocks(model, generation, 256, bytes_per_block=block, free_bytes=10**12) == worst


async def test_factory_builds_a_batching_engine_that_streams_a_whole_answer(tiny_model_dir: Path) -> None:
    engine = load_engine(settings_for(tiny_model_dir), GENERATION)
    try:
        assert isinstance(engine, BatchingEngine)
        assert (engine.info.kind, engine.info.capacity, engine.info.quantization) == ("batching", 4, "none")
        updates = await collect(engine.generate(request(0)))
        assert len(updates) > 5
        assert updates[-1].finish_reason == "length"
        assert updates[-1].completion_tokens == GREEDY.max_new_tokens
        assert not any(u.finished for u in updates[:-1])
    finally:
        await engine.close()


async def test_greedy_answers_match_the_model_cards_generate_and_share_batches(
    engine: BatchingEngine, loaded: LoadedModel
) -> None:
    results = await asyncio.gather(*(collect(engine.generate(request(i))) for i in range(4)))
    for index, updates in enumerate(results):
        assert joined(updates) == greedy_reference(loaded, PROMPTS[index], GREEDY.max_new_tokens)
        assert updates[-1].finish_reason == "length"
    assert max(engine.stats.batch_sizes) > 1
    assert engine.stats.generated_tokens == 4 * GREEDY.max_new_tokens
    assert engine.in_flight == 0


async def test_the_warm_up_runs_a_full_batch_and_leaves_the_engine_empty(engine: BatchingEngine) -> None:
    """A worker warms up with as many short answers as it will batch, so its first burst is not the slow one."""
    assert warm_up_width(engine) == engine.capacity == 4
    await warm_up(engine, engine.model_settings.max_prompt_tokens)
    assert max(engine.stats.batch_sizes) == 4
    assert engine.stats.generated_tokens > 0
    assert engine.in_flight == 0


async def test_per_request_sampling_inside_one_batch(engine: BatchingEngine) -> None:
    alone = joined(await collect(engine.generate(request(0, prefix="alone"))))
    hot = SamplingParams(temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=24, stop=())
    engine.stats.batch_sizes.clear()
    greedy, sampled = await asyncio.gather(
        collect(engine.generate(request(0, prefix="greedy"))), collect(engine.generate(request(0, hot, "hot")))
    )
    assert joined(greedy) == alone
    assert joined(sampled) != alone
    assert max(engine.stats.batch_sizes) == 2


async def test_stop_sequence_split_across_tokens(engine: BatchingEngine) -> None:
    reference = await collect(engine.generate(request(1, prefix="ref")))
    stop, before = stop_across_tokens(reference)
    updates = await collect(engine.generate(request(1, SamplingParams(0.0, max_new_tokens=24, stop=(stop,)))))
    assert joined(updates) == before
    assert updates[-1].finish_reason == "stop"
    assert engine.in_flight == 0


async def test_closing_a_stream_cancels_it_and_frees_its_slot(engine: BatchingEngine) -> None:
    long = SamplingParams(temperature=1.0, max_new_tokens=5000, stop=())
    stream = engine.generate(request(0, long, "long"))
    others = asyncio.gather(*(collect(engine.generate(request(i))) for i in range(1, 3)))
    async for update in stream:
        if update.completion_tokens >= 3:
            break
    await stream.aclose()
    assert [update async for update in stream] == []  # a closed stream ends at once
    manager = engine.manager
    assert "long0" not in manager.output_router.result_handlers
    await wait_for(lambda: "long0" not in manager.batch_processor.scheduler.active_requests)
    assert [r[-1].finish_reason for r in await others] == ["length", "length"]
    assert engine.in_flight == 0
    assert engine.stats.generated_tokens < 1000


async def test_closing_mid_iteration_ends_the_stream_and_frees_its_slot(engine: BatchingEngine) -> None:
    stream = engine.generate(request(2, SamplingParams(max_new_tokens=5000, stop=()), "c"))
    updates = []
    async for update in stream:
        updates.append(update)
        if len(updates) == 2:
            await stream.aclose()
    assert len(updates) == 2 and not any(u.finished for u in updates)
    assert engine.in_flight == 0


async def test_a_dead_generation_thread_is_replaced_without_losing_requests(
    engine: BatchingEngine, loaded: LoadedModel
) -> None:
    references = [joined(await collect(engine.generate(request(i, prefix="ref")))) for i in range(3)]
    calls = 0

    def fail_once(_module: Any, _args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 8:  # a few tokens into the answers
            raise RuntimeError("injected fault in the forward pass")

    hook = loaded.model.get_base_model().register_forward_pre_hook(fail_once)
    try:
        results = await asyncio.gather(*(collect(engine.generate(request(i))) for i in range(3)))
    finally:
        hook.remove()
    assert engine.stats.restarts == 1
    assert [joined(updates) for updates in results] == references
    assert [updates[-1].finish_reason for updates in results] == ["length"] * 3


async def test_a_generation_thread_stopped_underneath_is_replaced(engine: BatchingEngine) -> None:
    sampling = SamplingParams(temperature=0.8, max_new_tokens=40, stop=())
    streams = [engine.generate(request(i, sampling)) for i in range(3)]
    tasks = [asyncio.ensure_future(collect(stream)) for stream in streams]
    await wait_for(lambda: engine.stats.generated_tokens >= 6)
    engine.manager.stop(block=False, hard_stop=True)
    results = await asyncio.gather(*tasks)
    assert engine.stats.restarts >= 1
    # Every request still ends normally (no request raised): at its length limit, or earlier where sampling picked EOS.
    endings = [u[-1].finish_reason for u in results]
    assert all(reason in ("length", "stop") for reason in endings), endings
    assert all(u[-1].completion_tokens == 40 for u in results if u[-1].finish_reason == "length")
    assert engine.manager.is_running()


async def test_closing_the_engine_ends_requests_in_flight(engine: BatchingEngine) -> None:
    stream = engine.generate(request(0, SamplingParams(max_new_tokens=5000, stop=())))
    first = await stream.__anext__()
    assert not first.finished
    await engine.close()
    with pytest.raises(GenerationFailedError, match="engine is closing"):
        await collect(stream)
    with pytest.raises(GenerationFailedError) as after:
        await collect(engine.generate(request(1)))
    assert str(after.value) == "engine is closed"


def test_one_engine_serves_successive_event_loops(loaded: LoadedModel, tiny_model_dir: Path) -> None:
    engine = BatchingEngine(loaded, settings_for(tiny_model_dir), GENERATION)
    first = asyncio.run(collect(engine.generate(request(0))))
    second = asyncio.run(collect(engine.generate(request(0))))
    asyncio.run(engine.close())
    assert joined(first) == joined(second)
    assert engine.stats.restarts == 0


async def test_a_too_long_prompt_raises_a_typed_error_and_takes_no_slot(engine: BatchingEngine) -> None:
    with pytest.raises(EnginePromptTooLongError, match="the limit is 128"):
        await collect(engine.generate(GenerationRequest("big", "안녕하세요 " * 200, GREEDY)))
    assert engine.in_flight == 0
