"""Sinks every platform can use: a counting wrapper around any :class:`~komt_bot.chat.editor.ReplySink`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from komt_bot.chat.editor import MessageView, ReplySink
from komt_bot.metrics import Metrics, count_platform_error


@contextlib.contextmanager
def platform_call(metrics: Metrics | None, platform: str) -> Iterator[None]:
    """Count one post or edit on ``platform``: an edit when it succeeds, an error (and a 429) when it raises.

    Wrap exactly one platform API call (or one that stands for a message, such as opening a thread to post in);
    without ``metrics`` nothing is counted.
    """
    try:
        yield
    except Exception as e:
        count_platform_error(metrics, platform, e)
        raise
    if metrics is not None:
        metrics.edits.labels(platform).inc()


class MeteredSink:
    """A :class:`komt_bot.chat.editor.ReplySink` that counts every post and edit of the sink it wraps."""

    def __init__(self, sink: ReplySink, metrics: Metrics, platform: str) -> None:
        self.sink = sink
        self.metrics = metrics
        self.platform = platform

    async def post(self, view: MessageView) -> str:
        """Post through the wrapped sink, counted."""
        with platform_call(self.metrics, self.platform):
            return await self.sink.post(view)

    async def edit(self, handle: str, view: MessageView) -> None:
        """Edit through the wrapped sink, counted."""
        with platform_call(self.metrics, self.platform):
            await self.sink.edit(handle, view)
