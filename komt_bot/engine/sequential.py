"""One request at a time: the model card's way, streamed token by token.

A manual decode loop with a KV cache runs each model step on one dedicated thread (the model is never touched by two
threads at once), so the event loop stays free. Between tokens the request's channel is checked, so a cancelled or
dropped stream stops within one step. Requests that arrive while one is running wait their turn.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from komt_bot.engine.base import GenerationRequest, SamplingParams
from komt_bot.engine.common import EngineCore
from komt_bot.engine.loading import LoadedModel
from komt_bot.engine.stream import RequestChannel, RequestStream
from komt_bot.errors import EngineError, GenerationFailedError
from komt_bot.settings import GenerationSettings, ModelSettings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _DecodeState:
    """The torch-side state of the running request (touched only on the model thread)."""

    next_input: list[int]
    cache: Any = None
    generated: list[int] = field(default_factory=list)


class Sampler:
    """Picks the next token from logits with a request's temperature / top-k / top-p (temperature 0 = greedy)."""

    def __init__(self, sampling: SamplingParams, vocab_size: int) -> None:
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.greedy = sampling.temperature <= 0
        self._warpers = LogitsProcessorList()
        if not self.greedy:
            self._warpers.append(TemperatureLogitsWarper(float(sampling.temperature)))
            if 0 < sampling.top_k < vocab_size:
                self._warpers.append(TopKLogitsWarper(int(sampling.top_k)))
            if 0 < sampling.top_p < 1:
                self._warpers.append(TopPLogitsWarper(float(sampling.top_p)))

    def __call__(self, logits: Any) -> int:
        """The next token id for ``logits`` of shape ``[1, vocab]``."""
        import torch

        logits = logits.float()
        if self.greedy:
            return int(torch.argmax(logits, dim=-1).item())
        no_history = cast(torch.LongTensor, torch.empty((1, 0), dtype=torch.long, device=logits.device))
        scores = self._warpers(no_history, logits)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1).item())


def cache_argument_name(model: Any) -> str:
    """The KV-cache keyword of the model's forward: ``cache`` since transformers 5.2x, ``past_key_values`` before."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


class SequentialEngine(EngineCore):
    """Serves one request at a time (capacity 1)."""

    kind = "sequential"

    def __init__(self, loaded: LoadedModel, model: ModelSettings, generation: GenerationSettings) -> None:
        super().__init__(loaded, model, generation)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="komt-sequential")
        self._turn: asyncio.Lock | None = None
        self._turn_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._cache_kwarg = cache_argument_name(loaded.model)

    def generate(self, request: GenerationRequest) -> RequestStream:
        """Stream the answer to ``request``; see :class:`komt_bot.engine.base.GenerationStream`."""
        return RequestStream(RequestChannel(request), self._start)

    async def close(self) -> None:
        """Cancel waiting and running requests and stop the model thread."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def _start(self, channel: RequestChannel) -> None:
        if self._closed:
            channel.fail(GenerationFailedError("engine is closed"))
            return
        task = asyncio.get_running_loop().create_task(self._serve(channel), name=f"komt-seq-{channel.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._turn is None or self._turn_loop is not loop:
            self._turn, self._turn_loop = asyncio.Lock(), loop
        return self._turn

    async def _serve(self, channel: RequestChannel) -> None:
        try:
            async with self._lock():
                if not channel.done:
                    await self._run(channel)
        except asyncio.CancelledError:
            channel.fail(GenerationFailedError("engine is closing"))
            raise
        except EngineError as e:
            channel.fail(e)
        except Exception as e:
            log.exception("generation failed for %s", channel.request_id)
            channel.fail(GenerationFailedError(f"generation failed: {type(e).__name__}: {e}"))

    async def _run(self, channel: RequestChannel) -> None:
        request = channel.request
        prompt_ids = self.encode_prompt(request)
        channel.prompt_tokens = len(prompt_ids)
        decoder = self.new_decoder(request.sampling)
        sampler = Sampler(request.sampling, len(self.token_bytes))
        state = _DecodeState(next_input=prompt_ids)
        loop = asyncio.get_running_loop()
        while not channel.done:  # a cancel marks the channel done: stop between tokens
            token = await loop.run_in_executor(self._executor, self._step, state, sampler)
            self.record_batch(1)
            self._stats.generated_tokens += 1
            step = decoder.feed([token])
            channel.completion_tokens = decoder.completion_tokens
            if step.finish_reason is not None:
                channel.finish(step.text, step.finish_reason)
            else:
                channel.push_text(step.text)

    def _step(self, state: _DecodeState, sampler: Sampler) -> int:
        """One forward pass on the model thread: feed ``next_input``, sample, keep the KV cache."""
        import torch
        from transformers import DynamicCache

        model = self.loaded.model
        if state.cache is None:
            state.cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            input_ids = torch.tensor([state.next_input], dtype=torch.long, device=model.device)
            cache_kwarg = {self._cache_kwarg: state.cache}
            output = model(input_ids=input_ids, use_cache=True, **cache_kwarg)
            token = sampler(output.logits[:, -1, :])
        state.generated.append(token)
        state.next_input = [token]
        return token
