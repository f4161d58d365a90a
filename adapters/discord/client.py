"""The discord.py client of komt-bot: intents, the ``/ask`` command, its sync, and the event hooks."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from adapters.discord.control import StopButton
from adapters.discord.feedback import FeedbackButton
from adapters.discord.questions import Questions
from komt_bot.jobs import Rating
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

ASK_DESCRIPTION = "komt에게 질문하기 / ask komt"
QUESTION_DESCRIPTION = "질문 / your question"


def bot_intents(*, message_content: bool) -> discord.Intents:
    """Guild messages and DMs; the privileged message-content intent only when asked for."""
    intents = discord.Intents.default()
    intents.message_content = message_content
    return intents


def ask_command(questions: Questions) -> app_commands.Command[Any, Any, None]:
    """The ``/ask question:<text>`` slash command."""

    @app_commands.command(name="ask", description=ASK_DESCRIPTION)
    @app_commands.describe(question=QUESTION_DESCRIPTION)
    async def ask(interaction: discord.Interaction[Any], question: str) -> None:
        await questions.on_ask(interaction, question)

    return ask


class KomtDiscord(discord.Client):
    """A Discord client that answers mentions, DMs, replies and ``/ask`` through the job queue."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        *,
        message_content: bool,
        metrics: Metrics | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            intents=bot_intents(message_content=message_content),
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.settings = settings
        self.message_content = message_content
        self.questions = Questions(settings, queue, self, metrics=metrics)
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        """Register ``/ask``, the Stop and feedback buttons, sync the command (to the test guilds when listed), and
        start holding replies: this bot's replies left by a process that went away are resumed from now on."""
        self.tree.add_command(ask_command(self.questions))
        self.add_dynamic_items(StopButton, FeedbackButton)
        guild_ids = self.settings.discord.guild_ids
        for guild_id in guild_ids:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        if not guild_ids:
            await self.tree.sync()
        log.info("discord: /ask synced %s", f"to guilds {guild_ids}" if guild_ids else "globally")
        if self.application_id is not None:  # known once logged in, which is before this hook
            self.questions.replies.start(self.application_id)

    # No on_ready: discord.py dispatches "ready" from a task that outlives close(), and a handler scheduled
    # after close() is a coroutine that never runs.
    async def on_connect(self) -> None:
        """Log who the bot is once the gateway accepted it."""
        log.info("discord: connected as %s (%s)", self.user, self.user and self.user.id)

    async def on_message(self, message: discord.Message) -> None:
        """Answer the message if it is a question for the bot."""
        await self.questions.on_message(message)

    async def stop_reply(self, interaction: discord.Interaction[Any], value: str) -> None:
        """Handle a Stop button click."""
        await self.questions.stop(interaction, value)

    async def rate_answer(self, interaction: discord.Interaction[Any], job_id: str, rating: Rating) -> None:
        """Handle a click on an answer's 👍/👎."""
        await self.questions.rate(interaction, job_id, rating)

    async def close(self) -> None:
        """Hand the replies in progress over to the next process (their jobs go on), then disconnect."""
        await self.questions.close()
        await super().close()

    def heartbeat_status(self) -> dict[str, Any]:
        """What the adapter's heartbeat record says about the connection."""
        return {
            "user": str(self.user) if self.user else None,
            "ready": self.is_ready(),
            "guilds": len(self.guilds),
            "latency_ms": round(self.latency * 1000, 1) if self.latency != float("inf") else None,
            "message_content": self.message_content,
            "replies_in_progress": len(self.questions.tasks),
            "replies": len(self.questions.replies),
        }
