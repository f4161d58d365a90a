"""The sink of an ``/ask`` answer: the interaction's deferred response, then channel messages.

It works through the interaction's webhook (application id and token) and partial channel messages only, so the
sink of a reply another process began (:meth:`InteractionSink.resumed`, from its delivery record) is the same code.
The interaction token lives 15 minutes: a minute before that, or once Discord refuses the token (401, or a 404 that
is not a deleted message), the answer continues as normal channel messages and the old message points to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import discord

from adapters.discord.sink import UNKNOWN_MESSAGE, DiscordSink, Piece, snowflake
from komt_bot import messages
from komt_bot.chat.budget import PlatformBudget, Priority
from komt_bot.chat.editor import MessageView
from komt_bot.errors import PlatformError, ReplyGoneError
from komt_bot.metrics import Metrics

TOKEN_LIFETIME_SECONDS = 15 * 60
# Move off the interaction token a minute early, so the old message can still be edited into a pointer.
TOKEN_MARGIN_SECONDS = 60.0


class InteractionSink(DiscordSink):
    """The answer to an ``/ask`` interaction that was deferred ("thinking").

    The first piece fills the original response (``original``, the deferred message's id); later pieces are
    channel messages (follow-ups where the bot may not post in the channel).
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        application_id: int,
        interaction_id: int,
        token: str,
        channel_id: int | None,
        guild_id: int | None,
        original: int | None,
        budget: PlatformBudget | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, interaction_id, guild_id, budget, metrics)
        self.application_id = application_id
        self.token = token
        self.channel_id = channel_id
        self.original = original
        self.created = discord.utils.snowflake_time(interaction_id).timestamp()
        self._deadline = self.created + TOKEN_LIFETIME_SECONDS - TOKEN_MARGIN_SECONDS
        self._clock = clock
        self._webhook: discord.Webhook | None = None

    @classmethod
    def answering(
        cls,
        client: discord.Client,
        interaction: discord.Interaction[Any],
        original: int | None,
        *,
        budget: PlatformBudget | None = None,
        metrics: Metrics | None = None,
    ) -> InteractionSink:
        """The sink of a new answer to ``interaction``, whose deferred response is the message ``original``."""
        return cls(
            client,
            application_id=interaction.application_id,
            interaction_id=interaction.id,
            token=interaction.token,
            channel_id=interaction.channel_id,
            guild_id=interaction.guild_id,
            original=original,
            budget=budget,
            metrics=metrics,
        )

    def state(self) -> dict[str, Any]:
        """The interaction (application, id, token, when it was created), its channel, and the pieces posted."""
        return {
            "kind": "interaction",
            "application": str(self.application_id),
            "interaction": str(self.origin_id),
            "token": self.token,
            "created": self.created,
            "channel": str(self.channel_id) if self.channel_id is not None else None,
            "guild": str(self.guild_id) if self.guild_id is not None else None,
            "original": str(self.original) if self.original is not None else None,
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
    ) -> InteractionSink:
        """The sink of an answer another process began (its :meth:`state`)."""
        sink = cls(
            client,
            application_id=int(state["application"]),
            interaction_id=int(state["interaction"]),
            token=str(state["token"]),
            channel_id=snowflake(state.get("channel")),
            guild_id=snowflake(state.get("guild")),
            original=snowflake(state.get("original")),
            budget=budget,
            metrics=metrics,
        )
        sink._restore(state)
        return sink

    @property
    def webhook(self) -> discord.Webhook:
        """The interaction's webhook: edits and follow-ups under its token."""
        if self._webhook is None:
            self._webhook = discord.Webhook.partial(self.application_id, self.token, client=self.client)
        return self._webhook

    def token_alive(self) -> bool:
        """True while the interaction token may still be used (with a margin)."""
        return self._clock() < self._deadline

    async def post(self, view: MessageView) -> str:
        """Post the next piece: into the original response first, then as further messages."""
        if not self.pieces and self.original is not None and self.token_alive():
            await self._token_edit(self.original, view)
            return self._added(Piece(self.original, self.channel_id or 0, on_token=True))
        if not self.pieces:
            await self._leave_pointer(self.original)
        return self._added(await self._send(view, self.pieces[-1] if self.pieces else None))

    async def edit(self, handle: str, view: MessageView) -> None:
        """Replace a piece's text, moving it to a channel message once the token has expired."""
        index = int(handle)
        piece = self.pieces[index]
        if not piece.on_token:
            await self._edit(piece, view)
            return
        if not self.token_alive():
            await self._move(index, view)
            return
        try:
            await self._token_edit(piece.id, view)
        except ReplyGoneError as e:
            if _code(e) == UNKNOWN_MESSAGE:
                raise  # a person deleted it
            await self._move(index, view)  # the token expired early, or was revoked
        except PlatformError as e:
            if _status(e) != 401:
                raise
            await self._move(index, view)

    async def _token_edit(self, message_id: int, view: MessageView) -> None:
        await self._spend(
            "interaction",
            self.origin_id,
            view.priority,
            lambda: self.webhook.edit_message(message_id, content=view.text, view=self._view(view)),
        )

    async def _send(self, view: MessageView, previous: Piece | None) -> Piece:
        if self.channel_id is not None:
            try:
                return await self._send_after(view, self.channel_id, previous)
            except PlatformError as e:
                if not self.token_alive() or not isinstance(e.__cause__, discord.Forbidden):
                    raise
                self._failed("post in the channel", e)
        components = self._new_view(view)
        sent = await self._spend(
            "interaction",
            self.origin_id,
            view.priority,
            lambda: self.webhook.send(view.text, view=components, wait=True),
        )
        return Piece(sent.id, sent.channel.id, on_token=True)

    async def _move(self, index: int, view: MessageView) -> None:
        """Continue piece ``index`` as a channel message, leaving a pointer in the old one."""
        old = self.pieces[index]
        await self._leave_pointer(old.id)
        new = await self._send(view, old)
        self.pieces[index] = new

    async def _leave_pointer(self, message_id: int | None) -> None:
        if message_id is None:
            return

        async def point() -> None:
            await self.webhook.edit_message(message_id, content=messages.CONTINUED, view=None)

        try:
            await self._spend("interaction", self.origin_id, Priority.FINAL, point)
        except PlatformError as e:
            self._failed("point to the continued answer", e)


def _status(error: PlatformError) -> int | None:
    cause = error.__cause__
    return cause.status if isinstance(cause, discord.HTTPException) else None


def _code(error: PlatformError) -> int | None:
    cause = error.__cause__
    return cause.code if isinstance(cause, discord.HTTPException) else None
