"""Names → model and process classes: the one place a config meets the models.

`build_model(cfg)` makes the model or process a config names (its `[model]` table; unknown or
ignored settings are a `ConfigError`); `is_process` tells an eigenvalue SDE from a trained model.
"""

from __future__ import annotations

from dataclasses import fields

from dysonbm.models import GaussianRBM, LinearNet, Multilayer, TeacherStudent
from dysonbm.sde import DysonBM, MatrixDBM, MatrixWishart, Process, WishartProcess
from dysonbm.values import HP_BASE, RUNNER_SET, ConfigError, coerce, freeze

MODELS: dict[str, type] = {cls.name: cls for cls in (TeacherStudent, Multilayer, GaussianRBM, LinearNet)}
# eigenvalue SDEs run through the same runner (`[model] name = "dyson"`, ...)
PROCESSES: dict[str, type] = {"dyson": DysonBM, "wishart": WishartProcess, "matrix_dyson": MatrixDBM,
                              "matrix_wishart": MatrixWishart}
REGISTRY: dict[str, type] = {**MODELS, **PROCESSES}


def is_process(model) -> bool:
    """An eigenvalue SDE (`dysonbm.sde.Process`) rather than a trained model."""
    return isinstance(model, Process)


def build_model(cfg):
    """Instantiate the model dataclass from the `[model]` table; unknown keys are errors."""
    cls = REGISTRY[cfg.model]
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in cfg.model_params.items():
        if key in RUNNER_SET and key in known:
            raise ConfigError(f"model.{key}", value, RUNNER_SET[key])
        if key not in known or not known[key].init:
            hint = f"; the per-replica value is train.{key} (or sweep.{key})" if key in HP_BASE else ""
            raise ConfigError(f"model.{key}", value, f"unknown setting of model {cfg.model!r}{hint}")
        default = known[key].default
        if isinstance(default, (bool, int, float, str)) and not isinstance(value, list):
            value = coerce(f"model.{key}", value, type(default))
        elif isinstance(value, list):
            value = freeze(value)
        values[key] = value
    try:
        model = cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError("model", cfg.model_params, str(err)) from None
    ignored = getattr(model, "unread_settings", dict)()
    for key in cfg.model_params:
        if key in ignored:
            raise ConfigError(f"model.{key}", cfg.model_params[key], ignored[key])
    return model
