"""Stop sequences, matched on text as it streams.

A stop sequence can arrive split across tokens (``#`` then ``##``), so text that could still turn out to be the start of
one is held back until it either completes the stop (generation ends, the stop itself is never shown) or stops
matching (the held text is released).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StopResult:
    """What :meth:`StopFilter.push` lets through: ``text`` to emit, and whether a stop sequence ended the answer."""

    text: str
    stopped: bool = False


class StopFilter:
    """Per-request text filter for a set of stop sequences."""

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(sorted({s for s in stops if s}, key=len))
        self._pending = ""
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether a stop sequence has been seen (nothing more is let through)."""
        return self._stopped

    def push(self, text: str) -> StopResult:
        """Add newly decoded ``text``; returns what is safe to show now."""
        if self._stopped:
            return StopResult("", stopped=True)
        buffer = self._pending + text
        cut = self._first_match(buffer)
        if cut is not None:
            self._pending = ""
            self._stopped = True
            return StopResult(buffer[:cut], stopped=True)
        keep = self._partial_tail(buffer)
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return StopResult(buffer[: len(buffer) - keep])

    def flush(self) -> str:
        """The held-back text, once the answer has ended for another reason (EOS, length)."""
        if self._stopped:
            return ""
        text, self._pending = self._pending, ""
        return text

    def _first_match(self, buffer: str) -> int | None:
        positions = [i for i in (buffer.find(stop) for stop in self._stops) if i >= 0]
        return min(positions) if positions else None

    def _partial_tail(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of some stop sequence."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
