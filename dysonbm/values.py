"""The vocabulary of config values below `config` and `registry`: the error every bad value raises,
coercion of TOML values to a field's type, and the names the runner owns."""

from __future__ import annotations

import math
from typing import Any

HP_BASE = ("lr", "batch_size", "init_std")
INT32_MAX = 2**31 - 1  # steps, batch sizes and replica ids are int32 on device

# model fields the runner sets itself, never read from a config
RUNNER_SET = {"chains": "set by the runner to each grid point's batch size (train.batch_size, sweep.batch_size)"}


class ConfigError(ValueError):
    """Bad input: the message names the field and the value."""

    def __init__(self, field_name: str, value: Any, reason: str):
        self.field = field_name
        self.value = value
        super().__init__(f"{field_name} = {value!r}: {reason}")


def coerce(field_name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(field_name, value, "expected true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field_name, value, "expected an integer")
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(field_name, value, "expected an integer")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field_name, value, "expected a number")
        if not math.isfinite(value):
            raise ConfigError(field_name, value, "expected a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(field_name, value, "expected a string")
        return value
    return value


def freeze(value):
    """TOML arrays as (nested) tuples: a model's fields must be hashable."""
    return tuple(freeze(v) for v in value) if isinstance(value, list) else value
