"""Typed configuration read once from the environment at start-up.

Each service declares a frozen dataclass with a `from_env(env)` constructor
built from the readers below. A bad value fails fast with a message that
names the variable and shows the value; nothing else reads `os.environ`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default).strip() or default


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_int_or_default(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    """`env_int` for a setting applied at process start, before a service's
    configuration is read, which must never stop it: a bad value logs a
    warning and gives `default`."""
    try:
        return env_int(env, name, default, minimum=minimum)
    except ConfigError as error:
        logger.warning("%s; using %d", error, default)
        return default


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float | None = None) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def env_path(env: Mapping[str, str], name: str, default: Path | str) -> Path:
    raw = env.get(name)
    return Path(raw).expanduser() if raw and raw.strip() else Path(default).expanduser()


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(env, name, default)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def env_list(env: Mapping[str, str], name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())
