"""Settings into a child process's environment: every field, so the bench's worker runs on the bench's settings."""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel, SecretStr

from komt_bot.settings import ModelSettings, Settings

ENV_PREFIX = Settings.model_config.get("env_prefix") or ""
NESTED_DELIMITER = Settings.model_config.get("env_nested_delimiter") or "__"


def settings_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as ``KOMT_*`` variables from which :func:`~komt_bot.settings.load_settings` reads them back equal.

    Every field of every section becomes ``KOMT_<SECTION>__<FIELD>`` (a top-level field ``KOMT_<FIELD>``): a string
    as it is, anything else as JSON, from which pydantic-settings reads numbers and booleans and decodes lists,
    tuples and models. None has no spelling as a plain variable, so a section's None fields go into
    ``KOMT_<SECTION>`` as a JSON object, which pydantic-settings merges under the per-field variables. Secrets are
    revealed: the result is for a child process's environment, never for a log.
    """
    env: dict[str, str] = {}
    for name, value in _plain(settings).items():
        key = f"{ENV_PREFIX}{name}".upper()
        if isinstance(getattr(settings, name), BaseModel):
            nulls = {field: None for field, item in value.items() if item is None}
            if nulls:
                env[key] = json.dumps(nulls)
            env |= {f"{key}{NESTED_DELIMITER}{f}".upper(): _text(item) for f, item in value.items() if item is not None}
        elif value is not None:
            env[key] = _text(value)
        elif Settings.model_fields[name].get_default(call_default_factory=True) is not None:
            raise ValueError(f"{key}: a top-level None cannot be written into the environment")
    return env


def worker_environment(settings: Settings, model: ModelSettings, prefix: str, capacity: int) -> dict[str, str]:
    """Environment for a ``komt-bot worker`` process that loads the same model as the in-process paths.

    This process's environment less its ``KOMT_*`` variables, then all of ``settings`` but for the bench's own:
    queue prefix and backlog, model, capacity, log level, and no metrics endpoint (a fixed port would collide).
    """
    assert settings.redis_url is not None
    bench = settings.model_copy(
        update={
            "queue": settings.queue.model_copy(update={"prefix": prefix, "max_backlog": max(1000, capacity * 4)}),
            "model": model,
            "worker": settings.worker.model_copy(update={"capacity": capacity}),
            "log": settings.log.model_copy(update={"level": "WARNING"}),
            "metrics": settings.metrics.model_copy(update={"port": None}),
        }
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return env | settings_environment(bench)


def _plain(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")``, but with each secret's value where the dump has its mask."""
    dumped = model.model_dump(mode="json")
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            dumped[name] = value.get_secret_value()
        elif isinstance(value, BaseModel):
            dumped[name] = _plain(value)
    return dumped


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
