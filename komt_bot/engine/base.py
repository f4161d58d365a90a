"""The engine interface the worker drives.

An engine owns one loaded model and turns :class:`GenerationRequest` objects into a stream of
:class:`GenerationUpdate` objects. The worker never touches torch: it only sees this module's plain dataclasses.
A sequential engine serves one request at a time; a batching engine decodes every in-flight request together.
Both have the same surface, so the worker does not care which one it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "cancelled", "error"]


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
    error: str | None = None


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
class Engine(Protocol):
    """A loaded model that streams answers."""

    @property
    def info(self) -> EngineInfo: ...

    @property
    def stats(self) -> EngineStats: ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's tokenizer (used to fit a conversation into the budget)."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationUpdate]:
        """Stream the answer to ``request``; the last update has ``finished=True``.

        Closing the iterator early (``aclose()`` or leaving an ``async for``) cancels the request and frees its slot.
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


@runtime_checkable
class GenerationStream(Protocol):
    """What the built-in engines' ``generate`` returns: an async iterator that can also be cancelled in place.

    ``cancel()`` stops the request and frees its slot; the stream then yields one last update with
    ``finish_reason="cancelled"`` (and the usage so far) and ends. ``aclose()``, or dropping the stream, cancels the
    same way without waiting for that update; ``last_update`` still records it.
    """

    def __aiter__(self) -> GenerationStream: ...

    async def __anext__(self) -> GenerationUpdate: ...

    @property
    def last_update(self) -> GenerationUpdate | None:
        """The final update of the request once it has one (also after ``aclose()``)."""
        ...

    def cancel(self) -> None:
        """Stop generating; the stream ends with a ``"cancelled"`` update."""
        ...

    async def aclose(self) -> None:
        """Cancel (if still running) and end the stream at once."""
        ...
