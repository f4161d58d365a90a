"""Where a Discord answer is written: reply sinks for a mention and for an ``/ask`` interaction.

Both keep the ``discord.Message`` of every piece they posted, so an edit goes to the right endpoint by itself
(``InteractionMessage`` and ``WebhookMessage`` edit through the interaction's webhook token, a channel message
through the channel). Later pieces are sent as replies to the previous piece, which keeps the answer one reply
chain that a follow-up question can walk back. The Stop button sits under the piece being written; the last piece
of a finished answer gets the 👍/👎 buttons instead (:meth:`_Sink.final`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import discord

from adapters.discord.control import origin_job_id, stop_view
from adapters.discord.feedback import feedback_view
from komt_bot import messages
from komt_bot.chat.editor import ReplyLimits
from komt_bot.chat.feedback import FinalWithFeedback
from komt_bot.chat.sinks import platform_call
from komt_bot.metrics import Metrics

log = logging.getLogger(__name__)

PLATFORM = "discord"
DISCORD_MAX_CHARS = 2000
THREAD_NAME_CHARS = 90
TOKEN_LIFETIME_SECONDS = 15 * 60
# Move off the interaction token a minute early, so the old message can still be edited into a pointer.
TOKEN_MARGIN_SECONDS = 60.0


def discord_length(text: str) -> int:
    """Length as Discord counts it, erring long: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def discord_limits() -> ReplyLimits:
    """2,000 characters a message, at most one edit a second per message."""
    return ReplyLimits(max_size=DISCORD_MAX_CHARS, measure=discord_length)


def thread_name(question: str) -> str:
    """A thread title from the question's first line."""
    first = question.strip().splitlines()[0] if question.strip() else ""
    return (first[: THREAD_NAME_CHARS - 1] + "…" if len(first) > THREAD_NAME_CHARS else first) or "komt"


class _Sink(FinalWithFeedback):
    """What both sinks share: the pieces posted so far, the Stop button, metrics.

    Every Discord call goes through :meth:`_call`, which counts it (a message posted or edited, or a platform
    error); a failure a sink gets past is also logged with :meth:`_failed`, and one it cannot is raised.
    """

    def __init__(self, origin_id: int, metrics: Metrics | None) -> None:
        self.origin_id = origin_id
        self.job_id = origin_job_id(origin_id)  # the job this reply follows: its Stop button carries it
        self.posted: list[discord.Message] = []
        self._metrics = metrics
        self._feedback: str | None = None  # the job id whose buttons the piece being finished gets

    async def post(self, text: str, *, active: bool) -> str:
        """Post the next piece of the answer (each sink its own way)."""
        raise NotImplementedError

    async def edit(self, handle: str, text: str, *, active: bool) -> None:
        """Replace a piece's text (each sink its own way)."""
        raise NotImplementedError

    def _view(self, active: bool) -> discord.ui.View | None:
        """The Stop button while the job runs, the feedback buttons on a finished answer; None removes both."""
        if active:
            return stop_view(self.job_id)
        return feedback_view(self._feedback) if self._feedback else None

    def _new_view(self, active: bool) -> discord.ui.View:
        """The view for a new message (discord.py's MISSING: no components)."""
        return self._view(active) or discord.utils.MISSING

    def _added(self, message: discord.Message) -> str:
        self.posted.append(message)
        return str(len(self.posted) - 1)

    def _call(self) -> contextlib.AbstractContextManager[None]:
        return platform_call(self._metrics, PLATFORM)

    def _failed(self, what: str, error: discord.HTTPException) -> None:
        log.warning("discord: could not %s for %s: %s %s", what, self.origin_id, error.status, error.text)

    async def _edit(self, message: discord.Message, text: str, active: bool) -> None:
        with self._call():
            await message.edit(content=text, view=self._view(active))


class MessageSink(_Sink):
    """The reply to a message: the first piece replies to it, or opens a thread when ``in_thread`` is set."""

    def __init__(
        self, message: discord.Message, *, in_thread: bool, title: str, metrics: Metrics | None = None
    ) -> None:
        super().__init__(message.id, metrics)
        self._message = message
        self._in_thread = in_thread
        self._title = title

    async def post(self, text: str, *, active: bool) -> str:
        """Post the next piece of the reply."""
        view = self._new_view(active)
        if self.posted:
            previous = self.posted[-1]
            reference = previous.to_reference(fail_if_not_exists=False)
            with self._call():
                return self._added(await previous.channel.send(text, view=view, reference=reference))
        # A reply that is only an error (nothing running) stays in place rather than opening a thread.
        if active and self._in_thread and isinstance(self._message.channel, discord.TextChannel):
            try:
                with self._call():  # the thread and its first message: one post
                    thread = await self._message.create_thread(name=self._title)
                    return self._added(await thread.send(text, view=view))
            except discord.Forbidden as e:
                self._failed("open a thread", e)
        with self._call():
            return self._added(await self._message.reply(text, view=view, mention_author=False))

    async def edit(self, handle: str, text: str, *, active: bool) -> None:
        """Replace a piece's text (a failed edit is logged; the next one carries the newer text)."""
        try:
            await self._edit(self.posted[int(handle)], text, active)
        except discord.HTTPException as e:
            self._failed("edit the reply", e)


class InteractionSink(_Sink):
    """The answer to an ``/ask`` interaction that was deferred ("thinking").

    The first piece fills the original response; later pieces are channel messages (follow-ups where the bot
    may not post in the channel). The interaction token lives 15 minutes: after that the answer continues as
    normal channel messages, and the old message points to them.
    """

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interaction.id, metrics)
        self._interaction = interaction
        self._deadline = interaction.created_at.timestamp() + TOKEN_LIFETIME_SECONDS - TOKEN_MARGIN_SECONDS
        self._clock = clock

    def token_alive(self) -> bool:
        """True while the interaction token may still be used (with a margin)."""
        return self._clock() < self._deadline

    async def post(self, text: str, *, active: bool) -> str:
        """Post the next piece: into the original response first, then as further messages."""
        if not self.posted and self.token_alive():
            with self._call():
                response = await self._interaction.edit_original_response(content=text, view=self._view(active))
            return self._added(response)
        view = self._new_view(active)
        if not self.posted:
            await self._leave_pointer(None)
        return self._added(await self._send(text, view, self.posted[-1] if self.posted else None))

    async def edit(self, handle: str, text: str, *, active: bool) -> None:
        """Replace a piece's text, moving it to a channel message once the token has expired."""
        index = int(handle)
        message = self.posted[index]
        on_token = isinstance(message, discord.InteractionMessage | discord.WebhookMessage)
        if on_token and not self.token_alive():
            await self._move(index, text, active)
            return
        try:
            await self._edit(message, text, active)
        except discord.HTTPException as e:
            if on_token and e.status in (401, 404):
                await self._move(index, text, active)
            else:
                self._failed("edit the answer", e)

    async def _send(self, text: str, view: discord.ui.View, previous: discord.Message | None) -> discord.Message:
        channel = self._interaction.channel
        if isinstance(channel, discord.abc.Messageable):
            reference = previous.to_reference(fail_if_not_exists=False) if previous else discord.utils.MISSING
            try:
                with self._call():
                    return await channel.send(text, view=view, reference=reference)
            except discord.Forbidden as e:
                if not self.token_alive():
                    raise
                self._failed("post in the channel", e)
        with self._call():
            return await self._interaction.followup.send(text, view=view, wait=True)

    async def _move(self, index: int, text: str, active: bool) -> None:
        """Continue piece ``index`` as a channel message, leaving a pointer in the old one."""
        old = self.posted[index]
        await self._leave_pointer(old)
        self.posted[index] = await self._send(text, self._new_view(active), old)

    async def _leave_pointer(self, old: discord.Message | None) -> None:
        try:
            with self._call():
                if old is None:
                    await self._interaction.edit_original_response(content=messages.CONTINUED, view=None)
                else:
                    await old.edit(content=messages.CONTINUED, view=None)
        except discord.HTTPException as e:
            self._failed("point to the continued answer", e)
