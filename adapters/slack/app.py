"""komt-bot in Slack (``komt-bot slack``): a slack-bolt AsyncApp over Socket Mode or the HTTP Events API.

Socket Mode when ``KOMT_SLACK__APP_TOKEN`` is set (no public URL needed); otherwise the Events API on
``KOMT_SLACK__PORT`` at ``/slack/events``, signed with ``KOMT_SLACK__SIGNING_SECRET``. Every Web API call,
Socket Mode's ``apps.connections.open`` included, goes to ``KOMT_SLACK__API_URL`` and is retried on rate limits.
What is answered and how lives in :mod:`adapters.slack.responder`; the reply itself in :mod:`adapters.slack.sink`.
Assistant threads (Slack's AI-app view) go through Bolt's ``AsyncAssistant`` middleware to the same responder
(:mod:`adapters.slack.assistant`); channel mentions, DMs and ``/komt`` are unchanged by it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.assistant import started_thread
from adapters.slack.events import parse_message
from adapters.slack.feedback import FEEDBACK_ACTION_ID, parse_click
from adapters.slack.http import EventsServer
from adapters.slack.replies import SlackReplies
from adapters.slack.responder import BotIdentity, SlackResponder
from adapters.slack.sink import STOP_ACTION_ID
from komt_bot.chat.presence import adapter_presence
from komt_bot.chat.tasks import ReplyTasks
from komt_bot.errors import ConfigError, KomtError
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 1.0  # short tasks (a Stop press, a click) finish; open replies are handed over
RATE_LIMIT_RETRIES = 3


class CountedRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry (it waits ``Retry-After``), counting each rate-limit answer in the metrics."""

    def __init__(self, metrics: Metrics | None) -> None:
        super().__init__(max_retry_count=RATE_LIMIT_RETRIES)
        self.metrics = metrics

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        limited = await super()._can_retry_async(state=state, request=request, response=response, error=error)
        if limited and self.metrics is not None:
            self.metrics.rate_limited.labels(platform="slack").inc()
        return limited


class SlackAdapter:
    """The running Slack adapter: Web API client, Bolt app, and the Socket Mode or HTTP connection."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        *,
        metrics: Metrics | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        self.settings = settings
        self.shutdown_grace = shutdown_grace
        self.config = settings.slack
        self.queue = queue
        self.metrics = metrics
        self.mode: Literal["socket", "http"] = "socket" if self.config.app_token is not None else "http"
        self.port: int | None = None
        self.responder: SlackResponder | None = None
        self._session: aiohttp.ClientSession | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._http: EventsServer | None = None
        self._replies = ReplyTasks("slack")  # Bolt's own tasks are fire-and-forget: shutdown waits for these
        self.replies: SlackReplies | None = None
        self._leases: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the token with ``auth.test``, then connect (Socket Mode) or listen (HTTP)."""
        bot_token = _secret(self.config.bot_token, "KOMT_SLACK__BOT_TOKEN")
        if self.mode == "http":
            _secret(self.config.signing_secret, "KOMT_SLACK__SIGNING_SECRET (or set KOMT_SLACK__APP_TOKEN)")
        self._session = aiohttp.ClientSession()
        try:
            client = AsyncWebClient(
                token=bot_token,
                base_url=self.config.api_url,
                session=self._session,
                retry_handlers=self._retry_handlers(),
            )
            identity = await _identity(client, self.config.api_url)
            reply_client = AsyncWebClient(
                token=bot_token,
                base_url=self.config.api_url,
                session=self._session,
                retry_handlers=[AsyncConnectionErrorRetryHandler()],  # 429s: the replies' shared budget
            )
            self.replies = SlackReplies(
                reply_client,
                self.queue,
                self.settings,
                bot=f"{identity.team_id or '-'}:{identity.user_id}",
                team=identity.team_id,
                spawn=self._replies.spawn,
                metrics=self.metrics,
            )
            self.responder = SlackResponder(
                client, self.queue, self.settings, identity, metrics=self.metrics, replies=self.replies
            )
            self._leases = asyncio.create_task(self.replies.open.run(), name="slack-replies")
            await self._connect(self._bolt_app(client))
        except BaseException:
            await self.stop()
            raise
        log.info("slack adapter up (%s mode) as %s", self.mode, identity.user_id)

    async def stop(self) -> None:
        """Stop receiving, then hand every open reply over: its job goes on, and the next process (or a sibling
        replica) continues it in the messages already posted. Nothing is cancelled for the people asking."""
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._leases is not None:
            self._leases.cancel()
            await asyncio.gather(self._leases, return_exceptions=True)
        await self._replies.close(self.shutdown_grace)
        if self.replies is not None:
            await self.replies.open.hand_over()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def status(self) -> dict[str, Any]:
        """What the adapter's heartbeat record says."""
        held = len(self.replies.open) if self.replies is not None else 0
        return {"mode": self.mode, "port": self.port, "in_flight": len(self._replies), "replies": held}

    def _retry_handlers(self) -> list[AsyncRetryHandler]:
        return [AsyncConnectionErrorRetryHandler(), CountedRateLimitRetry(self.metrics)]

    async def _connect(self, app: AsyncApp) -> None:
        if self.config.app_token is not None:
            self._socket = AsyncSocketModeHandler(app, self.config.app_token.get_secret_value(), web_client=app.client)
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
            return
        secret = _secret(self.config.signing_secret, "KOMT_SLACK__SIGNING_SECRET")
        self._http = EventsServer(app, secret, host=self.config.host, port=self.config.port)
        self.port = await self._http.start()

    # -- Bolt --------------------------------------------------------------------------------------------------

    def _bolt_app(self, client: AsyncWebClient) -> AsyncApp:
        # Bolt's own signature check is off: EventsServer checks the raw bytes first (Socket Mode needs none).
        app = AsyncApp(
            client=client,
            name="komt-bot",
            signing_secret="",
            request_verification_enabled=False,
            logger=logging.getLogger("adapters.slack_bolt"),
        )
        app.event("app_mention")(self._on_message)
        app.event("message")(self._on_message)
        app.command(self.config.command)(self._on_command)
        app.action(STOP_ACTION_ID)(self._on_stop)
        app.action(FEEDBACK_ACTION_ID)(self._on_feedback)
        app.assistant(self._assistant())
        return app

    def _assistant(self) -> AsyncAssistant:
        # Bolt routes assistant_thread_* events, and DM messages inside a thread, here instead of app.event("message").
        assistant = AsyncAssistant(logger=logging.getLogger("adapters.slack_bolt"))
        assistant.thread_started(self._on_thread_started)
        assistant.thread_context_changed(self._on_context_changed)
        assistant.user_message(self._on_assistant_message)
        return assistant

    async def _on_thread_started(self, event: dict[str, Any]) -> None:
        thread = started_thread(event)
        if thread is not None:
            self._replies.spawn(self._responder.suggest(*thread))

    async def _on_context_changed(self, event: dict[str, Any]) -> None:
        # The channel the person is looking at beside the assistant: komt-bot answers the same wherever it is.
        log.debug("slack assistant thread context changed: %s", (event.get("assistant_thread") or {}).get("context"))

    async def _on_assistant_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        responder = self._responder
        question = parse_message(
            event, bot_user_id=responder.identity.user_id, team=body.get("team_id") or responder.identity.team_id
        )
        if question is not None:
            self._replies.spawn(responder.answer(question, assistant=True))

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        responder = self._responder
        question = parse_message(
            event, bot_user_id=responder.identity.user_id, team=body.get("team_id") or responder.identity.team_id
        )
        if question is not None and await responder.addressed(question):
            self._replies.spawn(responder.answer(question))

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        self._replies.spawn(self._responder.answer_command(command, respond))

    async def _on_stop(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        self._replies.spawn(
            self._responder.stop(
                presser=str((body.get("user") or {}).get("id") or ""),
                value=str(action.get("value") or ""),
                channel=(body.get("channel") or {}).get("id"),
                thread_ts=(body.get("message") or {}).get("thread_ts"),
            )
        )

    async def _on_feedback(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        click = parse_click(body, action)
        if click is not None:
            self._replies.spawn(self._responder.feedback(click))

    @property
    def _responder(self) -> SlackResponder:
        assert self.responder is not None, "the adapter is not started"
        return self.responder


def _secret(value: Any, name: str) -> str:
    if value is None or not value.get_secret_value():
        raise ConfigError(f"{name}: not set")
    return str(value.get_secret_value())


async def _identity(client: AsyncWebClient, api_url: str) -> BotIdentity:
    """The bot's own ids; a bad token (a configuration error) or an unreachable Slack is said at start."""
    try:
        response = await client.auth_test()
    except SlackApiError as e:
        raise ConfigError(f"KOMT_SLACK__BOT_TOKEN: Slack refused it ({e.response.get('error')})") from e
    except aiohttp.ClientError as e:
        raise KomtError(f"cannot reach Slack at {api_url} ({type(e).__name__})") from e
    return BotIdentity(
        user_id=str(response["user_id"]),
        bot_id=response.get("bot_id"),
        team_id=response.get("team_id"),
    )


async def serve(settings: Settings, queue: JobQueue, metrics: Metrics | None = None) -> None:
    """``komt-bot slack``: run the Slack adapter (and its heartbeat) until cancelled."""
    adapter = SlackAdapter(settings, queue, metrics=metrics)
    await adapter.start()
    try:
        async with adapter_presence(queue, "slack", adapter.status):
            await asyncio.Event().wait()
    finally:
        await adapter.stop()
