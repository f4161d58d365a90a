"""The admin CLI: ``komt-bot queue ...`` and ``komt-bot health`` (to be filled in by the operations work)."""

from __future__ import annotations

import typer

queue_app = typer.Typer(help="Look at and act on the job queue.", no_args_is_help=True)


def health_command() -> None:
    """Exit 0 when Redis answers and a worker heartbeat is fresh, else 1 with the reason."""
    raise typer.Exit(1)
