"""Discord: mentions, DMs, replies and ``/ask`` through discord.py."""

from adapters.discord.bot import serve

__all__ = ["serve"]
