"""A scripted engine for adapter and queue tests that need a known answer.

It implements the real :class:`komt_bot.engine.base.Engine` protocol (no mocks): each request streams the
configured answer in small pieces with a delay between them, like a model would. Tests that need the real
model use the tiny model from tests/model_fixtures.py instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

from komt_bot.engine.base import EngineInfo, EngineStats, GenerationRequest, GenerationUpdate
from komt_bot.errors import GenerationFailedError


class ScriptedEngine:
    """Answers every prompt with ``answer(prompt)``, ``piece_chars`` characters every ``delay`` seconds (with a
    ``gate``, the second piece waits until it is set)."""

    def __init__(
        self,
        answer: Callable[[str], str] | str = "안녕하세요! 무엇을 도와드릴까요?",
        *,
        piece_chars: int = 4,
        delay: float = 0.01,
        capacity: int = 4,
        fail_with: str | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self._answer = answer if callable(answer) else (lambda _prompt, text=answer: text)
        self.piece_chars = piece_chars
        self.delay = delay
        self.fail_with = fail_with
        self.gate = gate  # when given, every answer waits for it after its first piece
        self.prompts: list[str] = []
        self.cancelled: list[str] = []
        self._info = EngineInfo("scripted", None, "cpu", "none", capacity, "scripted")
        self._stats = EngineStats()

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def stats(self) -> EngineStats:
        return self._stats

    def count_tokens(self, text: str) -> int:
        return len(text)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationUpdate, None]:
        self.prompts.append(request.prompt)
        text = self._answer(request.prompt)
        sent = 0
        try:
            for start in range(0, len(text), self.piece_chars):
                await asyncio.sleep(self.delay)
                if self.fail_with:
                    raise GenerationFailedError(self.fail_with)
                piece = text[start : start + self.piece_chars]
                if sent == 1 and self.gate is not None:
                    await self.gate.wait()
                sent += 1
                yield GenerationUpdate(
                    request.request_id, piece, prompt_tokens=len(request.prompt), completion_tokens=sent
                )
            yield GenerationUpdate(
                request.request_id, "", True, "stop", prompt_tokens=len(request.prompt), completion_tokens=sent
            )
        except GeneratorExit:
            self.cancelled.append(request.request_id)
            raise

    async def close(self) -> None:
        return None
