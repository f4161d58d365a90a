"""The judge: komt's LLM-as-a-judge prompt (0 to 5), its parser, and a client for any OpenAI-compatible server.

The prompt, in Korean and English, shows the question and the answer and asks for a short reason and a last line
``Score: N`` (N an integer 0..5). :func:`parse_score` takes the last such line (``점수: N`` too). A reply without
one is asked once more for the line alone; if that fails too the answer is *unjudged* (never counted as 0).
:data:`PROMPT_VERSION` goes into every output line, so scores from different prompts are never mixed unknowingly.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from pydantic import SecretStr

from komt_bot.errors import ConfigError, JudgeError
from komt_bot.eval.questions import MAX_ITEM_SCORE
from komt_bot.settings import EvalSettings

PROMPT_VERSION = "komt-judge-v1"
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 1024
REQUEST_TIMEOUT_SECONDS = 180.0
CHECK_TIMEOUT_SECONDS = 10.0
TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

SYSTEM_PROMPT = (
    "당신은 공정한 평가자입니다. 사용자의 질문에 대한 AI 어시스턴트의 답변을 평가하십시오. 답변이 도움이 되는지, "
    "질문과 관련이 있는지, 정확한지, 충분히 자세한지, 질문과 같은 언어로(한국어 질문에는 한국어로) 답했는지를 "
    "보십시오. 먼저 평가 이유를 한두 문장으로 짧게 쓰고, 마지막 줄에는 `Score: N` 한 줄만 쓰십시오. N은 0부터 5까지의 "
    "정수입니다 (0: 쓸모없거나 틀림, 5: 훌륭함).\n\n"
    "You are an impartial judge. Rate the AI assistant's answer to the user's question: is it helpful, relevant, "
    "accurate, detailed enough, and in the language of the question (Korean for a Korean question)? First give a "
    "short reason (one or two sentences), then write the score alone on the last line as `Score: N`, N an integer "
    "from 0 (useless or wrong) to 5 (excellent)."
)
USER_TEMPLATE = (
    "[질문 / Question]\n{question}\n\n"
    "[답변 / Answer]\n{answer}\n\n"
    "[끝 / End]\n"
    "이유를 짧게 쓰고 마지막 줄에 `Score: N` (0~5)을 쓰십시오. / "
    "Give a short reason, then `Score: N` (0-5) on the last line."
)
EMPTY_ANSWER = "(빈 답변 / empty answer)"
RETRY_PROMPT = (
    "답변의 마지막 줄에 `Score: N` (N은 0~5의 정수)이 없습니다. 그 한 줄만 쓰십시오. / "
    "Your reply has no last line `Score: N` (N an integer 0-5). Reply with that line only."
)

_SCORE = re.compile(r"(?:score|점수)\s*\**\s*[:：]\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def judge_messages(question: str, answer: str) -> list[dict[str, str]]:
    """The chat messages that ask the judge to score ``answer`` to ``question``."""
    user = USER_TEMPLATE.format(question=question.strip(), answer=answer.strip() or EMPTY_ANSWER)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_score(reply: str) -> int | None:
    """The score of the last ``Score: N`` (or ``점수: N``) in ``reply``; None when there is none or it is not 0..5."""
    matches = _SCORE.findall(reply)
    if not matches:
        return None
    value = float(matches[-1])
    if not value.is_integer() or not 0 <= value <= MAX_ITEM_SCORE:
        return None
    return int(value)


def shown_url(url: str) -> str:
    """``url`` without a password in it (for output lines and JSON)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    return str(parsed.copy_with(username=parsed.username, password="****")) if parsed.password else url


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Which judge to ask: a base URL ending in /v1, a model name, and an optional API key."""

    url: str
    model: str
    api_key: SecretStr | None = None

    @classmethod
    def resolve(cls, settings: EvalSettings, *, url: str | None = None, model: str | None = None) -> JudgeConfig:
        """The judge from the options over the settings; a :class:`ConfigError` naming what is missing."""
        chosen_url = url or settings.judge_url
        chosen_model = model or settings.judge_model
        if not chosen_url:
            raise ConfigError("KOMT_EVAL__JUDGE_URL: no judge is configured (or pass --judge-url URL, ending in /v1)")
        if not chosen_url.startswith(("http://", "https://")):
            raise ConfigError(f"KOMT_EVAL__JUDGE_URL: not an http(s) URL (got {shown_url(chosen_url)!r})")
        if not chosen_model:
            raise ConfigError("KOMT_EVAL__JUDGE_MODEL: no judge model is named (or pass --judge-model NAME)")
        return cls(chosen_url.rstrip("/"), chosen_model, settings.judge_api_key)

    @property
    def shown_url(self) -> str:
        """The URL as it may be printed."""
        return shown_url(self.url)


@dataclass(frozen=True, slots=True)
class Judgement:
    """The judge's verdict on one answer: the score (None: unjudged), every reply, and how many it took."""

    score: int | None
    reply: str
    attempts: int


class JudgeClient:
    """Asks the judge over HTTP (``POST {url}/chat/completions``, temperature 0). Use it as an async context.

    Transient failures (timeouts, 429, 5xx) are retried with backoff; what is left raises :class:`JudgeError`.
    """

    def __init__(
        self,
        config: JudgeConfig,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        tries: int = 4,
        backoff: float = 1.0,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.tries = tries
        self.backoff = backoff
        self.requests = 0
        headers = {"Accept": "application/json"}
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=True)

    async def __aenter__(self) -> JudgeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    def _scrub(self, text: str) -> str:
        key = self.config.api_key.get_secret_value() if self.config.api_key else ""
        return text.replace(key, "****") if key else text

    def _where(self) -> str:
        return f"the judge at {self.config.shown_url}"

    async def check(self) -> None:
        """Fail at once, before any question is asked, when the judge does not answer or refuses the key.

        ``GET {url}/models`` is enough: any HTTP answer but 401/403 means a server is there.
        """
        try:
            response = await self._client.get(f"{self.config.url}/models", timeout=CHECK_TIMEOUT_SECONDS)
        except httpx.HTTPError as e:
            raise JudgeError(f"{self._where()} does not answer: {_reason(e)}") from e
        if response.status_code in (401, 403):
            raise JudgeError(f"{self._where()} refused the API key (HTTP {response.status_code})")

    async def judge(self, question: str, answer: str) -> Judgement:
        """Score one answer: the last ``Score: N`` of the reply, asked once more when the reply has none."""
        messages = judge_messages(question, answer)
        reply = await self.complete(messages)
        score = parse_score(reply)
        if score is not None:
            return Judgement(score, reply, 1)
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": RETRY_PROMPT}]
        second = await self.complete(messages)
        return Judgement(parse_score(second), f"{reply}\n\n{second}".strip(), 2)

    async def complete(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply to ``messages`` (its first choice's text, "" when it has none)."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": JUDGE_TEMPERATURE,
            "max_tokens": JUDGE_MAX_TOKENS,
            "stream": False,
        }
        response = await self._post(body)
        try:
            data = response.json()
            content = data["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise JudgeError(f"{self._where()} answered something that is not a chat completion") from e
        return content if isinstance(content, str) else ""

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        url = f"{self.config.url}/chat/completions"
        for attempt in range(1, self.tries + 1):
            last = attempt == self.tries
            try:
                self.requests += 1
                response = await self._client.post(url, json=body)
            except httpx.HTTPError as e:
                if last:
                    raise JudgeError(f"{self._where()} does not answer: {_reason(e)}") from e
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if response.status_code < 300:
                return response
            if response.status_code in TRANSIENT_STATUS and not last:
                await asyncio.sleep(_retry_after(response) or self.backoff * 2 ** (attempt - 1))
                continue
            raise JudgeError(f"{self._where()} answered HTTP {response.status_code}: {self._scrub(_snippet(response))}")
        raise AssertionError("unreachable")  # pragma: no cover


def _reason(error: httpx.HTTPError) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]


def _snippet(response: httpx.Response) -> str:
    try:
        data = response.json()
        error = data.get("error") if isinstance(data, dict) else None
        text = str(error.get("message") if isinstance(error, dict) else error or data)
    except ValueError:
        text = response.text
    return " ".join(text.split())[:200] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), 30.0)
    except ValueError:
        return None
