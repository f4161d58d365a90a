"""What ``komt-bot slack`` and ``komt-bot discord`` need before they start: their settings, listed in their help, and
every missing one named at once (a configuration mistake, exit 2) with a pointer to the platform's guide."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel

from komt_bot.errors import ConfigError
from komt_bot.settings import DiscordSettings, Settings, SlackSettings

Platform = Literal["slack", "discord"]
GUIDES: Mapping[Platform, str] = MappingProxyType({"slack": "docs/SLACK.md", "discord": "docs/DISCORD.md"})
# What the help says of settings whose field carries no description of its own.
NOTES: Mapping[str, str] = MappingProxyType(
    {
        "KOMT_SLACK__BOT_TOKEN": "xoxb-...: the bot token (required)",
        "KOMT_SLACK__API_URL": "Slack's Web API (a fake Slack in tests)",
        "KOMT_DISCORD__TOKEN": "the bot token (required)",
        "KOMT_DISCORD__API_URL": "Discord's REST API (a fake Discord in tests)",
        "KOMT_DISCORD__GATEWAY_URL": "Discord's gateway (a fake Discord in tests)",
        "KOMT_DISCORD__GUILD_IDS": "guilds whose slash commands sync at once",
        "KOMT_DISCORD__REPLY_IN_THREAD": "answer a channel mention in a new thread",
        "KOMT_DISCORD__ALLOW_DMS": "answer direct messages",
        "KOMT_DISCORD__ALLOWED_GUILDS": "guild ids; empty: every guild",
        "KOMT_DISCORD__ALLOWED_CHANNELS": "channel ids; empty: every channel",
        "KOMT_DISCORD__ALLOWED_ROLES": "role ids; empty: every role",
        "KOMT_DISCORD__ALLOWED_USERS": "user ids; empty: everyone",
    }
)


def settings_help(platform: Platform) -> str:
    """The platform's settings, one per paragraph (rich help joins single lines), and where the guide is."""
    model: type[BaseModel] = SlackSettings if platform == "slack" else DiscordSettings
    lines = []
    for name, field in model.model_fields.items():
        variable = f"KOMT_{platform.upper()}__{name.upper()}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            lines.append(f"{variable}__*: rate budgets ({GUIDES[platform]})")
            continue
        lines.append(f"{variable}: {NOTES.get(variable) or field.description or ''}".rstrip(": "))
    return "Settings (environment or config/.env):\n" + "\n".join(lines) + f"\n\nSetup: {GUIDES[platform]}"


def check_platform(settings: Settings, platform: Platform) -> None:
    """Raise one :class:`ConfigError` naming every setting the adapter needs and lacks (none: return)."""
    missing: list[str] = []
    if platform == "slack":
        slack = settings.slack
        if not _set(slack.bot_token):
            missing.append("KOMT_SLACK__BOT_TOKEN")
        if slack.app_token is None and not _set(slack.signing_secret):
            missing.append("KOMT_SLACK__APP_TOKEN (Socket Mode) or KOMT_SLACK__SIGNING_SECRET (HTTP Events API)")
    elif not _set(settings.discord.token):
        missing.append("KOMT_DISCORD__TOKEN")
    if missing:
        raise ConfigError(f"not set: {', '.join(missing)} (in config/.env or the environment; see {GUIDES[platform]})")


def _set(secret: object) -> bool:
    value = getattr(secret, "get_secret_value", None)
    return value is not None and bool(value())
