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
import logging

from komt_bot.engine.base import CheckedEngine, Engine, GenerationRequest, SamplingParams
from komt_bot.errors import EngineError
from komt_bot.eval.questions import load_questions
from komt_bot.prompt import render_turn

log = logging.getLogger(__name__)

WARM_UP_TOKENS = 4


def warm_up_width(engine: Engine) -> int:
    """How many answers to warm up with at once: a full batch in process, one for a remote server (already warm)."""
    return 1 if isinstance(engine, CheckedEngine) else max(1, engine.info.capacity)


def warm_up_prompts(engine: Engine, count: int, max_prompt_tokens: int) -> list[str]:
    """``count`` prompts of komt's evaluation questions in the model card's template, of those that fit (none when
    none fits)."""
    prompts = [render_turn(question.instruction) for question in load_questions()]
    fitting = [prompt for prompt in prompts if engine.count_tokens(prompt) < max_prompt_tokens]
    return [fitting[i % len(fitting)] for i in range(count)] if fitting else []


async def warm_up(
    engine: Engine, max_prompt_tokens: int, *, width: int | None = None, new_tokens: int = WARM_UP_TOKENS
) -> None:
    """Generate ``width`` short answers at once (default :func:`warm_up_width`) and throw them away.

    An answer that fails (an :class:`EngineError`) is logged, not raised: the worker serves anyway, and each job
    says what went wrong in its own thread.
    """
    sampling = SamplingParams(max_new_tokens=new_tokens)
    prompts = warm_up_prompts(engine, warm_up_width(engine) if width is None else width, max_prompt_tokens)
    if not prompts:
        log.warning("no warm-up question fits in %d prompt tokens: serving without a warm-up", max_prompt_tokens)
        return

    async def one(index: int, prompt: str) -> str | None:
        try:
            async for _update in engine.generate(GenerationRequest(f"warm-up-{index}", prompt, sampling)):
                pass
        except EngineError as e:
            return str(e)
        return None

    errors = [error for error in await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))) if error]
    if errors:
        log.warning("%d of %d warm-up answers failed: %s", len(errors), len(prompts), errors[0])
