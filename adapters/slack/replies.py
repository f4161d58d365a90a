"""Writing Slack replies: one budget for the workspace, and replies that outlive the process that began them.

:class:`SlackReplies` makes each reply's sink and editor, asks the question through :func:`komt_bot.chat.ask.ask`
with a delivery record (:mod:`komt_bot.chat.handover`), and resumes the replies of a process that went away: the
sink is rebuilt from the record, the messages already in the thread are edited, never posted again. A reply
cancelled by a shutdown leaves its job running and its messages as they are, for the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.assistant import AssistantThread
from adapters.slack.calls import SlackCalls, slack_budget
from adapters.slack.sink import PLATFORM, ReplyTarget, SlackSink, StreamingGate, reply_limits
from komt_bot.chat.ask import Outcome, ask, resume
from komt_bot.chat.editor import ReplyEditor
from komt_bot.chat.handover import OpenReplies
from komt_bot.errors import JobNotFoundError, KomtError, PlatformError
from komt_bot.jobs import DeliveryRecord, JobRequest
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

MIN_RESUME_SECONDS = 60.0  # a resumed reply follows its job at least this long, whatever its age


class SlackReplies:
    """The replies of one Slack app in its workspace (``team``)."""

    def __init__(
        self,
        client: AsyncWebClient,
        queue: JobQueue,
        settings: Settings,
        *,
        bot: str,
        team: str | None,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        metrics: Metrics | None = None,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.streaming = StreamingGate(settings.slack.native_streaming)
        self.budget = slack_budget(settings.slack.limits)
        self.calls = SlackCalls(client, self.budget, team, metrics=metrics)
        self.open = OpenReplies(queue, PLATFORM, bot, resume=self.resume, spawn=spawn, metrics=metrics)
        if metrics is not None:
            metrics.watch_budget(PLATFORM, self.budget)

    def editor(self, sink: SlackSink) -> ReplyEditor:
        """An editor for a reply in this workspace."""
        return ReplyEditor(sink, reply_limits(self.settings.slack.max_message_bytes), budget=self.budget)

    @contextlib.asynccontextmanager
    async def reply(self, target: ReplyTarget, assistant: AssistantThread | None = None) -> AsyncIterator[ReplyEditor]:
        """A new reply in ``target``'s thread; closed (streams stopped, the Stop holder removed) when it ends.

        A reply nothing could be shown of stops its job, so no worker writes an answer nobody can see. A reply
        cancelled by a shutdown is left as it is: the process that resumes it closes it.
        """
        sink = SlackSink(self.calls, target, streaming=self.streaming, assistant=assistant)
        editor = self.editor(sink)
        try:
            yield editor
        except PlatformError as e:
            log.warning("slack reply in %s failed: %s", target.channel, e)
            with contextlib.suppress(KomtError):
                await self.queue.cancel(target.job_id)
            raise
        await sink.close()  # not on CancelledError: a shutdown leaves the reply as it is for its successor

    async def ask(self, target: ReplyTarget, request: JobRequest, editor: ReplyEditor) -> Outcome:
        """Submit the question and write its answer, with a delivery record another process can finish from."""
        sink = editor.sink
        assert isinstance(sink, SlackSink)
        return await ask(
            self.queue,
            request,
            editor,
            idempotency_key=target.key,
            timeout_seconds=self.settings.queue.job_timeout_seconds,
            job_id=target.job_id,
            recorder=self.open.recorder(target.job_id, sink, editor),
        )

    async def resume(self, record: DeliveryRecord) -> None:
        """Finish a reply another process began, in the messages it posted."""
        sink = SlackSink.resumed(self.calls, record.place, streaming=self.streaming)
        editor = self.editor(sink)
        editor.restore(record.messages)
        recorder = self.open.recorder(record.job_id, sink, editor)
        recorder.adopt(record)
        age = max(0.0, time.time() - record.created)
        timeout = max(MIN_RESUME_SECONDS, self.settings.queue.job_timeout_seconds - age)
        try:
            await self.queue.job(record.job_id)
        except JobNotFoundError:
            log.info("slack: the job of a reply to resume (%s) is gone: dropping the reply", record.job_id)
            await recorder.end()
            return
        outcome = await resume(self.queue, record.job_id, editor, timeout_seconds=timeout, recorder=recorder)
        if outcome.kind != "handed_over":
            await sink.close()
        log.info("slack reply in %s resumed: job %s %s", sink.target.channel, record.job_id, outcome.kind)
