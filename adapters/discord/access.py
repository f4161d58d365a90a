"""Who may ask komt-bot on Discord, and who may stop an answer: the allow-lists of ``DiscordSettings``."""

from __future__ import annotations

from dataclasses import dataclass

import discord

from komt_bot import messages
from komt_bot.settings import DiscordSettings


@dataclass(frozen=True, slots=True)
class Asker:
    """The person asking and where: what the allow-lists are checked against."""

    user_id: int
    role_ids: frozenset[int]
    guild_id: int | None  # None in a DM
    channel_ids: frozenset[int]  # the channel and, in a thread, its parent

    @property
    def in_dm(self) -> bool:
        """True for a direct message (no guild)."""
        return self.guild_id is None


def _roles(user: discord.abc.User) -> frozenset[int]:
    return frozenset(role.id for role in user.roles) if isinstance(user, discord.Member) else frozenset()


def _channels(channel: object, channel_id: int | None) -> frozenset[int]:
    ids = {channel_id} if channel_id is not None else set()
    parent = getattr(channel, "parent_id", None)
    if isinstance(parent, int):
        ids.add(parent)
    return frozenset(ids)


def asker_of_message(message: discord.Message) -> Asker:
    """The asker of a mention or DM."""
    # A guild missing from the cache leaves message.guild unset; its channel still knows the guild id.
    guild_id = message.guild.id if message.guild is not None else getattr(message.channel, "guild_id", None)
    return Asker(message.author.id, _roles(message.author), guild_id, _channels(message.channel, message.channel.id))


def asker_of_interaction(interaction: discord.Interaction[discord.Client]) -> Asker:
    """The asker of a slash command or a button click."""
    return Asker(
        interaction.user.id,
        _roles(interaction.user),
        interaction.guild_id,
        _channels(interaction.channel, interaction.channel_id),
    )


def is_admin(settings: DiscordSettings, asker: Asker) -> bool:
    """True when the person has one of the admin roles."""
    return not asker.role_ids.isdisjoint(settings.admin_roles)


def refusal(settings: DiscordSettings, asker: Asker) -> str | None:
    """The message refusing this person here, or None when they may ask.

    Guild and channel lists apply in guilds; DMs are governed by ``allow_dms``. People pass when no user or role
    list is set, or when they are listed, or have an allowed or admin role.
    """
    if asker.in_dm and not settings.allow_dms:
        return messages.DMS_OFF
    if not asker.in_dm:
        if settings.allowed_guilds and asker.guild_id not in settings.allowed_guilds:
            return messages.NOT_ALLOWED
        if settings.allowed_channels and asker.channel_ids.isdisjoint(settings.allowed_channels):
            return messages.NOT_ALLOWED
    if not (settings.allowed_users or settings.allowed_roles):
        return None
    if asker.user_id in settings.allowed_users or is_admin(settings, asker):
        return None
    return None if not asker.role_ids.isdisjoint(settings.allowed_roles) else messages.NOT_ALLOWED
