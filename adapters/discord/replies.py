"""Writing Discord answers: one budget for the bot, and replies that outlive the process that began them.

:class:`DiscordReplies` makes each reply's editor, asks the question through :func:`komt_bot.chat.ask.ask` with a
delivery record (:mod:`komt_bot.chat.handover`), and resumes the replies of a process that went away: the sink is
rebuilt from the record (:meth:`MessageSink.resumed`, :meth:`InteractionSink.resumed`) and the messages already in
the channel are edited, never posted again. A reply cancelled by a shutdown leaves its job running and its messages
as they are, for the next process; a reply nothing could be shown of stops its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import discord

from adapters.discord.control import idempotency_key, origin_job_id
from adapters.discord.interaction import InteractionSink
from adapters.discord.sink import PLATFORM, MessageSink, discord_budget, discord_limits
from komt_bot.chat.ask import Outcome, ask, resume
from komt_bot.chat.editor import ReplyEditor
from komt_bot.chat.handover import OpenReplies, ReplyRecorder
from komt_bot.errors import JobNotFoundError, KomtError, PlatformError
from komt_bot.jobs import DeliveryRecord, JobRequest
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

MIN_RESUME_SECONDS = 60.0  # a resumed reply follows its job at least this long, whatever its age

Sink = MessageSink | InteractionSink


class DiscordReplies:
    """The replies of one Discord bot: its budget, its editors, and its open replies' delivery records."""

    def __init__(
        self,
        client: discord.Client,
        queue: JobQueue,
        settings: Settings,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        metrics: Metrics | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.settings = settings
        self.metrics = metrics
        self.budget = discord_budget(settings.discord.limits)  # shared by every reply of this bot
        if metrics is not None:
            metrics.watch_budget(PLATFORM, self.budget)
        self.open: OpenReplies | None = None  # once the bot is logged in (its application id names the bot)
        self._spawn = spawn
        self._leases: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """How many replies this process holds."""
        return len(self.open) if self.open is not None else 0

    def start(self, application_id: int) -> None:
        """Hold this process's replies and resume the bot's lapsed ones, from now until :meth:`hand_over`."""
        if self.open is not None:
            return
        self.open = OpenReplies(
            self.queue, PLATFORM, str(application_id), resume=self.resume, spawn=self._spawn, metrics=self.metrics
        )
        self._leases = asyncio.create_task(self.open.run(), name="discord-replies")

    async def stop_leases(self) -> None:
        """Stop renewing and claiming (the first step of a shutdown)."""
        if self._leases is not None:
            self._leases.cancel()
            await asyncio.gather(self._leases, return_exceptions=True)
            self._leases = None

    async def hand_over(self) -> None:
        """Let every reply this process holds go at once (after its reply tasks were cancelled)."""
        if self.open is not None:
            await self.open.hand_over()

    # -- sinks and editors -------------------------------------------------------------------------------------

    def editor(self, sink: Sink) -> ReplyEditor:
        """An editor for a reply of this bot."""
        return ReplyEditor(sink, discord_limits(), budget=self.budget)

    def message_sink(self, message: discord.Message, *, in_thread: bool, title: str) -> MessageSink:
        """The sink of a new reply to ``message``."""
        return MessageSink.replying_to(
            self.client, message, in_thread=in_thread, title=title, budget=self.budget, metrics=self.metrics
        )

    def interaction_sink(self, interaction: discord.Interaction[Any], original: int | None) -> InteractionSink:
        """The sink of a new answer to a deferred ``/ask`` (``original``: its deferred response's message id)."""
        return InteractionSink.answering(self.client, interaction, original, budget=self.budget, metrics=self.metrics)

    def resumed_sink(self, place: dict[str, Any]) -> Sink:
        """The sink of a reply another process began, from its record's place."""
        if place.get("kind") == "message":
            return MessageSink.resumed(self.client, place, budget=self.budget, metrics=self.metrics)
        return InteractionSink.resumed(self.client, place, budget=self.budget, metrics=self.metrics)

    # -- asking and resuming -----------------------------------------------------------------------------------

    async def ask(self, request: JobRequest, sink: Sink, origin: int) -> Outcome | None:
        """Submit the question of ``origin`` (a message or an interaction) and write its answer, with a delivery
        record another process can finish from. None when nothing could be shown (its job is stopped)."""
        editor = self.editor(sink)
        job_id = origin_job_id(origin)
        recorder = self.open.recorder(job_id, sink, editor) if self.open is not None else None
        try:
            return await ask(
                self.queue,
                request,
                editor,
                idempotency_key=idempotency_key(origin),
                timeout_seconds=self.settings.queue.job_timeout_seconds,
                job_id=job_id,
                recorder=recorder,
            )
        except PlatformError as e:  # already counted by the sink's platform_call
            log.warning("discord: lost the reply to %s (%s); stopping its job", origin, e)
            await self._abandon(job_id, recorder)
            return None

    async def resume(self, record: DeliveryRecord) -> None:
        """Finish a reply another process began, in the messages it posted."""
        sink = self.resumed_sink(record.place)
        editor = self.editor(sink)
        editor.restore(record.messages)
        assert self.open is not None, "replies are claimed only once started"
        recorder = self.open.recorder(record.job_id, sink, editor)
        recorder.adopt(record)
        try:
            await self.queue.job(record.job_id)
        except JobNotFoundError:
            log.info("discord: the job of a reply to resume (%s) is gone: dropping the reply", record.job_id)
            await recorder.end()
            return
        age = max(0.0, time.time() - record.created)
        timeout = max(MIN_RESUME_SECONDS, self.settings.queue.job_timeout_seconds - age)
        try:
            outcome = await resume(self.queue, record.job_id, editor, timeout_seconds=timeout, recorder=recorder)
        except PlatformError as e:
            log.warning("discord: lost the resumed reply to job %s (%s); stopping its job", record.job_id, e)
            await self._abandon(record.job_id, recorder)
            return
        log.info("discord: reply to job %s resumed: %s (%d chars)", record.job_id, outcome.kind, len(outcome.text))

    async def _abandon(self, job_id: str, recorder: ReplyRecorder | None) -> None:
        """Nothing of the reply can be shown: stop its job, so no worker writes an answer nobody sees."""
        with contextlib.suppress(KomtError):  # JobNotFoundError: never submitted
            await self.queue.cancel(job_id)
        if recorder is not None:
            await recorder.end()
