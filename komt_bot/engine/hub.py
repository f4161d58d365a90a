"""Where a model comes from, checked in a second before anything heavy: a local directory, or a Hugging Face hub id.

transformers retries an unreachable Hub for close to a minute, twice over (once raw, once as a ``huggingface_hub``
warning), before failing with a message that names no setting. So every source is checked first
(:func:`hub_sources`): a value that looks like a path but is no directory, or a hub id that is not ``owner/name``, is
an error naming its setting; a hub id that is not in the local cache while the Hub is out of reach is one too; and a
hub id that is cached while the Hub is out of reach is loaded from the cache alone (``local_files_only``), quietly.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from komt_bot.errors import EngineError
from komt_bot.settings import ModelSettings

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_SECONDS = 3.0
BASE_SETTING = "KOMT_MODEL__BASE"
ADAPTER_SETTING = "KOMT_MODEL__ADAPTER"
_TRUE = ("1", "true", "yes", "on")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True, slots=True)
class Source:
    """One part of the model to load: its setting, its value, and a file a hub copy of it must have."""

    setting: str
    what: str  # "base model", "adapter", "tokenizer of the base model"
    name: str
    needed_file: str


def model_sources(model: ModelSettings) -> list[Source]:
    """The parts of ``model`` that are loaded from a directory or the Hub (the openai engine loads a tokenizer)."""
    if model.engine == "openai":
        return [Source(BASE_SETTING, "tokenizer of the base model", model.base, "tokenizer.json")]
    sources = [Source(BASE_SETTING, "base model", model.base, "config.json")]
    if model.adapter is not None:
        sources.append(Source(ADAPTER_SETTING, "adapter", model.adapter, "adapter_config.json"))
    return sources


def check_source(name: str, what: str, setting: str | None = None) -> str:
    """``name`` if it is an existing directory or a hub id (``owner/name``); otherwise an :class:`EngineError` that
    names ``setting`` and says what to set it to. Touches nothing but the local file system."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    named = f"{setting}: " if setting else ""
    hint = f" (set {setting} to a local model directory or a hub id owner/name)" if setting else ""
    if path.exists():
        raise EngineError(f"{named}{what} {name!r} is a file; expected a model directory or a hub id{hint}")
    if name.startswith(("/", ".", "~")) or _partly_exists(path):
        raise EngineError(f"{named}{what} directory not found: {name}{hint}")
    if not _HUB_ID.match(name):
        raise EngineError(f"{named}{what} {name!r} is neither a directory nor a hub id of the form owner/name{hint}")
    return name


def _partly_exists(path: Path) -> bool:
    """Whether a relative path's first part exists here: ``models/nope`` with a ``models/`` is a path typo."""
    return not path.is_absolute() and len(path.parts) > 1 and Path(path.parts[0]).exists()


def hub_sources(model: ModelSettings) -> bool:
    """Check every source of ``model`` (:func:`check_source`, then the Hub for hub ids). Returns True when the hub
    ids must be loaded from the local cache alone (the Hub is out of reach, and they are all there).

    Raises :class:`EngineError` naming the setting when a value is not usable, or a hub id is not cached while the
    Hub is out of reach.
    """
    remote = [s for s in model_sources(model) if not Path(check_source(s.name, s.what, s.setting)).is_dir()]
    if not remote:
        return False
    problem = hub_problem()
    if problem is None:
        return False
    for source in remote:
        if not cached(source.name, source.needed_file):
            raise EngineError(
                f"{source.setting}: {source.what} {source.name!r} is not in the local Hugging Face cache and the Hub "
                f"is out of reach ({problem}): set {source.setting} to a local directory"
                + (" (or to none for no adapter)" if source.setting == ADAPTER_SETTING else "")
                + ", or connect to the Hub once to download it"
            )
    return True


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
