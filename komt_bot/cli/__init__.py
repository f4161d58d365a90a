"""The ``komt-bot`` command line: the one boundary between people and komt-bot's code."""

from komt_bot.cli.app import app, main

__all__ = ["app", "main"]
