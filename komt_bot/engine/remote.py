"""The ``openai`` engine: each request goes to an OpenAI-compatible server's streaming ``/v1/completions``.

The server (vLLM, SGLang, ``transformers serve``) holds the model and does the batching; this engine loads no model,
only the base model's tokenizer to fit conversations into ``model.max_prompt_tokens``. The raw komt prompt is sent
as is (the completions API, not chat), with the job's temperature, top_p, top_k (an extra field vLLM and SGLang
accept), max_tokens and stop sequences. The server's text goes through the same stop filter as the built-in
engines' (:class:`~komt_bot.engine.reply.TextReplyDecoder`), so the answer is the same whether or not the server
enforced the stops. Closing the stream closes the HTTP response; vLLM and SGLang abort a request whose client left.

Every failure (timed out, an error status, a stream cut off) raises :class:`GenerationFailedError` with one readable
line; the worker then fails the attempt and the queue retries it. A server that refuses connections (restarting, not
up yet) got nothing, so the request waits for it for up to ``openai.unavailable_seconds`` and then raises
:class:`EngineUnavailableError`, which ends the job at once with that reason (retrying would only wait again). A
prompt over ``model.max_prompt_tokens`` raises :class:`EnginePromptTooLongError` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from komt_bot.engine.base import (
    EngineInfo,
    EngineStats,
    FinishReason,
    GenerationRequest,
    GenerationUpdate,
    SamplingParams,
)
from komt_bot.engine.reply import TextReplyDecoder
from komt_bot.engine.tokencount import TokenCounter
from komt_bot.errors import EngineError, EnginePromptTooLongError, EngineUnavailableError, GenerationFailedError
from komt_bot.settings import ModelSettings, OpenAISettings

log = logging.getLogger(__name__)

# Optional request fields a server may refuse (``transformers serve`` answers 422 to top_k): dropped, once, on a 4xx
# that names them, and not sent to that server again.
OPTIONAL_FIELDS = ("top_k", "stream_options")
CHECK_TIMEOUT_SECONDS = 5.0
UNAVAILABLE_FIRST_DELAY_SECONDS = 0.2
UNAVAILABLE_MAX_DELAY_SECONDS = 2.0
ERROR_BODY_CHARS = 300


@dataclass(slots=True)
class _Chunk:
    """What one server-sent event of a completions stream carries."""

    text: str = ""
    finish_reason: str | None = None
    stop_reason: Any = None
    usage: dict[str, Any] | None = None


class OpenAIEngine:
    """An :class:`~komt_bot.engine.base.Engine` backed by an OpenAI-compatible completions server."""

    kind = "openai"

    def __init__(
        self,
        settings: OpenAISettings,
        model: ModelSettings,
        counter: TokenCounter,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.model_settings = model
        self.counter = counter
        self.url = f"{settings.base_url}/completions"
        self._unsupported: set[str] = set()
        self._stats = EngineStats()
        self._open_streams = 0
        headers = {"Accept": "text/event-stream"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.read_timeout_seconds,
            pool=settings.read_timeout_seconds,
        )
        limits = httpx.Limits(
            max_connections=settings.max_concurrency + 1,  # + 1: the health check never waits for a stream
            max_keepalive_connections=settings.max_concurrency + 1,
        )
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits, transport=transport)

    @property
    def capacity(self) -> int:
        """Requests this engine sends at once."""
        return self.settings.max_concurrency

    @property
    def info(self) -> EngineInfo:
        """The served model and the server's address, for the worker's presence record."""
        return EngineInfo(
            model=self.settings.model,
            adapter=None,
            device="remote",
            quantization="server",
            capacity=self.capacity,
            kind=self.kind,
            endpoint=self.settings.base_url,
        )

    @property
    def stats(self) -> EngineStats:
        """Generated tokens (``batch_sizes`` stays empty: the server batches)."""
        return self._stats

    @property
    def open_streams(self) -> int:
        """HTTP responses open now (one per running request)."""
        return self._open_streams

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the base model's tokenizer, without the BOS token."""
        return self.counter.count(text)

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationUpdate, None]:
        """Stream the server's answer; closing the stream closes the HTTP response (the server aborts)."""
        return self._generate(request)

    async def _generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationUpdate, None]:
        if not request.prompt:
            raise GenerationFailedError("prompt is empty")
        prompt_tokens = self.counter.count(request.prompt, with_special=True)
        limit = self.model_settings.max_prompt_tokens
        if prompt_tokens > limit:
            raise EnginePromptTooLongError(prompt_tokens, limit)
        decoder = TextReplyDecoder(request.sampling.stop)
        received: list[str] = []
        usage: dict[str, Any] = {}
        server_reason: str | None = None
        stopped_by_server = False

        def update(text: str, reason: FinishReason | None = None) -> GenerationUpdate:
            completion = usage.get("completion_tokens")
            if not isinstance(completion, int):
                completion = self.counter.count("".join(received)) if reason else len(received)
            prompt = usage.get("prompt_tokens")
            return GenerationUpdate(
                request.request_id,
                text,
                finished=reason is not None,
                finish_reason=reason,
                prompt_tokens=prompt if isinstance(prompt, int) else prompt_tokens,
                completion_tokens=completion,
            )

        async with self._open(request) as response, contextlib.aclosing(self._chunks(response)) as chunks:
            async for chunk in chunks:
                if chunk.usage:
                    usage = chunk.usage
                if chunk.finish_reason is not None:
                    server_reason = chunk.finish_reason
                    stopped_by_server = chunk.stop_reason in request.sampling.stop  # vLLM names the stop it matched
                if not chunk.text or decoder.finished:
                    continue
                received.append(chunk.text)
                step = decoder.feed(chunk.text)
                if step.finish_reason is not None:  # a stop sequence the server did not enforce: leave now
                    final = update(step.text, step.finish_reason)
                    self._ended(final)
                    yield final
                    return
                if step.text:
                    yield update(step.text)
        if server_reason is None:
            raise self._failure("ended the stream without finishing")
        if server_reason not in ("stop", "length"):
            raise self._failure(f"ended the answer: {server_reason}")
        step = decoder.finish("length" if server_reason == "length" else "stop", stopped_by_server=stopped_by_server)
        final = update(step.text, step.finish_reason)
        self._ended(final)
        yield final

    def _ended(self, final: GenerationUpdate) -> None:
        self._stats.generated_tokens += final.completion_tokens

    def _payload(self, prompt: str, sampling: SamplingParams) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.settings.model,
            "prompt": prompt,
            "max_tokens": max(1, sampling.max_new_tokens),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.top_k > 0:
            payload["top_k"] = sampling.top_k
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        for name in self._unsupported:
            payload.pop(name, None)
        return payload

    @contextlib.asynccontextmanager
    async def _open(self, request: GenerationRequest) -> AsyncIterator[httpx.Response]:
        """The open streaming response of one request, counted in ``open_streams`` and always closed."""
        response = await self._start(request)
        self._open_streams += 1
        try:
            yield response
        finally:
            self._open_streams -= 1
            await response.aclose()

    async def _start(self, request: GenerationRequest) -> httpx.Response:
        """Send the request and return the open streaming response (status 200), retrying without refused fields."""
        while True:
            payload = self._payload(request.prompt, request.sampling)
            response = await self._send(payload)
            if response.status_code < 400:
                return response
            body = await self._read_body(response)
            refused = [name for name in OPTIONAL_FIELDS if name in payload and name in body]
            if response.status_code in (400, 422) and refused:
                log.warning("the model server refused %s (%s); not sending it again", ", ".join(refused), body)
                self._unsupported.update(refused)
                continue
            raise self._failure(f"answered HTTP {response.status_code}: {body}")

    async def _send(self, payload: dict[str, Any]) -> httpx.Response:
        """Send one request. A server that cannot be reached got nothing, so it is tried again with backoff for up
        to ``unavailable_seconds`` (a vLLM restart reloads the model for a minute or two)."""
        window = self.settings.unavailable_seconds
        deadline = time.monotonic() + window
        delay = UNAVAILABLE_FIRST_DELAY_SECONDS
        while True:
            try:
                return await self._client.send(self._client.build_request("POST", self.url, json=payload), stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    waited = f"; waited {window:g} s for it" if window else ""
                    raise self._failure(_describe(e, self.settings) + waited, EngineUnavailableError) from e
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, UNAVAILABLE_MAX_DELAY_SECONDS)
            except httpx.HTTPError as e:
                raise self._failure(_describe(e, self.settings)) from e

    async def _read_body(self, response: httpx.Response) -> str:
        try:
            raw = await response.aread()
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
        text = raw.decode("utf-8", errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            return text.strip()[:ERROR_BODY_CHARS]
        return _error_text(data)[:ERROR_BODY_CHARS]

    async def _chunks(self, response: httpx.Response) -> AsyncGenerator[_Chunk, None]:
        """The events of a completions stream, up to ``data: [DONE]`` or the end of the response."""
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" names
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                yield self._parse(data)
        except httpx.HTTPError as e:
            raise self._failure(_describe(e, self.settings)) from e

    def _parse(self, data: str) -> _Chunk:
        try:
            event = json.loads(data)
        except ValueError as e:
            raise self._failure(f"sent a chunk that is not JSON: {data[:80]!r}") from e
        if not isinstance(event, dict):
            raise self._failure(f"sent a chunk that is not an object: {data[:80]!r}")
        if "error" in event:
            raise self._failure(f"failed mid-answer: {_error_text(event)[:ERROR_BODY_CHARS]}")
        chunk = _Chunk(usage=event.get("usage") if isinstance(event.get("usage"), dict) else None)
        choices = event.get("choices") or []
        if choices and isinstance(choices[0], dict):
            choice = choices[0]
            chunk.text = str(choice.get("text") or "")
            chunk.finish_reason = choice.get("finish_reason")
            chunk.stop_reason = choice.get("stop_reason")
        return chunk

    def _failure(self, what: str, kind: type[EngineError] = GenerationFailedError) -> EngineError:
        return kind(f"the model server at {self.settings.base_url} {what}")

    async def check(self) -> str | None:
        """None when the server lists the configured model on ``/models``; else one line saying what is wrong."""
        url = f"{self.settings.base_url}/models"
        try:
            response = await self._client.get(url, timeout=CHECK_TIMEOUT_SECONDS)
        except httpx.HTTPError as e:
            return f"the model server at {self.settings.base_url} {_describe(e, self.settings)}"
        problem = _models_problem(response, self.settings.model)
        return f"the model server at {url} {problem}" if problem else None

    async def close(self) -> None:
        """Close the HTTP client (open streams are closed by their own generators)."""
        await self._client.aclose()


def _describe(error: httpx.HTTPError, settings: OpenAISettings) -> str:
    """One line for a transport failure."""
    if isinstance(error, httpx.ConnectTimeout):
        return f"did not accept a connection within {settings.connect_timeout_seconds:g} s"
    if isinstance(error, httpx.ConnectError):
        return f"is unreachable ({error or 'connection refused'})"
    if isinstance(error, httpx.ReadTimeout):
        return f"sent nothing for {settings.read_timeout_seconds:g} s"
    if isinstance(error, httpx.TimeoutException):
        return f"timed out ({type(error).__name__})"
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        return f"closed the connection mid-answer ({error or type(error).__name__})"
    return f"failed: {type(error).__name__}: {error}"


def _error_text(data: Any) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``, ``{"detail": ...}``) or the body."""
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, dict):
                return str(value.get("message") or value)
            if value:
                return str(value)
    return json.dumps(data, ensure_ascii=False)


def _models_problem(response: httpx.Response, model: str) -> str | None:
    if response.status_code >= 400:
        return f"answered HTTP {response.status_code}"
    try:
        served = [str(m.get("id")) for m in response.json().get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return "answered something that is not a model list"
    # SGLang selects a LoRA with "BASE:ADAPTER" and lists only the base; vLLM lists each --lora-modules name.
    if served and model not in served and model.rpartition(":")[0] not in served:
        return f"does not serve {model!r} (it serves {', '.join(served[:5])}): set KOMT_OPENAI__MODEL"
    return None
