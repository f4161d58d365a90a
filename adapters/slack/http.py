"""The Events API endpoint: Slack's signed HTTP requests into the Bolt app.

The signature is checked here, over the raw bytes, before anything is decoded: a forged, stale or unsigned
request gets 401 and never reaches Bolt. Checking the bytes (rather than Bolt's check of the decoded text) is
what lets a correctly signed body with broken UTF-8 through, decoded with replacement characters, so the person
still gets an answer; it also keeps request bodies out of the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
MAX_REQUEST_AGE_SECONDS = 300  # Slack's own rule: older timestamps are replays
MAX_BODY_BYTES = 1024 * 1024


def signature_ok(secret: str, body: bytes, headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> bool:
    """Whether ``body`` carries a valid, fresh ``X-Slack-Signature`` for ``secret``."""
    timestamp = headers.get("X-Slack-Request-Timestamp")
    signature = headers.get("X-Slack-Signature")
    if not timestamp or not signature or not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(now() - int(timestamp)) > MAX_REQUEST_AGE_SECONDS:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


class EventsServer:
    """An aiohttp server for ``POST /slack/events`` (events, interactivity and slash commands alike)."""

    def __init__(self, app: AsyncApp, signing_secret: str, *, host: str, port: int) -> None:
        self.app = app
        self.signing_secret = signing_secret
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; return the bound port (useful when ``port`` is 0)."""
        web_app = web.Application(client_max_size=MAX_BODY_BYTES)
        web_app.router.add_post(EVENTS_PATH, self.handle)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("slack events endpoint listening on %s:%d%s", self.host, self.port, EVENTS_PATH)
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.Response:
        """Verify, decode and hand one request to Bolt."""
        raw = await request.read()
        if not signature_ok(self.signing_secret, raw, request.headers):
            log.warning("rejected a slack request with a missing, stale or wrong signature")
            return web.json_response({"error": "invalid request"}, status=401)
        headers: dict[str, str | Sequence[str]] = {name.lower(): value for name, value in request.headers.items()}
        bolt_request = AsyncBoltRequest(
            body=raw.decode("utf-8", errors="replace"), query=request.query_string, headers=headers
        )
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))
