"""The engine interface the worker drives.

An engine owns one loaded model and turns :class:`GenerationRequest` objects into a :class:`GenerationStream` of
:class:`GenerationUpdate` objects. A request that fails raises from the stream, always a
:class:`~komt_bot.errors.EngineError` subclass: one error channel, for the built-in engines and the remote one alike.
The worker never touches torch: it only sees this module's plain dataclasses.
A sequential engine serves one request at a time; a batching engine decodes every in-flight request together.
Both have the same surface, so the worker does not care which one it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling settings (defaults are the model card's)."""

    temperature: float = 0.8
    top_p: float = 0.8
    top_k: int = 100
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ("###", "</s>", "<|end|>")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One prompt to complete. ``prompt`` is the fully rendered komt template."""

    request_id: str
    prompt: str
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True, slots=True)
class GenerationUpdate:
    """A piece of a request's answer.

    ``text`` is new text since the previous update (never a replacement character for a half-decoded Hangul
    syllable). The last update of a request has ``finished`` set and a ``finish_reason``.
    """

    request_id: str
    text: str
    finished: bool = False
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What a worker reports about its engine in its heartbeat."""

    model: str
    adapter: str | None
    device: str
    quantization: str
    capacity: int
    kind: str  # "sequential", "batching" or "openai"
    endpoint: str | None = None  # where a remote engine sends requests (its server's base URL)


@dataclass(slots=True)
class EngineStats:
    """Counters an engine keeps for metrics and tests."""

    batch_sizes: list[int] = field(default_factory=list)
    generated_tokens: int = 0
    restarts: int = 0


@runtime_checkable
class GenerationStream(Protocol):
    """What ``generate`` returns: the request's updates, and ``aclose()`` to let go of it.

    Iterating it raises :class:`~komt_bot.errors.EnginePromptTooLongError` when the prompt is over the engine's
    limit, :class:`~komt_bot.errors.EngineUnavailableError` when the model server stayed away, and
    :class:`~komt_bot.errors.GenerationFailedError` when generating failed. ``aclose()`` cancels the request if it
    is still running (and frees its slot); dropping the stream does the same.
    """

    def __aiter__(self) -> AsyncIterator[GenerationUpdate]: ...

    async def __anext__(self) -> GenerationUpdate: ...

    async def aclose(self) -> None:
        """Cancel the request (if still running) and end the stream at once."""
        ...


@runtime_checkable
class Engine(Protocol):
    """A loaded model that streams answers."""

    @property
    def info(self) -> EngineInfo: ...

    @property
    def stats(self) -> EngineStats: ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's tokenizer (used to fit a conversation into the budget)."""
        ...

    def generate(self, request: GenerationRequest) -> GenerationStream:
        """Stream the answer to ``request``; the last update has ``finished=True``.

        A failure raises from the stream (see :class:`GenerationStream`). Closing it early (``aclose()`` or leaving
        an ``async for``) cancels the request and frees its slot.
        """
        ...

    async def close(self) -> None:
        """Release the model and any background thread."""
        ...


@runtime_checkable
class CheckedEngine(Protocol):
    """An engine whose backend can be asked, cheaply, whether it answers (a remote server)."""

    async def check(self) -> str | None:
        """None when the backend answers; otherwise one line saying why not. Never raises, never hangs."""
        ...
