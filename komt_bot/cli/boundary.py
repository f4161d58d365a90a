"""The one place where komt-bot's errors become what a person sees: one line on stderr and an exit code.

Every command of the ``komt-bot`` app runs inside :class:`KomtGroup`, so the console script and a test's
``CliRunner`` behave the same: :class:`~komt_bot.errors.ConfigError` exits 2, any other
:class:`~komt_bot.errors.KomtError` exits 1. Commands raise; they never print their own error lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from komt_bot.errors import ConfigError, KomtError

if TYPE_CHECKING:  # typer 0.29 vendors click; only the type is needed
    from typer._click.core import Context


class UsageProblem(KomtError):
    """A command was given arguments it cannot work with (printed as ``error: ...``, exit 1)."""


def say_error(message: str) -> None:
    """One line on stderr, never wrapped, never read as markup."""
    Console(stderr=True, soft_wrap=True).print(Text(message), highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop the command with ``message`` on stderr and exit ``code`` (for outcomes that are not errors)."""
    say_error(message)
    raise typer.Exit(code)


class KomtGroup(TyperGroup):
    """The top-level command group: maps komt-bot's errors to one line and an exit code for every command."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            say_error(f"configuration error: {e}")
            raise typer.Exit(2) from e
        except KomtError as e:
            say_error(f"error: {e}")
            raise typer.Exit(1) from e
