"""The batching engine's pure policy: prefill chunk size, KV cache size, and sampling values for the manager.

No model, no threads: each function maps settings (and what the device reports) to numbers, so it is tested alone.
"""

from __future__ import annotations

import math
from typing import Any, cast

from komt_bot.engine.base import SamplingParams
from komt_bot.settings import GenerationSettings, ModelSettings

CPU_PAGE_SIZE = 32
CUDA_PAGE_SIZE = 256
CPU_STEP_TOKENS = 256
KV_MEMORY_FRACTION = 0.8  # of the GPU memory free after loading, at most, for the KV cache when not configured
CUDA_STEP_TOKENS = 2048


def step_tokens(model: ModelSettings, device: str) -> int:
    """Tokens one model step may process. Long prefills are split into chunks of this size, so a burst of new
    questions does not hold every running answer (and every other newcomer's first token) for one huge step."""
    if model.max_batch_tokens is not None:
        return max(model.max_batch_tokens, model.max_batch_size)
    return max(CUDA_STEP_TOKENS if device == "cuda" else CPU_STEP_TOKENS, model.max_batch_size)


def kv_cache_blocks(
    model: ModelSettings,
    generation: GenerationSettings,
    page_size: int,
    *,
    bytes_per_block: int | None = None,
    free_bytes: int | None = None,
) -> int:
    """KV cache pages: the configured number, else enough for a full batch of the longest allowed requests.

    Given the device's free memory and a page's size, the worst case is capped at ``KV_MEMORY_FRACTION`` of what is
    free, so a 13B model on a 24 GB card starts (with fewer pages: requests then wait for room) instead of failing.
    """
    if model.kv_cache_blocks is not None:
        return model.kv_cache_blocks
    tokens_per_request = model.max_prompt_tokens + generation.max_new_tokens
    blocks = max(1, math.ceil(model.max_batch_size * tokens_per_request / page_size))
    if bytes_per_block and free_bytes is not None:
        blocks = max(1, min(blocks, int(free_bytes * KV_MEMORY_FRACTION) // bytes_per_block))
    return blocks


def kv_block_bytes(config: Any, page_size: int, element_size: int) -> int:
    """Bytes one KV cache page takes: keys and values of every layer for ``page_size`` tokens."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return int(2 * config.num_hidden_layers * kv_heads * head_dim * page_size * element_size)


def manager_generation_config(generation: GenerationSettings, eos_ids: frozenset[int], vocab_size: int) -> Any:
    """The manager-wide ``GenerationConfig``: sampling on, with defaults that make every per-request warper exist."""
    from transformers import GenerationConfig

    temperature = generation.temperature if generation.temperature not in (0.0, 1.0) else 0.7
    top_p = generation.top_p if generation.top_p < 1.0 else 0.99
    top_k = generation.top_k if 0 < generation.top_k < vocab_size else min(50, vocab_size)
    return cast(Any, GenerationConfig)(
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_new_tokens=generation.max_new_tokens,
        eos_token_id=sorted(eos_ids),
    )


def request_sampling_kwargs(sampling: SamplingParams, vocab_size: int) -> dict[str, Any]:
    """Per-request warper values for ``add_request``; temperature 0 becomes greedy (``top_k=1``)."""
    if sampling.temperature <= 0:
        return {"temperature": 1.0, "top_p": 1.0, "top_k": 1}
    top_k = sampling.top_k if 0 < sampling.top_k < vocab_size else vocab_size
    top_p = sampling.top_p if 0 < sampling.top_p <= 1 else 1.0
    return {"temperature": float(sampling.temperature), "top_p": float(top_p), "top_k": int(top_k)}
