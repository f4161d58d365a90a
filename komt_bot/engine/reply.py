"""One request's answer as it streams: token ids (or a server's text) in, text deltas and a finish reason out.

The built-in engines feed each request's new token ids to a :class:`ReplyDecoder`, which chains the incremental
detokenizer, the stop-sequence filter, the EOS check and the ``max_new_tokens`` limit. The remote engine feeds the
text its server streams to a :class:`TextReplyDecoder`: the same stop filter, on text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from komt_bot.engine.base import FinishReason
from komt_bot.engine.detokenizer import IncrementalDetokenizer, TokenBytes
from komt_bot.engine.stops import StopFilter


@dataclass(frozen=True, slots=True)
class ReplyStep:
    """New text since the last step, and why the answer ended (``None`` while it goes on)."""

    text: str
    finish_reason: FinishReason | None = None


class ReplyDecoder:
    """Per-request decoding state. Tokens fed after the answer ended are ignored."""

    def __init__(
        self, token_bytes: TokenBytes, *, eos_ids: Iterable[int], stops: Iterable[str], max_new_tokens: int
    ) -> None:
        self._detokenizer = IncrementalDetokenizer(token_bytes)
        self._stops = StopFilter(stops)
        self._eos_ids = frozenset(eos_ids)
        self._max_new_tokens = max_new_tokens
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None

    @property
    def finished(self) -> bool:
        """Whether the answer has ended (EOS, a stop sequence or the token limit)."""
        return self.finish_reason is not None

    def feed(self, token_ids: Iterable[int]) -> ReplyStep:
        """Take newly generated tokens; returns the text they complete and, at the end, the finish reason."""
        if self.finished:
            return ReplyStep("", self.finish_reason)
        text_ids: list[int] = []
        reason: FinishReason | None = None
        for token_id in token_ids:
            self.completion_tokens += 1
            if token_id in self._eos_ids:
                reason = "stop"
                break
            text_ids.append(token_id)
            if self.completion_tokens >= self._max_new_tokens:
                reason = "length"
                break
        pushed = self._stops.push(self._detokenizer.feed(text_ids))
        if pushed.stopped:
            return self._finish(pushed.text, "stop")
        if reason is not None:
            return self._finish(pushed.text + self._flush(), reason)
        return ReplyStep(pushed.text)

    def finish(self, reason: FinishReason) -> ReplyStep:
        """End the answer from outside (e.g. the engine says it is done); releases any held-back text."""
        if self.finished:
            return ReplyStep("", self.finish_reason)
        tail = self._flush()
        return self._finish(tail, "stop" if self._stops.stopped else reason)

    def _flush(self) -> str:
        tail = self._stops.push(self._detokenizer.flush())
        return tail.text if tail.stopped else tail.text + self._stops.flush()

    def _finish(self, text: str, reason: FinishReason) -> ReplyStep:
        self.finish_reason = reason
        return ReplyStep(text, reason)


class TextReplyDecoder:
    """The :class:`ReplyDecoder` of an engine that receives text, not token ids (a remote server).

    The same stop filter holds back what could still become a stop sequence, so an answer reads the same whether or
    not the server enforced the stops itself. A U+FFFD in the text (a server's detokenizer that split a byte-fallback
    Hangul syllable, or a byte that is never valid UTF-8) is dropped, as the built-in engines drop such bytes.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = StopFilter(stops)
        self.finish_reason: FinishReason | None = None

    @property
    def finished(self) -> bool:
        """Whether the answer has ended."""
        return self.finish_reason is not None

    def feed(self, text: str) -> ReplyStep:
        """Take newly received text; returns what is safe to show and, if a stop sequence completed, ``"stop"``."""
        if self.finished:
            return ReplyStep("", self.finish_reason)
        pushed = self._stops.push(text.replace("\ufffd", ""))
        if pushed.stopped:
            self.finish_reason = "stop"
            return ReplyStep(pushed.text, "stop")
        return ReplyStep(pushed.text)

    def finish(self, reason: FinishReason, *, stopped_by_server: bool = False) -> ReplyStep:
        """End the answer (the server finished it); ``stopped_by_server``: it ended on one of the stop sequences,
        so the text held back as a possible stop is dropped, as a local match would drop it."""
        if self.finished:
            return ReplyStep("", self.finish_reason)
        tail = "" if stopped_by_server else self._stops.flush()
        self.finish_reason = "stop" if stopped_by_server else reason
        return ReplyStep(tail, self.finish_reason)
