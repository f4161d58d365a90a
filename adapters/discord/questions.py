"""Questions from Discord: mentions, DMs, replies and ``/ask``, each turned into a job and a streamed reply.

Every question goes the same way: allow-lists, the question's own checks, the per-user rate limit, then
:func:`komt_bot.chat.ask.ask` with a reply sink for where it was asked. Everything that goes wrong is said to the
person (Korean first); nothing about a person's message is logged beyond its length. Clicks on Stop and on an
answer's 👍/👎 are answered here too.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from adapters.discord.access import Asker, asker_of_interaction, asker_of_message, is_admin, refusal
from adapters.discord.conversation import ConversationReader, question_text
from adapters.discord.replies import DiscordReplies, Sink
from adapters.discord.sink import PLATFORM, thread_name
from komt_bot import messages
from komt_bot.chat.ask import Refusal, admit, check
from komt_bot.chat.feedback import record_click
from komt_bot.chat.sinks import platform_call
from komt_bot.chat.stop import StopResult, stop_pressed
from komt_bot.chat.tasks import ReplyTasks
from komt_bot.errors import PlatformError
from komt_bot.jobs import JobRequest, Origin, Rating, Turn
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

ALREADY_ENDED = "✅ 이미 끝난 답변입니다 / this answer has already ended"
# What the presser of a Stop button is told privately; a stopped job's reply itself says "stopped".
_STOP_REPLIES: dict[StopResult, str] = {
    "refused": messages.STOP_REFUSED,
    "ended": ALREADY_ENDED,
    "queue_down": messages.QUEUE_DOWN,
}
_QUESTION_TYPES = (discord.MessageType.default, discord.MessageType.reply)


class Questions:
    """Answers the questions one Discord client receives."""

    def __init__(
        self, settings: Settings, queue: JobQueue, client: discord.Client, *, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.metrics = metrics
        self._client = client
        self._reader = ConversationReader(queue, history_limit=settings.discord.history_limit)
        # Each reply runs in discord.py's task for its event (a resumed one in a task of its own); close() cancels them.
        self.tasks = ReplyTasks(PLATFORM)
        self.replies = DiscordReplies(client, queue, settings, spawn=self.tasks.spawn, metrics=metrics)

    def _me(self) -> discord.ClientUser | None:
        return self._client.user

    async def close(self) -> None:
        """Stop answering: cancel the replies in progress, then hand them over to the next process (their jobs go
        on, and it continues them in the messages already posted). Nothing is cancelled for the people asking."""
        await self.replies.stop_leases()
        await self.tasks.close()
        await self.replies.hand_over()

    # -- mentions, DMs, replies -------------------------------------------------------------------------------

    def wants(self, message: discord.Message) -> bool:
        """True when ``message`` is a question for the bot: a DM, a mention, a reply to it, or in its thread."""
        me = self._me()
        if me is None or message.author.bot or message.type not in _QUESTION_TYPES:
            return False
        if self._addressed(message, me.id):
            return True
        resolved = message.reference.resolved if message.reference is not None else None
        if isinstance(resolved, discord.Message) and resolved.author.id == me.id:
            return True
        channel = message.channel
        in_my_thread = isinstance(channel, discord.Thread) and channel.owner_id == me.id
        return self.settings.discord.continue_threads and in_my_thread

    @staticmethod
    def _addressed(message: discord.Message, me_id: int) -> bool:
        """A DM, or a message mentioning the bot (as a user or through its managed role)."""
        if asker_of_message(message).in_dm or any(user.id == me_id for user in message.mentions):
            return True
        return any(role.tags is not None and role.tags.bot_id == me_id for role in message.role_mentions)

    async def on_message(self, message: discord.Message) -> None:
        """Answer a message if it is a question for the bot."""
        me = self._me()
        if me is None or not self.wants(message):
            return
        raw = question_text(message, me.id)
        if not raw and not self._addressed(message, me.id):
            return  # without the message-content intent a plain reply arrives empty: not ours to judge
        log.info("discord: question in channel %s from %s (%d chars)", message.channel.id, message.author.id, len(raw))
        await self.tasks.track(self._answer_message(message, raw, me.id))

    async def _answer_message(self, message: discord.Message, raw: str, me_id: int) -> None:
        asker = asker_of_message(message)
        problem = await self._check(asker, raw)
        if isinstance(problem, str):
            await self._reply_text(message, problem)
            return
        earlier = await self._reader.before(message, me_id)
        thread = message.channel.id if isinstance(message.channel, discord.Thread) else None
        request = self._request(earlier, problem, asker, message.channel.id, message.id, thread)
        in_thread = self.settings.discord.reply_in_thread and thread is None
        sink = self.replies.message_sink(message, in_thread=in_thread, title=thread_name(problem.text))
        await self._ask(request, sink, message.id)

    async def _reply_text(self, message: discord.Message, text: str) -> None:
        try:
            with platform_call(self.metrics, PLATFORM):
                await message.reply(text, mention_author=False)
        except discord.HTTPException as e:
            log.warning("discord: could not reply to message %s: %s", message.id, e)

    # -- /ask -------------------------------------------------------------------------------------------------

    async def on_ask(self, interaction: discord.Interaction[Any], question: str) -> None:
        """Answer ``/ask``: refusals and bad questions privately at once, otherwise defer and stream."""
        log.info(
            "discord: /ask in channel %s from %s (%d chars)", interaction.channel_id, interaction.user.id, len(question)
        )
        asker = asker_of_interaction(interaction)
        problem = self._not_allowed(asker) or check(question, self.settings.limits)
        if isinstance(problem, Refusal):
            self._count(problem.kind)
            await interaction.response.send_message(problem.text, ephemeral=True)
            return
        try:
            deferred = await interaction.response.defer(thinking=True)
        except discord.HTTPException as e:  # already answered (a redelivered interaction) or expired
            log.warning("discord: could not defer interaction %s: %s", interaction.id, e)
            return
        original = deferred.message_id if deferred is not None else None
        await self.tasks.track(self._answer_interaction(interaction, asker, question, original))

    async def _answer_interaction(
        self, interaction: discord.Interaction[Any], asker: Asker, question: str, original: int | None
    ) -> None:
        if original is None:  # Discord did not say which message the deferred response is: ask once
            try:
                original = (await interaction.original_response()).id
            except discord.HTTPException as e:
                log.warning("discord: could not read the response of interaction %s: %s", interaction.id, e)
        sink = self.replies.interaction_sink(interaction, original)
        problem = await self._check(asker, question)
        if isinstance(problem, str):
            try:
                await self.replies.editor(sink).finish(problem)
            except PlatformError as e:
                log.warning("discord: could not answer interaction %s: %s", interaction.id, e)
            return
        request = self._request([], problem, asker, interaction.channel_id, interaction.id, None)
        await self._ask(request, sink, interaction.id)

    # -- shared -----------------------------------------------------------------------------------------------

    def _not_allowed(self, asker: Asker) -> Refusal | None:
        """The refusal when the allow-lists leave this person or place out (or DMs are off), else None."""
        text = refusal(self.settings.discord, asker)
        return Refusal("not_allowed", text) if text is not None else None

    async def _check(self, asker: Asker, raw: str) -> Turn | str:
        """The question as a turn, or what to tell the person instead (not allowed, empty, too long, too often)."""
        question = self._not_allowed(asker) or await admit(
            self.queue, self.settings.limits, f"{PLATFORM}:{asker.user_id}", raw
        )
        if isinstance(question, Refusal):
            self._count(question.kind)
            return question.text
        return Turn(role="user", text=question)

    @staticmethod
    def _request(
        earlier: list[Turn], question: Turn, asker: Asker, channel: int | None, origin: int, thread: int | None
    ) -> JobRequest:
        return JobRequest(
            conversation=[*earlier, question],
            origin=Origin(
                platform=PLATFORM,
                channel=str(channel) if channel is not None else None,
                thread=str(thread) if thread is not None else None,
                message=str(origin),
                user=str(asker.user_id),
            ),
        )

    async def _ask(self, request: JobRequest, sink: Sink, origin: int) -> None:
        outcome = await self.replies.ask(request, sink, origin)
        if outcome is not None:
            self._count(outcome.kind)
            log.info("discord: answer to %s ended: %s (%d chars)", origin, outcome.kind, len(outcome.text))

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(PLATFORM, result).inc()

    # -- Stop -------------------------------------------------------------------------------------------------

    async def stop(self, interaction: discord.Interaction[Any], value: str) -> None:
        """The Stop button (its ``value``, the job id): the person who asked, or an admin, cancels the job."""
        asker = asker_of_interaction(interaction)
        admin = is_admin(self.settings.discord, asker)
        presser = str(asker.user_id)
        result = await stop_pressed(self.queue, value, platform=PLATFORM, presser=presser, admin=admin)
        if result == "stopped":
            await interaction.response.defer()  # the reply itself shows "stopped" once the job ends
        else:
            await interaction.response.send_message(_STOP_REPLIES[result], ephemeral=True)

    # -- feedback ---------------------------------------------------------------------------------------------

    async def rate(self, interaction: discord.Interaction[Any], job_id: str, rating: Rating) -> None:
        """An answer's 👍/👎: recorded on its job (one vote a person), acknowledged privately."""
        person = str(interaction.user.id)
        text = await record_click(self.queue, job_id, person, rating, platform=PLATFORM, metrics=self.metrics)
        try:
            await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as e:  # expired or already answered: the vote is recorded all the same
            log.warning("discord: could not acknowledge feedback on job %s: %s", job_id, e)
