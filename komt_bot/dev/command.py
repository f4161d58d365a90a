"""What ``komt-bot dev soak`` does around one run: progress on stderr, the summary on stdout, the exit code."""

from __future__ import annotations

import asyncio
import json

from rich.console import Console
from rich.text import Text

from komt_bot.dev.processes import Fleet
from komt_bot.dev.report import render
from komt_bot.dev.soak import SoakOptions, run_soak

INTERRUPTED_EXIT = 130


def soak_main(options: SoakOptions, *, as_json: bool) -> int:
    """Run one soak and print its summary (a rich table, or one JSON object with ``as_json``).

    Returns 0 when nothing was lost, mixed, duplicated or answered with an error (busy ones allowed with
    ``busy_ok``), 1 otherwise, 130 on Ctrl-C. Whatever the run started is stopped in every case, the first
    Ctrl-C included.
    """
    errors = Console(stderr=True, soft_wrap=True)

    def say(message: str) -> None:
        errors.print(Text(f"soak: {message}"), highlight=False)

    fleet = Fleet.create()
    try:
        summary = asyncio.run(run_soak(options, say=say, fleet=fleet))
    except KeyboardInterrupt:
        say("interrupted: stopping everything the soak started")
        return INTERRUPTED_EXIT
    finally:
        fleet.close(keep=options.keep)
        if options.keep:
            say(f"kept the run's directory: {fleet.workdir}")
    if as_json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False))
    else:
        render(summary, Console())
    return 0 if summary.ok else 1
