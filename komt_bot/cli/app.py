"""The ``komt-bot`` command line: serve, chat, worker, slack, discord, queue, health, bench, eval, dev.

Every command reads the settings when it starts (never at import) and turns komt-bot's own errors into one line:
exit code 2 for a usage or configuration mistake, 1 for anything else that went wrong (see boundary.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from komt_bot import __version__
from komt_bot.bench import bench_command
from komt_bot.cli.boundary import KomtGroup
from komt_bot.cli.health import health_command
from komt_bot.cli.platforms import Platform, check_platform, settings_help
from komt_bot.cli.queue import queue_app
from komt_bot.cli.render import render_settings, stdout_console
from komt_bot.cli.signals import Shutdown
from komt_bot.eval import eval_command
from komt_bot.logs import setup_logging
from komt_bot.settings import LogSettings, Settings, load_settings

app = typer.Typer(
    cls=KomtGroup,
    help="komt-bot: the komt Korean LLM in Slack, Discord and the terminal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
dev_app = typer.Typer(
    help="Developer helpers: a tiny offline model, the soak test (workers, faults), the effective settings.",
    no_args_is_help=True,
)
app.add_typer(queue_app, name="queue")
app.add_typer(dev_app, name="dev")
app.command("health")(health_command)
app.command("bench")(bench_command)
app.command("eval")(eval_command)

log = logging.getLogger(__name__)


class ModelSize(StrEnum):
    """``dev tiny-model --size``."""

    tiny = "tiny"
    small = "small"


DRAIN_GRACE_SECONDS = 15.0  # past drain_seconds, a stopping worker exits whatever it still waits for


def _settings() -> Settings:
    settings = load_settings()
    setup_logging(settings.log)
    return settings


def _show_version(value: bool) -> None:
    if value:
        print(f"komt-bot {__version__}")
        raise typer.Exit()


@app.callback()
def _top(
    version: Annotated[
        bool, typer.Option("--version", help="Show the version and exit.", is_eager=True, callback=_show_version)
    ] = False,
) -> None:
    """komt-bot: the komt Korean LLM in Slack, Discord and the terminal."""


@app.command()
def worker(
    burst: Annotated[bool, typer.Option("--burst", help="empty the queue, then exit")] = False,
    name: Annotated[str | None, typer.Option(help="worker name (default host-pid)")] = None,
) -> None:
    """Load the model and serve jobs from the queue."""
    from komt_bot.cli.run import run_worker

    settings = _settings()
    shutdown = Shutdown(hard_deadline=settings.worker.drain_seconds + DRAIN_GRACE_SECONDS)

    def ready(stop: Callable[[], None]) -> None:
        shutdown.graceful = stop

    shutdown.run(lambda: run_worker(settings, burst=burst, name=name, on_ready=ready))


@app.command()
def serve(
    chat: Annotated[bool, typer.Option("--chat", help="also chat in this terminal")] = False,
) -> None:
    """Everything in one process: a worker plus every adapter whose credentials are set.

    Without KOMT_REDIS_URL it runs a private redis-server (append-only, in ~/.local/state/komt-bot/redis) that the
    other commands here find, so one machine needs nothing else.
    """
    from adapters.console import Interrupts
    from komt_bot.cli.run import run_stack

    settings = load_settings()
    if chat and "KOMT_LOG__LEVEL" not in os.environ:
        # The chat shares the terminal with the log: only warnings, unless a level was asked for.
        settings.log.level = "WARNING"
    setup_logging(settings.log)
    shutdown = Shutdown(hard_deadline=settings.worker.drain_seconds + DRAIN_GRACE_SECONDS)
    interrupts = Interrupts()
    if chat:
        shutdown.on_interrupt = interrupts.press  # Ctrl-C stops an answer; at the prompt it leaves the chat
    shutdown.run(lambda: run_stack(settings, chat=chat, interrupts=interrupts))
    interrupts.leave()


@app.command("chat")
def chat_command(
    prompt: Annotated[str | None, typer.Argument(help="one question; without it, an interactive chat")] = None,
) -> None:
    """Ask komt from the terminal, through the queue like every adapter (Ctrl-C stops an answer).

    In the chat, /reset starts a new conversation and /quit (or Ctrl-D) leaves.
    """
    from adapters.console import Interrupts, run_chat

    settings = _settings()
    shutdown = Shutdown()
    interrupts = Interrupts()
    shutdown.on_interrupt = interrupts.press
    shutdown.run(lambda: run_chat(settings, prompt, interrupts))
    interrupts.leave()


def _run_platform(platform: Platform) -> None:
    from komt_bot.cli.run import run_adapter

    settings = _settings()
    check_platform(settings, platform)
    Shutdown().run(lambda: run_adapter(settings, platform))


@app.command(epilog=settings_help("slack"))
def slack() -> None:
    """Run the Slack adapter (Socket Mode with an app token, else the Events API over HTTP)."""
    _run_platform("slack")


@app.command(epilog=settings_help("discord"))
def discord() -> None:
    """Run the Discord adapter."""
    _run_platform("discord")


@dev_app.command("tiny-model")
def tiny_model(
    directory: Annotated[Path, typer.Argument(help="writes DIR/base and DIR/lora")],
    size: Annotated[ModelSize, typer.Option(help="tiny, or small (the benchmark size)")] = ModelSize.tiny,
) -> None:
    """Write a random tiny Llama with a Korean byte-fallback tokenizer and a random LoRA (answers are noise)."""
    from komt_bot.engine.fakes.tiny import BENCH_KWARGS, build_tiny_model

    # The usual log setup: bitsandbytes' CPU kernel warning (meaningless here) stays out of the terminal.
    setup_logging(LogSettings(level="WARNING"))
    base, adapter = build_tiny_model(directory, **(BENCH_KWARGS if size is ModelSize.small else {}))
    print(f"wrote {base} and {adapter}")
    print(f"use it with: KOMT_MODEL__BASE={base} KOMT_MODEL__ADAPTER={adapter}")


@dev_app.command("soak")
def soak(
    conversations: Annotated[int, typer.Option(min=1, help="conversations in all")] = 100,
    concurrency: Annotated[int | None, typer.Option(min=1, help="at once (default: all)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="real worker processes")] = 2,
    tokens: Annotated[int, typer.Option(min=1, help="max new tokens per answer")] = 64,
    model: Annotated[Path | None, typer.Option(help="a tiny-model DIR (default: build one)")] = None,
    kill_every: Annotated[float | None, typer.Option(min=0.1, help="SIGKILL a random worker every S s")] = None,
    freeze: Annotated[float | None, typer.Option(min=0.1, help="SIGSTOP one worker for S s, once")] = None,
    restart_redis: Annotated[bool, typer.Option("--restart-redis", help="restart Redis once")] = False,
    claim_idle: Annotated[float, typer.Option(min=0.1, help="KOMT_QUEUE__CLAIM_IDLE_SECONDS")] = 5.0,
    heartbeat: Annotated[float, typer.Option(min=0.1, help="KOMT_QUEUE__HEARTBEAT_SECONDS")] = 1.0,
    max_backlog: Annotated[int | None, typer.Option(min=1, help="default: room for every conversation")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="each ask's timeout_seconds")] = 600.0,
    max_seconds: Annotated[float, typer.Option(min=1, help="bound on the whole load")] = 3600.0,
    busy_ok: Annotated[bool, typer.Option("--busy-ok", help="accept 'busy' (backlog full) replies")] = False,
    seed: Annotated[int, typer.Option(help="seed of the kill choices")] = 0,
    keep: Annotated[bool, typer.Option("--keep", help="keep the run's directory (logs, Redis data)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    via: Annotated[str, typer.Option(help="ask: in-process; slack: a fake Slack and real komt-bot slack")] = "ask",
    adapters: Annotated[int, typer.Option(min=1, help="komt-bot slack processes (--via slack)")] = 1,
    channels: Annotated[int, typer.Option(min=1, help="channels the conversations spread over")] = 8,
    slack_limits: Annotated[bool, typer.Option("--slack-limits", help="the fake enforces Slack's tiers")] = False,
    kill_adapter_every: Annotated[
        float | None, typer.Option(min=0.1, help="SIGKILL an adapter every S s, start a new one")
    ] = None,
    restart_adapter_every: Annotated[
        float | None, typer.Option(min=0.1, help="SIGTERM an adapter every S s, a new one once it exits")
    ] = None,
    no_adapter_replace: Annotated[
        bool, typer.Option("--no-adapter-replace", help="a killed or stopped adapter is not replaced")
    ] = False,
    reply_grace: Annotated[
        float, typer.Option(min=1, help="after its job ends, a reply still writing this long is half-written")
    ] = 60.0,
) -> None:
    """Soak test: private Redis, real workers on the tiny model, concurrent conversations, optional faults."""
    from komt_bot.dev.command import soak_main
    from komt_bot.dev.soak import SoakOptions

    if via not in ("ask", "slack"):
        raise typer.BadParameter("ask or slack", param_hint="--via")
    options = SoakOptions(
        conversations=conversations,
        concurrency=concurrency,
        workers=workers,
        tokens=tokens,
        model=model,
        kill_every=kill_every,
        freeze=freeze,
        restart_redis=restart_redis,
        claim_idle=claim_idle,
        heartbeat=heartbeat,
        max_backlog=max_backlog,
        ask_timeout=timeout,
        max_seconds=max_seconds,
        busy_ok=busy_ok,
        seed=seed,
        keep=keep,
        via="slack" if via == "slack" else "ask",
        adapters=adapters,
        channels=channels,
        slack_limits=slack_limits,
        kill_adapter_every=kill_adapter_every,
        restart_adapter_every=restart_adapter_every,
        no_adapter_replace=no_adapter_replace,
        reply_grace=reply_grace,
    )
    raise typer.Exit(soak_main(options, as_json=as_json))


@dev_app.command("settings")
def show_settings(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the effective settings (secrets masked)."""
    data = load_settings().masked()
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        stdout_console().print(render_settings(data))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (errors become one line and an exit code in :class:`KomtGroup`)."""
    app(args=argv, standalone_mode=True)
