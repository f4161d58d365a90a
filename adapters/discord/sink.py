"""Where a Discord answer is written: the parts both reply sinks share, and the sink of a mention's reply.

A sink keeps each piece it posted as a :class:`Piece` (message id, channel, whether the interaction's token edits
it) and reaches it through a partial message or the interaction's webhook, never through the event objects: a sink
is the same code whether it began the reply or another process did (:meth:`MessageSink.resumed`, built from the
reply's delivery record, :mod:`komt_bot.chat.handover`). Later pieces are sent as replies to the previous piece,
which keeps the answer one reply chain that a follow-up question can walk back. The Stop button sits under the piece
being written; the last piece of a finished answer gets the 👍/👎 buttons instead (its view's ``feedback``).

Every post and edit spends the process's Discord budget (:func:`discord_budget`): about 5 a 5 s per channel and
per interaction, shared by every open reply, at the priority the editor gave the view. discord.py still paces each
route by Discord's ``X-RateLimit-*`` headers; the budget decides who goes first (first words, then finals) and
skips an intermediate edit rather than queueing it behind the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import discord

from adapters.discord.control import origin_job_id, stop_view
from adapters.discord.feedback import feedback_view
from komt_bot.chat.budget import PlatformBudget, Priority, Throttled, Tier
from komt_bot.chat.editor import MessageView, ReplyLimits
from komt_bot.chat.sinks import platform_call
from komt_bot.errors import PlatformError, ReplyGoneError
from komt_bot.metrics import Metrics
from komt_bot.settings import DiscordLimitSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "discord"
DISCORD_MAX_CHARS = 2000
THREAD_NAME_CHARS = 90
UNKNOWN_MESSAGE = 10008  # Discord's error code for a message that is not there (deleted)


def discord_length(text: str) -> int:
    """Length as Discord counts it, erring long: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def discord_limits() -> ReplyLimits:
    """2,000 characters a message, at most one edit a second per message (more apart while many answers share a
    channel's budget)."""
    return ReplyLimits(max_size=DISCORD_MAX_CHARS, measure=discord_length, edit_method="channel")


def discord_budget(limits: DiscordLimitSettings) -> PlatformBudget:
    """The budget of one bot: posts and edits per channel, edits per interaction."""
    return PlatformBudget(
        {
            "channel": Tier(limits.channel_per_second, limits.channel_burst),
            "interaction": Tier(limits.interaction_per_second, limits.interaction_burst),
        }
    )


def retry_after(error: Exception) -> float | None:
    """Seconds a 429 that discord.py gave up on asks to wait; None for any other error."""
    if isinstance(error, discord.RateLimited):
        return float(error.retry_after)
    if isinstance(error, discord.HTTPException) and error.status == 429:
        header = error.response.headers.get("Retry-After") if error.response is not None else None
        try:
            return float(header or 1.0)
        except ValueError:
            return 1.0
    return None


def thread_name(question: str) -> str:
    """A thread title from the question's first line."""
    first = question.strip().splitlines()[0] if question.strip() else ""
    return (first[: THREAD_NAME_CHARS - 1] + "…" if len(first) > THREAD_NAME_CHARS else first) or "komt"


def snowflake(value: Any) -> int | None:
    """An id from a delivery record (kept as text: JSON numbers lose a snowflake's low bits elsewhere)."""
    return int(value) if value not in (None, "") else None


@dataclass(frozen=True, slots=True)
class Piece:
    """One message of a reply: its id, its channel, and whether it is edited through the interaction's token."""

    id: int
    channel: int
    on_token: bool = False

    def state(self) -> dict[str, Any]:
        """The piece as JSON data (ids as text)."""
        return {"id": str(self.id), "channel": str(self.channel), "token": self.on_token}

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> Piece:
        """The piece of :meth:`state`."""
        return cls(int(data["id"]), int(data["channel"]), bool(data.get("token", False)))


class DiscordSink:
    """What both sinks share: the pieces posted so far, the Stop button, the budget and metrics.

    Every Discord call goes through :meth:`_spend`: within the budget at the view's priority, counted (a message
    posted or edited, or a platform error), with discord.py's errors raised as komt-bot's (a deleted message as
    :class:`~komt_bot.errors.ReplyGoneError`). A failure a sink gets past is logged with :meth:`_failed`.
    """

    def __init__(
        self,
        client: discord.Client,
        origin_id: int,
        guild_id: int | None,
        budget: PlatformBudget | None,
        metrics: Metrics | None,
    ) -> None:
        self.client = client
        self.origin_id = origin_id
        self.guild_id = guild_id
        self.job_id = origin_job_id(origin_id)  # the job this reply follows: its Stop button carries it
        self.pieces: list[Piece] = []
        self.budget = budget or PlatformBudget({})
        self._metrics = metrics

    def _pieces_state(self) -> list[dict[str, Any]]:
        return [piece.state() for piece in self.pieces]

    def _restore(self, state: Mapping[str, Any]) -> None:
        self.pieces = [Piece.from_state(item) for item in state.get("pieces") or []]

    def _view(self, view: MessageView) -> discord.ui.View | None:
        """The Stop button while the job runs, the feedback buttons on a finished answer; None removes both."""
        if view.active:
            return stop_view(self.job_id)
        return feedback_view(view.feedback) if view.feedback else None

    def _new_view(self, view: MessageView) -> discord.ui.View:
        """The components of a new message (discord.py's MISSING: none)."""
        return self._view(view) or discord.utils.MISSING

    def _added(self, piece: Piece) -> str:
        self.pieces.append(piece)
        return str(len(self.pieces) - 1)

    def _channel(self, channel_id: int) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(channel_id, guild_id=self.guild_id)

    def _message(self, piece: Piece) -> discord.PartialMessage:
        return self._channel(piece.channel).get_partial_message(piece.id)

    async def _spend(self, limit: str, scope: int, priority: Priority, send: Callable[[], Awaitable[T]]) -> T:
        """One Discord call within the budget's ``limit`` for ``scope`` (a channel or an interaction)."""
        try:
            with platform_call(self._metrics, PLATFORM):
                return await self.budget.call(limit, str(scope), priority, send, retry_after=retry_after)
        except discord.NotFound as e:
            raise ReplyGoneError(f"discord: {e.text or e.status}") from e
        except discord.HTTPException as e:
            raise PlatformError(f"discord {e.status}: {e.text}") from e
        except (Throttled, discord.RateLimited) as e:
            raise PlatformError(f"discord: {e}") from e

    def _failed(self, what: str, error: Exception) -> None:
        log.warning("discord: could not %s for %s: %s", what, self.origin_id, error)

    async def _send_after(self, view: MessageView, channel_id: int, previous: Piece | None) -> Piece:
        """Post ``view`` in the channel, as a reply to ``previous`` (when there is one)."""
        channel = self._channel(channel_id)
        reference = (
            channel.get_partial_message(previous.id).to_reference(fail_if_not_exists=False)
            if previous is not None
            else discord.utils.MISSING
        )
        components = self._new_view(view)
        sent = await self._spend(
            "channel",
            channel_id,
            view.priority,
            lambda: channel.send(view.text, view=components, reference=reference),
        )
        return Piece(sent.id, channel_id)

    async def _edit(self, piece: Piece, view: MessageView) -> None:
        message = self._message(piece)
        await self._spend(
            "channel", piece.channel, view.priority, lambda: message.edit(content=view.text, view=self._view(view))
        )


class MessageSink(DiscordSink):
    """The reply to a message: the first piece replies to it, or opens a thread when ``in_thread`` is set."""

    def __init__(
        self,
        client: discord.Client,
        origin: discord.PartialMessage,
        *,
        guild_id: int | None,
        in_thread: bool,
        title: str,
        budget: PlatformBudget | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(client, origin.id, guild_id, budget, metrics)
        self._origin = origin
        self._in_thread = in_thread
        self._title = title

    @classmethod
    def replying_to(
        cls,
        client: discord.Client,
        message: discord.Message,
        *,
        in_thread: bool,
        title: str,
        budget: PlatformBudget | None = None,
        metrics: Metrics | None = None,
    ) -> MessageSink:
        """The sink of a new reply to ``message`` (a thread is opened only in a text channel)."""
        return cls(
            client,
            message,
            guild_id=message.guild.id if message.guild is not None else None,
            in_thread=in_thread and isinstance(message.channel, discord.TextChannel),
            title=title,
            budget=budget,
            metrics=metrics,
        )

    def state(self) -> dict[str, Any]:
        """Where the reply is (the message it answers) and the pieces posted so far, as JSON data."""
        return {
            "kind": "message",
            "channel": str(self._origin.channel.id),
            "guild": str(self.guild_id) if self.guild_id is not None else None,
            "origin": str(self.origin_id),
            "in_thread": self._in_thread,
            "title": self._title,
            "pieces": self._pieces_state(),
        }

    @classmethod
    def resumed(
        cls,
        client: discord.Client,
        state: Mapping[str, Any],
        *,
        budget: PlatformBudget | None = None,
        metrics: Metrics | None = None,
    ) -> MessageSink:
        """The sink of a reply another process began (its :meth:`state`)."""
        guild_id = snowflake(state.get("guild"))
        channel = client.get_partial_messageable(int(state["channel"]), guild_id=guild_id)
        sink = cls(
            client,
            channel.get_partial_message(int(state["origin"])),
            guild_id=guild_id,
            in_thread=bool(state.get("in_thread")),
            title=str(state.get("title") or ""),
            budget=budget,
            metrics=metrics,
        )
        sink._restore(state)
        return sink

    async def post(self, view: MessageView) -> str:
        """Post the next piece of the reply."""
        if self.pieces:
            previous = self.pieces[-1]
            return self._added(await self._send_after(view, previous.channel, previous))
        channel_id = self._origin.channel.id
        # A reply that is only an error (nothing running) stays in place rather than opening a thread.
        if view.active and self._in_thread:
            try:
                return self._added(await self._spend("channel", channel_id, view.priority, self._thread(view)))
            except PlatformError as e:
                self._failed("open a thread", e)
        components = self._new_view(view)
        reply = await self._spend(
            "channel",
            channel_id,
            view.priority,
            lambda: self._origin.reply(view.text, view=components, mention_author=False),
        )
        return self._added(Piece(reply.id, channel_id))

    def _thread(self, view: MessageView) -> Callable[[], Awaitable[Piece]]:
        async def open_and_post() -> Piece:  # the thread and its first message: one post
            try:
                thread = await self._origin.create_thread(name=self._title)
            except ValueError as e:  # a resumed reply's message whose guild is not known yet
                raise PlatformError(f"discord: {e}") from e
            sent = await thread.send(view.text, view=self._new_view(view))
            return Piece(sent.id, thread.id)

        return open_and_post

    async def edit(self, handle: str, view: MessageView) -> None:
        """Replace a piece's text."""
        await self._edit(self.pieces[int(handle)], view)
