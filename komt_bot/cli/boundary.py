"""The one place where komt-bot's errors become what a person sees: one line on stderr and an exit code.

Every command of the ``komt-bot`` app runs inside :class:`KomtGroup`, so the console script and a test's
``CliRunner`` behave the same: :class:`~komt_bot.errors.ConfigError` exits 2, any other
:class:`~komt_bot.errors.KomtError` exits 1. Commands raise; they never print their own error lines. When stderr is
not a terminal, typer's own usage errors are plain lines too (not a box wrapped at 80 columns).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from komt_bot.cli.helpstyle import tidy
from komt_bot.errors import ConfigError, KomtError

if TYPE_CHECKING:  # typer 0.29 vendors click; only the type is needed
    from typer._click.core import Context


def say_error(message: str) -> None:
    """One line on stderr, never wrapped, never read as markup."""
    Console(stderr=True, soft_wrap=True).print(Text(message), highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop the command with ``message`` on stderr and exit ``code`` (for outcomes that are not errors)."""
    say_error(message)
    raise typer.Exit(code)


class KomtGroup(TyperGroup):
    """The top-level command group: maps komt-bot's errors to one line and an exit code for every command."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, **extra: Any) -> Any:
        """Run the app; usage errors are printed plainly where stderr is not a terminal."""
        if not sys.stderr.isatty():
            self.rich_markup_mode = None
        return super().main(args, *rest, **extra)

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        """Parse the top-level arguments, after giving every command the plain help style (helpstyle.py)."""
        tidy(self, ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            say_error(f"configuration error: {e}")
            raise typer.Exit(2) from e
        except KomtError as e:
            say_error(f"error: {e}")
            raise typer.Exit(1) from e
