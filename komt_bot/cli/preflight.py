"""A check ``worker`` and ``serve`` make before loading a model: the default model on a machine that cannot get it.

Without ``KOMT_MODEL__BASE`` the worker loads komt from the Hugging Face Hub. On a machine with no copy in the local
cache and no way to the Hub, transformers would retry for about a minute before failing; this check says so in a
second instead, pointing at the offline tiny model and the real-model settings. A model set explicitly (a local
directory or a hub id) is left to the real loading path (komt_bot.engine.loading), which reports its own errors.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from komt_bot.errors import ConfigError
from komt_bot.settings import ModelSettings, Settings

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_SECONDS = 3.0
_TRUE = ("1", "true", "yes", "on")


def check_default_model(settings: Settings) -> None:
    """Raise :class:`ConfigError` when the model is komt-bot's default (not set explicitly), is not in the local
    Hugging Face cache, and the Hub cannot be reached (``HF_HUB_OFFLINE``, or a failed connection)."""
    model = settings.model
    if "base" in model.model_fields_set or model.load_format == "dummy":
        return
    missing = [name for name, file in needed_files(model) if not cached(name, file)]
    if not missing:
        return
    problem = hub_problem()
    if problem is None:
        return
    raise ConfigError(
        f"KOMT_MODEL__BASE is not set, and the default model ({' + '.join(missing)}) is not in the local Hugging "
        f"Face cache while the Hub is out of reach ({problem}). Offline, use the tiny test model: "
        "`komt-bot dev tiny-model models/tiny`, then KOMT_MODEL__BASE=models/tiny/base "
        "KOMT_MODEL__ADAPTER=models/tiny/lora (its answers are noise). For komt itself, set KOMT_MODEL__BASE and "
        "KOMT_MODEL__ADAPTER to its local directories or hub ids (README: Use the real komt model)."
    )


def needed_files(model: ModelSettings) -> list[tuple[str, str]]:
    """(hub id, a file it must have) for each part of the model that comes from the Hub."""
    needed = [(model.base, "tokenizer.json" if model.engine == "openai" else "config.json")]
    if model.adapter is not None and model.engine != "openai" and not Path(model.adapter).expanduser().is_dir():
        needed.append((model.adapter, "adapter_config.json"))
    return needed


def cached(repo_id: str, filename: str) -> bool:
    """Whether the local Hugging Face cache holds ``filename`` of ``repo_id`` (True when that cannot be checked)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # no worker extra: the real loading path says what is missing
        return True
    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # a malformed id: the real loading path explains it
        return True


def hub_problem() -> str | None:
    """Why the Hub cannot be reached, or None when a connection to it (or to the HTTPS proxy) opens."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return f"{variable} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    target = urlsplit(proxy if proxy else endpoint)
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    return connect_problem(host, port, CONNECT_TIMEOUT_SECONDS)


def connect_problem(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port does not open within ``timeout`` (name lookup included), or None."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"{host}:{port}: {e.strerror or e}")

    # getaddrinfo ignores socket timeouts: bound the whole attempt with a thread.
    thread = threading.Thread(target=attempt, name="komt-hub-check", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return outcome[0] if outcome else f"{host}:{port}: no answer within {timeout:g} s"
