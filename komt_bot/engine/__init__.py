"""komt-bot's model engine: loading, scheduling and streaming.

Importing this package does not import torch or transformers; :func:`load_engine` does, when it is called (the
``openai`` engine never does: it needs only the ``remote`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from komt_bot.engine.base import (
    Engine,
    EngineInfo,
    EngineStats,
    FinishReason,
    GenerationRequest,
    GenerationStream,
    GenerationUpdate,
    SamplingParams,
)
from komt_bot.errors import EngineError

if TYPE_CHECKING:
    from komt_bot.settings import GenerationSettings, ModelSettings, OpenAISettings

__all__ = [
    "Engine",
    "EngineInfo",
    "EngineStats",
    "FinishReason",
    "GenerationRequest",
    "GenerationStream",
    "GenerationUpdate",
    "SamplingParams",
    "load_engine",
    "load_remote_engine",
]


def load_engine(model: ModelSettings, generation: GenerationSettings, openai: OpenAISettings | None = None) -> Engine:
    """Load the configured model and wrap it in the configured engine (``model.engine``).

    Blocking (loading a 13B model takes a while): call it from a thread in async code. Raises
    :class:`komt_bot.errors.EngineError` with a readable message when the model cannot be loaded. With
    ``engine = "openai"`` no model is loaded: only the base model's tokenizer, and ``openai`` says where the server is.
    """
    if model.engine == "openai":
        from komt_bot.settings import OpenAISettings

        return load_remote_engine(model, openai or OpenAISettings())
    from komt_bot.engine.loading import load_model

    if model.load_format == "dummy":
        from komt_bot.engine.fakes.dummy import load_dummy_model

        loaded = load_dummy_model(model)
    else:
        loaded = load_model(model)
    if model.engine == "sequential":
        from komt_bot.engine.sequential import SequentialEngine

        return SequentialEngine(loaded, model, generation)
    from komt_bot.engine.batching import BatchingEngine

    return BatchingEngine(loaded, model, generation)


def load_remote_engine(model: ModelSettings, openai: OpenAISettings) -> Engine:
    """The ``openai`` engine: the base model's tokenizer (no weights, no torch) and a client of the server."""
    try:
        from komt_bot.engine.remote import OpenAIEngine
    except ImportError as e:
        raise EngineError(f"the openai engine needs its extra: pip install 'komt-bot[remote]' ({e})") from e
    from komt_bot.engine.tokencount import load_token_counter

    return OpenAIEngine(openai, model, load_token_counter(model.base))
