"""komt-bot's model engine: loading, scheduling and streaming.

Importing this package does not import torch or transformers; :func:`load_engine` does, when it is called.
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

if TYPE_CHECKING:
    from komt_bot.settings import GenerationSettings, ModelSettings

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
]


def load_engine(model: ModelSettings, generation: GenerationSettings) -> Engine:
    """Load the configured model and wrap it in the configured engine (``model.engine``).

    Blocking (loading a 13B model takes a while): call it from a thread in async code. Raises
    :class:`komt_bot.errors.EngineError` with a readable message when the model cannot be loaded.
    """
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
