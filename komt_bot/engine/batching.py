"""Continuous batching with transformers' own manager: every in-flight request advances in the same model step.

Per request: its prompt goes to ``manager.add_request(..., streaming=True)`` with its own sampling values, and the
manager's cumulative ``generated_tokens`` updates come back on the engine's event loop, where the request's
:class:`ReplyDecoder` turns the new tokens into text and applies stop sequences.

Sharp edges of the manager this module handles (measured on transformers 5.24):

- per-request temperature / top-p / top-k need ``per_request_processors=True`` *and* manager defaults that create
  those processors (temperature != 1, top_p < 1, top_k > 0); sampling is manager-wide, so temperature 0 is sent as
  ``top_k=1`` (argmax);
- ``cancel_request`` sends no final update and leaves the result handler registered: both are cleaned up here;
- on CPU the default KV cache takes 60% of RAM: it is sized from the settings instead;
- when the generation thread dies (an exception in a step, a hard stop, a closed event loop) every in-flight request
  is resubmitted to a fresh manager with the tokens it already has appended to its prompt, so nobody loses their
  answer; ``stats.restarts`` counts it. A request that keeps failing raises :class:`GenerationFailedError`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from komt_bot.engine.base import GenerationRequest
from komt_bot.engine.common import EngineCore
from komt_bot.engine.loading import LoadedModel
from komt_bot.engine.policy import (
    CPU_PAGE_SIZE,
    CUDA_PAGE_SIZE,
    kv_block_bytes,
    kv_cache_blocks,
    manager_generation_config,
    request_sampling_kwargs,
    step_tokens,
)
from komt_bot.engine.reply import ReplyDecoder
from komt_bot.engine.stream import RequestChannel, RequestStream
from komt_bot.errors import EngineError, GenerationFailedError
from komt_bot.settings import GenerationSettings, ModelSettings

log = logging.getLogger(__name__)

WATCHDOG_SECONDS = 0.1
MAX_RESUBMITS = 2
STOP_TIMEOUT_SECONDS = 30.0


@dataclass(slots=True)
class _InFlight:
    """A request the engine is generating: its channel, decoder and every token generated so far."""

    channel: RequestChannel
    decoder: ReplyDecoder
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    epoch: int = -1  # which manager it was submitted to; -1 = waiting for one
    offset: int = 0  # len(tokens) when it was submitted to that manager
    resubmits: int = 0

    @property
    def request_id(self) -> str:
        return self.channel.request_id


@dataclass(slots=True)
class _BatchCounter:
    """Groups the outputs the manager delivers for one model step, to record real batch sizes."""

    seen: set[str] = field(default_factory=set)
    flush_scheduled: bool = False


class BatchingEngine(EngineCore):
    """Decodes up to ``max_batch_size`` requests together with transformers' continuous batching manager."""

    kind = "batching"

    def __init__(self, loaded: LoadedModel, model: ModelSettings, generation: GenerationSettings) -> None:
        super().__init__(loaded, model, generation)
        self._vocab_size = int(loaded.model.config.vocab_size)
        self._manager: Any = None
        self._kv_blocks: int | None = None  # decided with the first manager; a restarted one gets the same
        self._epoch = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: dict[str, _InFlight] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._restarting = False
        self._closed = False
        self._batch = _BatchCounter()

    # ------------------------------------------------------------------ the Engine interface

    @property
    def capacity(self) -> int:
        """``max_batch_size`` requests at once."""
        return self.model_settings.max_batch_size

    @property
    def manager(self) -> Any:
        """The current transformers ``ContinuousBatchingManager`` (``None`` before the first request); diagnostics."""
        return self._manager

    @property
    def in_flight(self) -> int:
        """Requests being generated now."""
        return len(self._in_flight)

    def generate(self, request: GenerationRequest) -> RequestStream:
        """Stream the answer to ``request``; see :class:`komt_bot.engine.base.GenerationStream`."""
        return RequestStream(RequestChannel(request), self._start)

    async def close(self) -> None:
        """Fail every in-flight request (:class:`GenerationFailedError`) and stop the generation thread."""
        self._closed = True
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.get_loop() is asyncio.get_running_loop():
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        for item in list(self._in_flight.values()):
            self._forget(item, still_running=True)
            item.channel.fail(GenerationFailedError("engine is closing"))
        manager, self._manager = self._manager, None
        if manager is not None:
            await asyncio.to_thread(_stop_manager, manager)

    # ------------------------------------------------------------------ submitting

    def _start(self, channel: RequestChannel) -> None:
        try:
            self._bind_loop()
            if channel.request_id in self._in_flight:
                raise GenerationFailedError(f"request {channel.request_id!r} is already running")
            prompt_ids = self.encode_prompt(channel.request)
        except EngineError as e:
            channel.fail(e)
            return
        channel.prompt_tokens = len(prompt_ids)
        item = _InFlight(channel, self.new_decoder(channel.request.sampling), prompt_ids)
        channel.on_cancel = self._on_cancel
        self._in_flight[channel.request_id] = item
        self._ensure_watchdog()
        if not self._restarting:
            self._submit_or_fail(item)

    def _bind_loop(self) -> None:
        if self._closed:
            raise GenerationFailedError("engine is closed")
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed() and self._in_flight:
            raise GenerationFailedError("the engine is serving requests on another event loop")
        # A new loop (e.g. successive asyncio.run calls): tasks, callbacks and readers of the old one are gone.
        for abandoned in list(self._in_flight.values()):
            self._forget(abandoned, still_running=True)
        self._loop, self._watchdog, self._batch = loop, None, _BatchCounter()

    def _submit_or_fail(self, item: _InFlight) -> None:
        try:
            self._submit(item)
        except Exception as e:
            log.exception("could not submit request %s", item.request_id)
            self._in_flight.pop(item.request_id, None)
            item.channel.fail(GenerationFailedError(f"could not start generating: {type(e).__name__}: {e}"))

    def _submit(self, item: _InFlight) -> None:
        manager = self._ensure_manager()
        sampling = item.channel.request.sampling
        remaining = max(1, sampling.max_new_tokens - len(item.tokens))
        item.epoch, item.offset = self._epoch, len(item.tokens)
        manager.register_result_handler(item.request_id, partial(self._on_output, self._epoch))
        accepted = manager.add_request(
            item.prompt_ids + item.tokens,
            request_id=item.request_id,
            max_new_tokens=remaining,
            streaming=True,
            **request_sampling_kwargs(sampling, self._vocab_size),
        )
        if accepted is None:  # the manager is stopping: the watchdog restarts it and resubmits
            item.epoch = -1

    def _ensure_manager(self) -> Any:
        if self._manager is None:
            self._manager = self._new_manager()
            self._epoch += 1
        return self._manager

    def _cache_blocks(self, page_size: int) -> int:
        """KV pages for the managers; on CUDA no more than the memory free at the first one allows.

        Measured once: when a dead manager is replaced, its cache may not be freed yet, and the new one must not
        come out smaller for it.
        """
        if self._kv_blocks is None:
            self._kv_blocks = self._measure_cache_blocks(page_size)
        return self._kv_blocks

    def _measure_cache_blocks(self, page_size: int) -> int:
        import torch

        settings, generation = self.model_settings, self.generation
        loaded = self.loaded
        if loaded.plan.device != "cuda" or settings.kv_cache_blocks is not None:
            return kv_cache_blocks(settings, generation, page_size)
        free_bytes, _total = torch.cuda.mem_get_info()
        element = torch.tensor([], dtype=getattr(torch, loaded.plan.dtype)).element_size()
        block = kv_block_bytes(loaded.model.config, page_size, element)
        blocks = kv_cache_blocks(settings, generation, page_size, bytes_per_block=block, free_bytes=free_bytes)
        log.info(
            "KV cache: %d pages of %d tokens (%.1f GB; %.1f GB free)",
            blocks,
            page_size,
            blocks * block / 1e9,
            free_bytes / 1e9,
        )
        return blocks

    def _new_manager(self) -> Any:
        from transformers import ContinuousBatchingConfig

        settings, generation = self.model_settings, self.generation
        page_size = CUDA_PAGE_SIZE if self.loaded.plan.device == "cuda" else CPU_PAGE_SIZE
        config = ContinuousBatchingConfig(
            page_size=page_size,
            num_blocks=self._cache_blocks(page_size),
            max_batch_tokens=step_tokens(settings, self.loaded.plan.device),
            max_requests_per_batch=settings.max_batch_size,
            per_request_processors=True,
        )
        manager = self.loaded.model.init_continuous_batching(
            generation_config=manager_generation_config(generation, self.eos_ids, self._vocab_size),
            continuous_batching_config=config,
        )
        manager.start()
        return manager

    # ------------------------------------------------------------------ results (on the event loop)

    def _on_output(self, epoch: int, output: Any) -> None:
        item = self._in_flight.get(output.request_id)
        if item is None or item.epoch != epoch:
            return  # a late update for a cancelled request, or from a manager that was replaced
        self._count_batch(output.request_id)
        if output.error is not None:
            self._on_failed(item, str(output.error))
            return
        new_tokens = list(output.generated_tokens)[len(item.tokens) - item.offset :]
        item.tokens.extend(new_tokens)
        self._stats.generated_tokens += len(new_tokens)
        step = item.decoder.feed(new_tokens)
        item.channel.completion_tokens = item.decoder.completion_tokens
        if step.finish_reason is None and output.is_finished():
            step = item.decoder.finish("length")
        if step.finish_reason is None:
            item.channel.push_text(step.text)
            return
        self._forget(item, still_running=not output.is_finished())
        item.channel.finish(step.text, step.finish_reason)

    def _on_failed(self, item: _InFlight, error: str) -> None:
        if not self._manager_healthy():
            return  # the whole manager is going down: the watchdog resubmits this request
        log.warning("request %s failed: %s", item.request_id, error)
        self._forget(item, still_running=False)
        item.channel.fail(GenerationFailedError(f"generation failed: {error}"))

    def _on_cancel(self, channel: RequestChannel) -> None:
        item = self._in_flight.get(channel.request_id)
        if item is not None and item.channel is channel:
            self._forget(item, still_running=True)

    def _forget(self, item: _InFlight, *, still_running: bool) -> None:
        """Drop a request from the engine, cancelling it in the manager when it is still generating there."""
        self._in_flight.pop(item.request_id, None)
        manager = self._manager
        if manager is None or item.epoch != self._epoch:
            return
        if still_running:
            manager.cancel_request(item.request_id)
        manager.output_router.result_handlers.pop(item.request_id, None)

    def _count_batch(self, request_id: str) -> None:
        # The manager hands one step's outputs to the loop in a single callback, so outputs seen before the next
        # loop turn belong to one step; a request seen twice means a second step's outputs were already queued.
        batch = self._batch
        if request_id in batch.seen:
            self._flush_batch()
        batch.seen.add(request_id)
        if not batch.flush_scheduled and self._loop is not None:
            batch.flush_scheduled = True
            self._loop.call_soon(self._flush_batch)

    def _flush_batch(self) -> None:
        batch = self._batch
        if batch.seen:
            self.record_batch(len(batch.seen))
        batch.seen = set()
        batch.flush_scheduled = False

    # ------------------------------------------------------------------ recovery

    def _manager_healthy(self) -> bool:
        manager = self._manager
        if manager is None:
            return False
        return bool(manager.is_running()) and manager.background_thread_status.can_accept_new_requests() is None

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="komt-batching-watchdog")

    async def _watch(self) -> None:
        while self._in_flight and not self._closed:
            if self._manager is not None and not self._manager_healthy():
                await self._restart()
            elif any(item.epoch == -1 for item in self._in_flight.values()):
                self._submit_waiting()
            await asyncio.sleep(WATCHDOG_SECONDS)

    async def _restart(self) -> None:
        """Replace a dead manager and resubmit every in-flight request with the tokens it already has."""
        old, self._manager = self._manager, None
        reason = _death_reason(old)
        log.error("generation thread died (%s): restarting it with %d requests", reason, len(self._in_flight))
        self._stats.restarts += 1
        self._restarting = True
        try:
            await asyncio.to_thread(_stop_manager, old)
        finally:
            self._restarting = False
        for item in list(self._in_flight.values()):
            item.epoch = -1
            item.resubmits += 1
            if item.resubmits > MAX_RESUBMITS:
                self._in_flight.pop(item.request_id, None)
                item.channel.fail(GenerationFailedError(f"generation thread died: {reason}"))
        if not self._closed:
            self._submit_waiting()

    def _submit_waiting(self) -> None:
        for item in list(self._in_flight.values()):
            if item.epoch == -1:
                self._submit_or_fail(item)


def _death_reason(manager: Any) -> str:
    error = manager.background_thread_status.fatal_error if manager is not None else None
    return f"{type(error).__name__}: {error}" if error is not None else "stopped"


def _stop_manager(manager: Any) -> None:
    """Stop a manager's thread without finishing its requests, and release its cache (blocking)."""
    try:
        manager.stop(block=True, timeout=STOP_TIMEOUT_SECONDS, hard_stop=True)
        manager.destroy()
    except Exception:
        log.exception("stopping the continuous batching manager failed")
