"""How komt-bot's help reads: flags without a ``<bool>`` type, arguments named ``JOB_ID`` rather than ``{job_id}``.

typer 0.29 prints a type beside every parameter (``--json <bool>``) and puts required arguments of the usage line in
braces. :func:`tidy` adjusts the click commands typer built, once per run and before any help is printed
(:class:`komt_bot.cli.boundary.KomtGroup` calls it), so no command has to spell out a metavar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from typer.core import TyperArgument, TyperOption

if TYPE_CHECKING:  # typer 0.29 vendors click; only the types are needed
    from typer._click.core import Command, Context


class PlainArgument(TyperArgument):
    """An argument shown as ``NAME`` (``[NAME]`` when optional), without a ``<str>`` type."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"

    def display_type_rich(self, ctx: Any) -> str | None:
        """The type beside the argument in help: none for plain text."""
        shown = super().display_type_rich(ctx)
        return None if shown == "<str>" else shown


def tidy(command: Command, ctx: Context) -> None:
    """Give ``command`` and every command under it the plain help style (idempotent)."""
    params = list(command.params)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # a flag takes no value: nothing to show
        elif isinstance(param, TyperArgument) and not isinstance(param, PlainArgument):
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
            param.__class__ = PlainArgument
    for sub in getattr(command, "commands", {}).values():
        tidy(sub, ctx)
