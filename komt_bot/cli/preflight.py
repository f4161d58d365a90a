"""Checks ``worker`` and ``serve`` make before waiting for Redis or loading a model, so a mistake costs a second.

* The default model on a machine that cannot get it: without ``KOMT_MODEL__BASE`` the worker loads komt from the
  Hugging Face Hub; with no copy in the local cache and no way to the Hub this says so, pointing at the offline tiny
  model and the real-model settings.
* A model set explicitly: a path typo, a malformed hub id, or a hub id neither cached nor reachable is one line naming
  ``KOMT_MODEL__BASE`` or ``KOMT_MODEL__ADAPTER`` (:func:`komt_bot.engine.hub.hub_sources`).
"""

from __future__ import annotations

from pathlib import Path

from komt_bot.engine.hub import cached, hub_sources
from komt_bot.engine.hub import connect_problem as connect_problem  # tests and callers import it from here
from komt_bot.engine.hub import hub_problem as hub_problem
from komt_bot.errors import ConfigError, EngineError
from komt_bot.settings import ModelSettings, Settings


def check_model(settings: Settings) -> None:
    """Raise :class:`ConfigError` when the configured model cannot be loaded on this machine, as far as can be told
    without loading it: :func:`check_default_model`, then every explicitly set source."""
    check_default_model(settings)
    if settings.model.load_format == "dummy":
        return
    try:
        hub_sources(settings.model)
    except EngineError as e:
        raise ConfigError(str(e)) from e


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
