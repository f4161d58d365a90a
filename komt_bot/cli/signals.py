"""SIGTERM and SIGINT for long-running commands: the first stops gracefully, the second exits at once.

Until a command registers its graceful stop (a worker does once its model is loaded), the first signal cancels the
command outright, so Ctrl-C or ``docker compose stop`` during a minute-long model load is obeyed at once. After
the first signal a watchdog thread ends the process after ``hard_deadline`` seconds whatever the event loop, Redis
or a library thread are doing.

A command can take Ctrl-C for itself (the terminal chat stops an answer with it): while ``on_interrupt`` returns
True, SIGINT goes there and counts for nothing here; SIGTERM always stops the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_HARD_DEADLINE_SECONDS = 15.0


class Shutdown:
    """What the signals do to one running command."""

    def __init__(self, *, hard_deadline: float = DEFAULT_HARD_DEADLINE_SECONDS) -> None:
        self.hard_deadline = hard_deadline
        self.graceful: Callable[[], None] | None = None
        self.cancelled_early = False
        self.on_interrupt: Callable[[], bool] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._signals = 0

    def on_signal(self, signum: int) -> None:
        """Handle one SIGTERM/SIGINT."""
        if signum == signal.SIGINT and self.on_interrupt is not None and self.on_interrupt():
            return
        self._signals += 1
        if self._signals > 1:
            print("\nstopping now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        watchdog = threading.Timer(self.hard_deadline, _exit_late, args=(self.hard_deadline,))
        watchdog.daemon = True
        watchdog.start()
        if self.graceful is not None:
            log.info("stopping (again to stop at once)")
            self.graceful()
        elif self._task is not None:
            self.cancelled_early = True
            self._task.cancel()

    def run(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``main`` on a fresh event loop with these signal handlers."""

        async def runner() -> None:
            self._task = asyncio.current_task()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.on_signal, sig)
            await main()

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(runner())
        if self.cancelled_early:
            # A model may still be loading in a thread of its own: leave without waiting for it.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _exit_late(deadline: float) -> None:
    print(f"still stopping after {deadline:.0f} s: exiting", file=sys.stderr, flush=True)
    os._exit(1)
