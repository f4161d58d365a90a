"""What komt-bot does with a Slack question: dedupe, allow-lists, checks, the thread's conversation, the answer.

Every delivery of one message (Slack's retries, an ``app_mention`` and a ``message`` event for the same words, two
adapter replicas) has the same key, the team, channel and ``ts`` of the message. The first delivery claims the
key in Redis (``{prefix}:slack:seen:{key}``) and owns the reply; the others do nothing. The same key, prefixed
``slack:``, is the job's idempotency key, and the job id is the one it stands for, known before the job is
submitted: the Stop and 👍/👎 buttons carry it, so a press finds its job whichever replica posted the button.
Threads the bot has replied in are remembered in ``{prefix}:slack:thread:...`` so a reply there continues the
conversation without a new mention.

Every refusal and failure is told to the person: in the thread (empty, too long, rate limited, busy, queue
down, worker errors), or privately (not allowed here, a Stop pressed by someone else). A click on an answer's
feedback buttons is recorded on its job and acknowledged privately.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.assistant import AssistantThread, suggest_prompts
from adapters.slack.events import (
    QUESTION_MARK,
    SlackQuestion,
    escape,
    plain_text,
    thread_conversation,
)
from adapters.slack.feedback import FeedbackClick
from adapters.slack.replies import SlackReplies
from adapters.slack.sink import PLATFORM, ReplyTarget, slack_size
from komt_bot import messages
from komt_bot.chat.ask import Refusal, admit
from komt_bot.chat.deliveries import Deliveries
from komt_bot.chat.editor import ReplyEditor, split_text
from komt_bot.chat.feedback import record_click
from komt_bot.chat.stop import StopResult, stop_pressed
from komt_bot.errors import QueueError
from komt_bot.jobs import JobRequest, Origin, Turn, job_id_for_key
from komt_bot.metrics import Metrics, count_platform_error
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

THREAD_MEMORY_SECONDS = 7 * 86_400
HISTORY_PAGE_SIZE = 200
HISTORY_MAX_PAGES = 5
NOT_IN_CHANNEL = "🙈 komt-bot이 이 채널에 없습니다. 먼저 초대해 주세요 / invite komt-bot to this channel first"
# What the presser of a Stop button is told privately; a stopped job's reply says "stopped", an ended one nothing.
_STOP_REPLIES: dict[StopResult, str] = {"refused": messages.STOP_REFUSED, "queue_down": messages.QUEUE_DOWN}


def _target(channel: str, thread_ts: str, user: str, team: str | None, question: str) -> ReplyTarget:
    """Where the reply to the question keyed ``question`` goes, and the job it will follow."""
    key = f"{PLATFORM}:{question}"
    return ReplyTarget(channel, thread_ts, user, team, key=key, job_id=job_id_for_key(key))


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot is in the workspace (from ``auth.test``)."""

    user_id: str
    bot_id: str | None
    team_id: str | None


class SlackResponder:
    """Turns parsed Slack questions, slash commands and Stop presses into queue jobs and replies."""

    def __init__(
        self,
        client: AsyncWebClient,
        queue: JobQueue,
        settings: Settings,
        identity: BotIdentity,
        *,
        metrics: Metrics | None = None,
        replies: SlackReplies,
    ) -> None:
        self.client = client
        self.queue = queue
        self.settings = settings
        self.config = settings.slack
        self.identity = identity
        self.metrics = metrics
        self.replies = replies
        self.deliveries = Deliveries(queue, PLATFORM)

    # -- what to answer ----------------------------------------------------------------------------------------

    async def addressed(self, question: SlackQuestion) -> bool:
        """Whether a message asks the bot: a DM, a mention, or a reply in a thread the bot is in."""
        if question.is_dm or question.mentions_bot:
            return True
        return question.in_thread and self.config.continue_threads and await self._in_thread(question)

    def refusal(self, *, channel: str, user: str, is_dm: bool) -> str | None:
        """The message for a person or place the allow-lists leave out, else None."""
        if is_dm and not self.config.allow_dms:
            return messages.DMS_OFF
        if not is_dm and self.config.allowed_channels and channel not in self.config.allowed_channels:
            return messages.NOT_ALLOWED
        if self.config.allowed_users and user not in self.config.allowed_users:
            return messages.NOT_ALLOWED
        return None

    # -- mentions, DMs, thread replies -------------------------------------------------------------------------

    async def answer(self, question: SlackQuestion, *, assistant: bool = False) -> None:
        """Answer a message in its thread (once, however often Slack delivers it).

        In an assistant thread (``assistant``) the thread's status line follows the question until the answer is
        complete, and the thread is titled after its first question.
        """
        q = question
        target = _target(q.channel, q.thread_ts, q.user, q.team, q.key)
        thread = AssistantThread(self.client, q.channel, q.thread_ts, metrics=self.metrics) if assistant else None
        async with self.replies.reply(target, thread) as editor:
            if not await self._claim(q.key, editor):
                return
            refusal = self.refusal(channel=q.channel, user=q.user, is_dm=q.is_dm)
            if refusal is not None:
                if q.is_dm or q.mentions_bot:
                    await self._ephemeral(q.channel, q.user, q.thread_ts, refusal)
                self._count("not_allowed")
                return
            try:
                if thread is not None:
                    await thread.show(messages.THINKING)
                text = await self._checked(q.text, q.user, editor)
                if text is None:
                    return
                history = await self._history(q)
                if thread is not None and not any(turn.role == "user" for turn in history):
                    await thread.title(text)
                await self._ask(target, [*history, Turn(role="user", text=text)], editor, message_ts=q.ts)
            finally:
                if thread is not None:
                    await thread.clear()

    async def suggest(self, user: str, channel: str, thread_ts: str) -> None:
        """A new assistant thread: offer the suggested prompts (not to people the allow-lists leave out)."""
        if self.refusal(channel=channel, user=user, is_dm=True) is None:
            await suggest_prompts(self.client, channel, thread_ts, self.config.suggested_prompts, metrics=self.metrics)

    # -- /komt ---------------------------------------------------------------------------------------------------

    async def answer_command(self, command: dict[str, Any], respond: AsyncRespond) -> None:
        """Answer ``/komt question``: show the question in the channel and answer in its thread."""
        user, channel = str(command.get("user_id") or ""), str(command.get("channel_id") or "")
        team = str(command.get("team_id") or "") or self.identity.team_id
        refusal = self.refusal(channel=channel, user=user, is_dm=channel.startswith("D"))
        if refusal is not None:
            self._count("not_allowed")
            await self._respond(respond, refusal)
            return
        text = await admit(self.queue, self.settings.limits, user, plain_text(str(command.get("text") or ""), None))
        if isinstance(text, Refusal):
            self._count(text.kind)
            await self._respond(respond, text.text)
            return
        root = await self._post_question(channel, user, text, respond)
        if root is None:
            return
        target = _target(channel, root, user, team, f"{team or '-'}:{channel}:{root}")
        async with self.replies.reply(target) as editor:
            await self._ask(target, [Turn(role="user", text=text)], editor, message_ts=root)

    async def _post_question(self, channel: str, user: str, text: str, respond: AsyncRespond) -> str | None:
        head = f"{QUESTION_MARK} <@{user}>: "
        shown = split_text(text, self.config.max_message_bytes - slack_size(head) - 10, slack_size)
        body = shown[0] + ("…" if len(shown) > 1 else "")
        try:
            response = await self.client.chat_postMessage(channel=channel, text=head + escape(body))
        except SlackApiError as e:
            log.warning("slack /komt: cannot post in %s: %s", channel, e.response.get("error"))
            self._count("slack_error")
            await self._respond(respond, NOT_IN_CHANNEL)
            return None
        return str(response["ts"])

    # -- Stop --------------------------------------------------------------------------------------------------

    async def stop(self, *, presser: str, value: str, channel: str | None, thread_ts: str | None) -> None:
        """Cancel the job behind a Stop button (its ``value``), if the presser asked the question or is an admin.

        A stopped job's reply says so itself; a refusal or an unreachable queue is told to the presser privately.
        """
        admin = presser in self.config.admin_users
        result = await stop_pressed(self.queue, value, platform=PLATFORM, presser=presser, admin=admin)
        text = _STOP_REPLIES.get(result)
        if text is not None and channel:
            await self._ephemeral(channel, presser, thread_ts, text)

    # -- feedback ------------------------------------------------------------------------------------------------

    async def feedback(self, click: FeedbackClick) -> None:
        """Record a click on an answer's 👍/👎 and acknowledge it privately (an expired answer politely)."""
        text = await record_click(
            self.queue, click.job_id, click.person, click.rating, platform=PLATFORM, metrics=self.metrics
        )
        if click.channel:
            await self._ephemeral(click.channel, click.person, click.thread_ts, text)

    # -- the shared path -------------------------------------------------------------------------------------

    async def _ask(
        self, target: ReplyTarget, conversation: list[Turn], editor: ReplyEditor, *, message_ts: str
    ) -> None:
        origin = Origin(
            platform=PLATFORM, channel=target.channel, thread=target.thread_ts, message=message_ts, user=target.user
        )
        await self._remember_thread(target.channel, target.thread_ts)
        request = JobRequest(conversation=conversation, origin=origin)
        outcome = await self.replies.ask(target, request, editor)
        self._count(outcome.kind)
        log.info("slack reply in %s: job %s %s", target.channel, outcome.job_id, outcome.kind)

    async def _checked(self, text: str, user: str, editor: ReplyEditor) -> str | None:
        """The question ready to ask, or None after telling the person why not (empty, too long, too often)."""
        question = await admit(self.queue, self.settings.limits, user, text)
        if isinstance(question, Refusal):
            self._count(question.kind)
            await editor.finish(question.text)
            return None
        return question

    async def _history(self, question: SlackQuestion) -> list[Turn]:
        """The thread before the question, as turns; empty outside threads or when Slack will not say."""
        if not question.in_thread or self.config.history_limit == 0:
            return []
        replies: list[dict[str, Any]] = []
        cursor: str | None = None
        try:
            for _ in range(HISTORY_MAX_PAGES):
                response = await self.client.conversations_replies(
                    channel=question.channel, ts=question.thread_ts, limit=HISTORY_PAGE_SIZE, cursor=cursor
                )
                replies.extend(response.get("messages") or [])
                cursor = (response.get("response_metadata") or {}).get("next_cursor")
                if not cursor or not response.get("has_more"):
                    break
        except SlackApiError as e:
            # Better an answer without the earlier turns than none.
            log.warning("slack: cannot read thread %s: %s", question.thread_ts, e.response.get("error"))
            count_platform_error(self.metrics, PLATFORM, e)
        return thread_conversation(
            replies,
            before_ts=question.ts,
            bot_user_id=self.identity.user_id,
            bot_id=self.identity.bot_id,
            max_messages=self.config.history_limit,
        )

    # -- Redis bookkeeping ------------------------------------------------------------------------------------

    async def _claim(self, key: str, editor: ReplyEditor) -> bool:
        """True for the first delivery of a message; False for a redelivery (or with Redis down, after saying so)."""
        try:
            return await self.deliveries.first(key)
        except QueueError as e:
            log.warning("slack: cannot reach Redis: %s", e)
            self._count("queue_down")
            await editor.finish(messages.QUEUE_DOWN)
            return False

    async def _in_thread(self, question: SlackQuestion) -> bool:
        try:
            return await self.queue.remembered(PLATFORM, "thread", question.channel, question.thread_ts)
        except QueueError as e:
            log.warning("slack: cannot reach Redis: %s", e)
            return False

    async def _remember_thread(self, channel: str, thread_ts: str) -> None:
        with contextlib.suppress(QueueError):
            await self.queue.remember(PLATFORM, "thread", channel, thread_ts, ttl=THREAD_MEMORY_SECONDS)

    # -- small Slack calls -------------------------------------------------------------------------------------

    async def _ephemeral(self, channel: str, user: str, thread_ts: str | None, text: str) -> None:
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, text=escape(text))
        except SlackApiError as e:
            log.warning("slack: cannot tell %s privately in %s: %s", user, channel, e.response.get("error"))
            count_platform_error(self.metrics, PLATFORM, e)

    async def _respond(self, respond: AsyncRespond, text: str) -> None:
        try:
            await respond(text=escape(text), response_type="ephemeral")
        except Exception as e:  # response_url calls raise plain aiohttp errors, not SlackApiError
            log.warning("slack: cannot answer a slash command: %s", type(e).__name__)
            count_platform_error(self.metrics, PLATFORM, e)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(platform=PLATFORM, result=result).inc()
