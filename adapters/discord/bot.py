"""The Discord adapter (``komt-bot discord``): answers mentions, DMs, replies and ``/ask`` through the job queue.

This module only connects: it points discord.py at the configured REST and gateway URLs, runs the client with
a heartbeat record beside it, and falls back to running without the privileged message-content intent when the
application has not been granted it. The client is in :mod:`adapters.discord.client`, the questions in
:mod:`adapters.discord.questions`, the replies (and their resumption after a restart) in
:mod:`adapters.discord.replies`, the reply sinks in :mod:`adapters.discord.sink` and
:mod:`adapters.discord.interaction`.
"""

from __future__ import annotations

import logging

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from adapters.discord.client import KomtDiscord
from komt_bot.chat.presence import adapter_presence
from komt_bot.errors import ConfigError, KomtError
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.settings import DiscordSettings, Settings

log = logging.getLogger(__name__)


def use_endpoints(settings: DiscordSettings) -> None:
    """Point discord.py at the configured REST base and gateway (and quiet its voice warnings).

    discord.py keeps both on classes, for the whole process: this is why they are set here, when the adapter
    starts, and not at import.
    """
    discord.http.Route.BASE = settings.api_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)
    # komt-bot has no voice: skip discord.py's start-up warnings about the voice libraries it lacks.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


async def serve(settings: Settings, queue: JobQueue, *, metrics: Metrics | None = None) -> None:
    """Run the Discord bot until cancelled. Raises ConfigError without a token or when Discord refuses it."""
    if settings.discord.token is None:
        raise ConfigError("KOMT_DISCORD__TOKEN: no Discord bot token is set")
    token = settings.discord.token.get_secret_value()
    use_endpoints(settings.discord)
    clients: list[KomtDiscord] = []
    message_content = settings.discord.message_content_intent
    async with adapter_presence(queue, "discord", lambda: clients[-1].heartbeat_status() if clients else {}):
        while True:
            client = KomtDiscord(settings, queue, message_content=message_content, metrics=metrics)
            clients.append(client)
            try:
                await _run(client, token)
                return
            except discord.PrivilegedIntentsRequired:
                if not message_content:
                    raise
                log.warning(
                    "discord: the message-content intent is not granted to this application; running without it "
                    "(mentions and DMs work, reply chains and threads see only messages that mention the bot)"
                )
                message_content = False


async def _run(client: KomtDiscord, token: str) -> None:
    # Once connected, discord.py reconnects by itself; what escapes start() failed while logging in or syncing.
    async with client:
        try:
            await client.start(token)
        except discord.LoginFailure as e:
            raise ConfigError("KOMT_DISCORD__TOKEN: Discord refused the bot token") from e
        except discord.HTTPException as e:
            raise KomtError(f"Discord refused a start-up request: {e.status} {e.text}") from e
        except (aiohttp.ClientError, OSError) as e:
            raise KomtError(f"cannot reach Discord at {discord.http.Route.BASE}: {e}") from e
