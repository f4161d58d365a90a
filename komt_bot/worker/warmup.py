"""Warming an engine up before it serves, so the first questions asked are not the slow ones.

A freshly loaded model is slow on its first steps (memory pools, kernel choices per shape, the batching manager's
first cache allocation): measured on the 2-core CPU bench, a worker warmed with one two-token answer made its first
burst of 16 questions at 217 tok/s with a TTFT p50 of 0.71 s, and every later burst at about 310 tok/s and 0.2 s.
Warming with a full batch of short answers to komt's own evaluation questions (prompts of real lengths, so prefill
runs in full ``max_batch_tokens`` chunks) brings the first burst to the later ones' speed, for about a second; a
full batch of one short prompt did not.
"""

from __future__ import annotations

import asyncio

from komt_bot.engine.base import CheckedEngine, Engine, GenerationRequest, SamplingParams
from komt_bot.eval.questions import load_questions
from komt_bot.prompt import render_turn

WARM_UP_TOKENS = 4
SHORT_QUESTION = "안녕하세요"  # when no evaluation question fits the prompt budget


def warm_up_width(engine: Engine) -> int:
    """How many answers to warm up with at once: a full batch in process, one for a remote server (already warm)."""
    return 1 if isinstance(engine, CheckedEngine) else max(1, engine.info.capacity)


def warm_up_prompts(engine: Engine, count: int, max_prompt_tokens: int) -> list[str]:
    """``count`` prompts of komt's evaluation questions in the model card's template, of those that fit."""
    prompts = [render_turn(question.instruction) for question in load_questions()]
    fitting = [p for p in prompts if engine.count_tokens(p) < max_prompt_tokens] or [render_turn(SHORT_QUESTION)]
    return [fitting[i % len(fitting)] for i in range(count)]


async def warm_up(
    engine: Engine, max_prompt_tokens: int, *, width: int | None = None, new_tokens: int = WARM_UP_TOKENS
) -> None:
    """Generate ``width`` short answers at once (default :func:`warm_up_width`) and throw them away."""
    sampling = SamplingParams(max_new_tokens=new_tokens)
    prompts = warm_up_prompts(engine, width or warm_up_width(engine), max_prompt_tokens)

    async def one(index: int, prompt: str) -> None:
        async for _update in engine.generate(GenerationRequest(f"warm-up-{index}", prompt, sampling)):
            pass

    await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
