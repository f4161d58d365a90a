"""A Discord question's conversation: the reply chain it answers, or the history of its thread.

The bot's own messages become assistant turns (with the writing mark, status lines and placeholders removed);
everyone else's become user turns (with the bot's mention removed). A multi-message answer is one turn again.
An answer to ``/ask`` does not contain its question, so the question is read back from that interaction's job.
The worker's prompt builder drops the oldest turns to fit its token budget; here only ``history_limit`` caps
how many messages are read.
"""

from __future__ import annotations

import logging
import re

import discord

from adapters.discord.control import request_for_origin
from komt_bot import messages
from komt_bot.errors import KomtError
from komt_bot.jobs import Turn
from komt_bot.prompt import merge_turns
from komt_bot.queue import JobQueue

log = logging.getLogger(__name__)

_TEXT_TYPES = (discord.MessageType.default, discord.MessageType.reply, discord.MessageType.chat_input_command)


def question_text(message: discord.Message, me_id: int) -> str:
    """A person's message without the bot's mention; other mentions read as ``@name``."""
    text = re.sub(rf"<@!?{me_id}>", "", message.content)
    for role in message.role_mentions:
        if role.tags is not None and role.tags.bot_id == me_id:
            text = text.replace(f"<@&{role.id}>", "")
    for user in message.mentions:
        if user.id != me_id:
            text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
    return text.strip()


class ConversationReader:
    """Reads the earlier turns of a question asked in a message."""

    def __init__(self, queue: JobQueue, *, history_limit: int) -> None:
        self.queue = queue
        self.history_limit = history_limit

    async def before(self, message: discord.Message, me_id: int) -> list[Turn]:
        """The turns before ``message`` (oldest first): its thread's history, else its reply chain."""
        if self.history_limit <= 0:
            return []
        try:
            if isinstance(message.channel, discord.Thread):
                turns = await self._thread_turns(message.channel, message, me_id)
            elif message.reference is not None:
                turns = await self._chain_turns(message, me_id)
            else:
                return []
        except (discord.HTTPException, KomtError) as e:
            log.warning("could not read the conversation before message %s: %s", message.id, e)
            return []
        return merge_turns(turns)

    async def _chain_turns(self, message: discord.Message, me_id: int) -> list[Turn]:
        chain = await self._chain(message)
        turns: list[Turn] = []
        if chain and chain[0].interaction_metadata is not None and chain[0].author.id == me_id:
            turns += await self._asked(chain[0].interaction_metadata.id)
        return turns + self._turns(chain, me_id)

    async def _chain(self, message: discord.Message) -> list[discord.Message]:
        """The messages ``message`` replies to, transitively, oldest first (stops at an /ask answer)."""
        chain: list[discord.Message] = []
        reference = message.reference
        while reference is not None and len(chain) < self.history_limit:
            parent = await self._resolve(message.channel, reference)
            if parent is None:
                break
            chain.append(parent)
            if parent.interaction_metadata is not None:
                break
            reference = parent.reference
        chain.reverse()
        return chain

    async def _resolve(
        self, channel: discord.abc.MessageableChannel, reference: discord.MessageReference
    ) -> discord.Message | None:
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved
        if reference.message_id is None or reference.channel_id != channel.id:
            return None
        try:
            return await channel.fetch_message(reference.message_id)
        except discord.NotFound:
            return None

    async def _thread_turns(self, thread: discord.Thread, message: discord.Message, me_id: int) -> list[Turn]:
        history = [m async for m in thread.history(limit=self.history_limit, before=message)]
        history.reverse()
        starter = await self._starter(thread) if len(history) < self.history_limit else None
        turns: list[Turn] = []
        for item in [starter, *history] if starter else history:
            if item.author.id == me_id and item.interaction_metadata is not None:
                turns += (await self._asked(item.interaction_metadata.id))[-1:]
            turns += self._turns([item], me_id)
        return turns

    async def _starter(self, thread: discord.Thread) -> discord.Message | None:
        """The message a thread was started from (it has the thread's id, in the parent channel)."""
        if thread.parent is None or not isinstance(thread.parent, discord.TextChannel):
            return None
        try:
            return await thread.parent.fetch_message(thread.id)
        except discord.NotFound:
            return None

    async def _asked(self, interaction_id: int) -> list[Turn]:
        """The conversation an ``/ask`` interaction submitted (ending with its question)."""
        request = await request_for_origin(self.queue, interaction_id)
        return list(request.conversation) if request else []

    @staticmethod
    def _turns(history: list[discord.Message], me_id: int) -> list[Turn]:
        turns: list[Turn] = []
        for item in history:
            if item.type not in _TEXT_TYPES:
                continue
            if item.author.id == me_id:
                text = messages.answer_text(item.content)
                role = "assistant"
            elif item.author.bot:
                continue
            else:
                text = question_text(item, me_id)
                role = "user"
            if text.strip():
                turns.append(Turn(role=role, text=text))
        return turns
