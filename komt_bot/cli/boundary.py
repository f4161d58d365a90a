"""The one place where komt-bot's errors become what a person sees: one line on stderr and an exit code.

Every command of the ``komt-bot`` app runs inside :class:`KomtGroup`, so the console script and a test's
``CliRunner`` behave the same. One rule for exit codes on every command: a usage or configuration mistake (a bad
option, a missing or invalid setting: :class:`~komt_bot.errors.ConfigError`,
:class:`~komt_bot.errors.UsageProblem`) exits 2, anything else that went wrong
(:class:`~komt_bot.errors.KomtError`: a service unreachable, a job not found) exits 1. Commands raise; they never
print their own error lines. When stderr is not a terminal, typer's own usage errors are plain lines too (not a box
wrapped at 80 columns); help looks the same everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup
from typer.core import _main as typer_main

from komt_bot.cli.helpstyle import tidy
from komt_bot.errors import ConfigError, KomtError, UsageProblem

if TYPE_CHECKING:  # typer 0.29 vendors click; only the type is needed
    from typer._click.core import Context


def say_error(message: str) -> None:
    """One line on stderr, never wrapped, never read as markup."""
    Console(stderr=True, soft_wrap=True).print(Text(message), highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop the command with ``message`` on stderr and exit ``code`` (for outcomes that are not errors)."""
    say_error(message)
    raise typer.Exit(code)


# The order ``komt-bot --help`` lists its commands in: running it, then operating it, then measuring it.
COMMAND_ORDER = ("serve", "chat", "worker", "slack", "discord", "queue", "health", "bench", "eval", "dev")


class KomtGroup(TyperGroup):
    """The top-level command group: maps komt-bot's errors to one line and an exit code for every command."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the app; usage errors are printed plainly where stderr is not a terminal (help stays boxed)."""
        return typer_main(
            self,
            args=args,
            prog_name=prog_name,
            complete_var=complete_var,
            standalone_mode=standalone_mode,
            windows_expand_args=windows_expand_args,
            rich_markup_mode=self.rich_markup_mode if sys.stderr.isatty() else None,
            **extra,
        )

    def list_commands(self, ctx: Context) -> list[str]:
        """The commands in :data:`COMMAND_ORDER`, any other after them."""
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))

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
        except UsageProblem as e:
            say_error(f"error: {e}")
            raise typer.Exit(2) from e
        except KomtError as e:
            say_error(f"error: {e}")
            raise typer.Exit(1) from e
