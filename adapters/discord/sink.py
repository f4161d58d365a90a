"""Where a Discord answer is written: reply sinks for a mention and for an ``/ask`` interaction.

Both keep the ``discord.Message`` of every piece they posted, so an edit goes to the right endpoint by itself
(``InteractionMessage`` and ``WebhookMessage`` edit through the interaction's webhook token, a channel message
through the channel). Later pieces are sent as replies to the previous piece, which keeps the answer one reply
chain that a follow-up question can walk back. The Stop button sits under the piece being written; the last piece
of a finished answer gets the 👍/👎 buttons instead (its view's ``feedback``).

Every post and edit spends the process's Discord budget (:func:`discord_budget`): about 5 a 5 s per channel and
per interaction, shared by every open reply, at the priority the editor gave the view. discord.py still paces each
route by Discord's ``X-RateLimit-*`` headers; the budget decides who goes first (first words, then finals) and
skips an intermediate edit rather than queueing it behind the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import discord

from adapters.discord.control import origin_job_id, stop_view
from adapters.discord.feedback import feedback_view
from komt_bot import messages
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
TOKEN_LIFETIME_SECONDS = 15 * 60
# Move off the interaction token a minute early, so the old message can still be edited into a pointer.
TOKEN_MARGIN_SECONDS = 60.0


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


class _Sink:
    """What both sinks share: the pieces posted so far, the Stop button, the budget and metrics.

    Every Discord call goes through :meth:`_spend`: within the budget at the view's priority, counted (a message
    posted or edited, or a platform error), with discord.py's errors raised as komt-bot's (a deleted message as
    :class:`~komt_bot.errors.ReplyGoneError`). A failure a sink gets past is logged with :meth:`_failed`.
    """

    def __init__(self, origin_id: int, budget: PlatformBudget | None, metrics: Metrics | None) -> None:
        self.origin_id = origin_id
        self.job_id = origin_job_id(origin_id)  # the job this reply follows: its Stop button carries it
        self.posted: list[discord.Message] = []
        self.budget = budget or PlatformBudget({})
        self._metrics = metrics

    def _view(self, view: MessageView) -> discord.ui.View | None:
        """The Stop button while the job runs, the feedback buttons on a finished answer; None removes both."""
        if view.active:
            return stop_view(self.job_id)
        return feedback_view(view.feedback) if view.feedback else None

    def _new_view(self, view: MessageView) -> discord.ui.View:
        """The components of a new message (discord.py's MISSING: none)."""
        return self._view(view) or discord.utils.MISSING

    def _added(self, message: discord.Message) -> str:
        self.posted.append(message)
        return str(len(self.posted) - 1)

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

    async def _edit(self, message: discord.Message, view: MessageView) -> None:
        await self._spend(
            "channel",
            message.channel.id,
            view.priority,
            lambda: message.edit(content=view.text, view=self._view(view)),
        )


class MessageSink(_Sink):
    """The reply to a message: the first piece replies to it, or opens a thread when ``in_thread`` is set."""

    def __init__(
        self,
        message: discord.Message,
        *,
        in_thread: bool,
        title: str,
        budget: PlatformBudget | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(message.id, budget, metrics)
        self._message = message
        self._in_thread = in_thread
        self._title = title

    async def post(self, view: MessageView) -> str:
        """Post the next piece of the reply."""
        components = self._new_view(view)
        if self.posted:
            previous = self.posted[-1]
            reference = previous.to_reference(fail_if_not_exists=False)
            sent = await self._spend(
                "channel",
                previous.channel.id,
                view.priority,
                lambda: previous.channel.send(view.text, view=components, reference=reference),
            )
            return self._added(sent)
        # A reply that is only an error (nothing running) stays in place rather than opening a thread.
        if view.active and self._in_thread and isinstance(self._message.channel, discord.TextChannel):
            try:
                return self._added(
                    await self._spend("channel", self._message.channel.id, view.priority, self._thread(view))
                )
            except PlatformError as e:
                self._failed("open a thread", e)
        reply = await self._spend(
            "channel",
            self._message.channel.id,
            view.priority,
            lambda: self._message.reply(view.text, view=components, mention_author=False),
        )
        return self._added(reply)

    def _thread(self, view: MessageView) -> Callable[[], Awaitable[discord.Message]]:
        async def open_and_post() -> discord.Message:  # the thread and its first message: one post
            thread = await self._message.create_thread(name=self._title)
            return await thread.send(view.text, view=self._new_view(view))

        return open_and_post

    async def edit(self, handle: str, view: MessageView) -> None:
        """Replace a piece's text."""
        await self._edit(self.posted[int(handle)], view)


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
        budget: PlatformBudget | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interaction.id, budget, metrics)
        self._interaction = interaction
        self._deadline = interaction.created_at.timestamp() + TOKEN_LIFETIME_SECONDS - TOKEN_MARGIN_SECONDS
        self._clock = clock

    def token_alive(self) -> bool:
        """True while the interaction token may still be used (with a margin)."""
        return self._clock() < self._deadline

    async def post(self, view: MessageView) -> str:
        """Post the next piece: into the original response first, then as further messages."""
        interaction = self._interaction
        if not self.posted and self.token_alive():
            response = await self._spend(
                "interaction",
                interaction.id,
                view.priority,
                lambda: interaction.edit_original_response(content=view.text, view=self._view(view)),
            )
            return self._added(response)
        if not self.posted:
            await self._leave_pointer(None)
        return self._added(await self._send(view, self.posted[-1] if self.posted else None))

    async def edit(self, handle: str, view: MessageView) -> None:
        """Replace a piece's text, moving it to a channel message once the token has expired."""
        index = int(handle)
        message = self.posted[index]
        on_token = isinstance(message, discord.InteractionMessage | discord.WebhookMessage)
        if on_token and not self.token_alive():
            await self._move(index, view)
            return
        if not on_token:
            await self._edit(message, view)
            return
        try:
            await self._spend(
                "interaction",
                self._interaction.id,
                view.priority,
                lambda: message.edit(content=view.text, view=self._view(view)),
            )
        except PlatformError as e:
            if not isinstance(e.__cause__, discord.HTTPException) or e.__cause__.status not in (401, 404):
                raise
            await self._move(index, view)  # the token expired early, or was revoked

    async def _send(self, view: MessageView, previous: discord.Message | None) -> discord.Message:
        channel = self._interaction.channel
        components = self._new_view(view)
        if isinstance(channel, discord.abc.Messageable) and channel.id is not None:
            reference = previous.to_reference(fail_if_not_exists=False) if previous else discord.utils.MISSING
            try:
                return await self._spend(
                    "channel",
                    channel.id,
                    view.priority,
                    lambda: channel.send(view.text, view=components, reference=reference),
                )
            except PlatformError as e:
                if not self.token_alive() or not isinstance(e.__cause__, discord.Forbidden):
                    raise
                self._failed("post in the channel", e)
        return await self._spend(
            "interaction",
            self._interaction.id,
            view.priority,
            lambda: self._interaction.followup.send(view.text, view=components, wait=True),
        )

    async def _move(self, index: int, view: MessageView) -> None:
        """Continue piece ``index`` as a channel message, leaving a pointer in the old one."""
        old = self.posted[index]
        await self._leave_pointer(old)
        self.posted[index] = await self._send(view, old)

    async def _leave_pointer(self, old: discord.Message | None) -> None:
        async def point() -> None:
            if old is None:
                await self._interaction.edit_original_response(content=messages.CONTINUED, view=None)
            else:
                await old.edit(content=messages.CONTINUED, view=None)

        try:
            await self._spend("interaction", self._interaction.id, Priority.FINAL, point)
        except PlatformError as e:
            self._failed("point to the continued answer", e)
