"""The settings' sources beside pydantic-settings' own: the TOML file, and the names that are no setting.

The TOML file is read here so that a syntax error is one line naming the file and the line. Names that are no
setting — a ``KOMT_…`` variable (pydantic-settings ignores unknown ones) or a TOML key (ignored inside a section) —
are never dropped silently: each one is a warning naming it and the closest real setting.
"""

from __future__ import annotations

import difflib
import logging
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from komt_bot.errors import ConfigError

log = logging.getLogger("komt_bot.settings")

ENV_PREFIX = "KOMT_"
# KOMT_ variables that komt-bot's own scripts and tests read and that are not settings.
NOT_SETTINGS = frozenset({"KOMT_CONFIG", "KOMT_TORCH_SPEC", "KOMT_TEST_REDIS_URL", "KOMT_BENCH_REDIS_URL"})
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def setting_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every name a setting can be given by, sections included: ``("queue",)``, ``("queue", "prefix")``, ..."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        yield path
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from setting_paths(field.annotation, path)


def env_name(path: tuple[str, ...]) -> str:
    """The environment variable of a setting: ``("queue", "prefix")`` → ``KOMT_QUEUE__PREFIX``."""
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def _closest(name: str, known: set[str]) -> str:
    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def unknown_env(model: type[BaseModel], environ: Mapping[str, str]) -> list[str]:
    """One warning per ``KOMT_`` variable in ``environ`` that names no setting of ``model``."""
    known = {env_name(path) for path in setting_paths(model)}
    found = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings matches names case-insensitively
        if upper.startswith(ENV_PREFIX) and upper not in known and upper not in NOT_SETTINGS:
            found.append(f"{name} is not a komt-bot setting and is ignored{_closest(upper, known)}")
    return found


def unknown_keys(model: type[BaseModel], data: Mapping[str, Any], where: str) -> list[str]:
    """One warning per key of the TOML ``data`` (read from ``where``) that names no setting of ``model``."""
    known = {".".join(path) for path in setting_paths(model)}
    sections = {".".join(path) for path in setting_paths(model) if _is_section(model, path)}
    found = []

    def walk(table: Mapping[str, Any], prefix: str) -> None:
        for key, value in table.items():
            dotted = f"{prefix}{key}"
            if dotted not in known:
                found.append(f"{where}: {dotted} is not a komt-bot setting and is ignored{_closest(dotted, known)}")
            elif dotted in sections and isinstance(value, Mapping):
                walk(value, dotted + ".")

    walk(data, "")
    return found


def _is_section(model: type[BaseModel], path: tuple[str, ...]) -> bool:
    annotation: Any = model
    for name in path:
        annotation = annotation.model_fields[name].annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def warn_unknown_env(model: type[BaseModel], environ: Mapping[str, str]) -> None:
    """Log a warning for every ``KOMT_`` variable that names no setting."""
    for warning in unknown_env(model, environ):
        log.warning(warning)


def read_toml(model: type[BaseModel], path: Path) -> dict[str, Any]:
    """The settings in the TOML file ``path``, its unknown keys warned about and left out.

    Raises :class:`ConfigError` with ``FILE:LINE: what is wrong`` for a syntax error.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(toml_error(path, e)) from e
    for warning in unknown_keys(model, data, str(path)):
        log.warning(warning)
    return {key: value for key, value in data.items() if key in model.model_fields}


def toml_error(path: Path, error: tomllib.TOMLDecodeError) -> str:
    """``FILE:LINE: message (column N)`` for a TOML syntax error."""
    message = str(error)
    position = _TOML_POSITION.search(message)
    if position is None:
        return f"{path}: {message}"
    line, column = position.groups()
    return f"{path}:{line}: {message[: position.start()]} (column {column})"
