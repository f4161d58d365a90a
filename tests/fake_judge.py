"""A real OpenAI-compatible judge on 127.0.0.1 (aiohttp): ``GET /v1/models`` and ``POST /v1/chat/completions``.

It scores an answer by its length — ``min(5, characters // 10)`` — so a test knows every score in advance. Its
reply names the scale first (``점수: 0`` is the lowest, ...) and ends with ``Score: N``, so only a parser that takes
the *last* score gets it right. It can be told to leave the score line out (for some questions, or also when
asked again), to hold requests until released (a run stopped while judging), or to answer an HTTP error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from komt_bot.dev.fakes.local_http import serve_on_loopback

ANSWER_START = "[답변 / Answer]\n"
ANSWER_END = "\n\n[끝 / End]"
QUESTION_START = "[질문 / Question]\n"
MODEL = "fake-judge-1"


def rule_score(answer: str) -> int:
    """The score this judge gives an answer."""
    return min(5, len(answer.strip()) // 10)


@dataclass
class Asked:
    """One chat-completions request: the question and answer it showed, and whether it was the follow-up."""

    question: str
    answer: str
    retry: bool
    body: dict[str, Any]


@dataclass
class FakeJudge:
    """The fake judge server. ``await start()``, point the eval at ``url``, ``await stop()``."""

    omit_for: set[str] = field(default_factory=set)  # questions (substrings) whose replies have no score line
    omit_on_retry: bool = True  # also leave it out of the reply to the follow-up
    hold_after: int | None = None  # requests past this many wait until release()
    fail_status: int | None = None  # answer every chat request with this HTTP status
    asked: list[Asked] = field(default_factory=list)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner, self.port = await serve_on_loopback(app)

    async def stop(self) -> None:
        """Stop listening (the judge is then down: connections are refused)."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """The base URL to give the eval (ending in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def release(self) -> None:
        """Let held requests go on (and stop holding new ones)."""
        self.hold_after = None
        self._release.set()

    def first_requests(self) -> list[Asked]:
        """The first request for each answer (not the follow-ups)."""
        return [a for a in self.asked if not a.retry]

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        messages = body["messages"]
        shown = next(m["content"] for m in messages if m["role"] == "user")
        question = shown.split(QUESTION_START, 1)[1].split("\n\n[답변", 1)[0]
        answer = shown.split(ANSWER_START, 1)[1].split(ANSWER_END, 1)[0]
        retry = any(m["role"] == "assistant" for m in messages)
        self.asked.append(Asked(question, answer, retry, body))
        if self.hold_after is not None and len(self.asked) > self.hold_after:
            self.held.set()
            await self._release.wait()
        if self.fail_status is not None:
            return web.json_response({"error": {"message": "the judge is overloaded"}}, status=self.fail_status)
        omit = any(part in question for part in self.omit_for) and (self.omit_on_retry or not retry)
        score = rule_score(answer)
        if omit:
            text = "좋은 질문입니다. 답변을 읽어 보았습니다. / A fine question; I read the answer."
        elif retry:
            text = f"Score: {score}"
        else:
            text = (
                f"평가 기준: 점수: 0은 최저, Score: 5는 최고입니다. 답변은 {len(answer.strip())}자입니다.\n"
                f"The answer is {len(answer.strip())} characters long.\nScore: {score}"
            )
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.asked)}",
                "object": "chat.completion",
                "model": body.get("model", MODEL),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            }
        )
