"""dysonbm: random-matrix dynamics of learning in JAX.

    import dysonbm as dbm
    res = dbm.run("ts_quick", steps=500, train__lr=0.05)  # a preset or a path; `__` stands for `.`
    res["eigs"].shape      # (point, replica, snapshot, level)
    res = dbm.load("results/ts_quick")
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib

# config and io do not import jax, so the `dbm` command can set XLA flags first
from dysonbm import config, io  # noqa: E402
from dysonbm.config import Config, ConfigError  # noqa: E402
from dysonbm.io import Results, load  # noqa: E402

_LAZY = ("engine", "models", "runner", "rmt", "dyson", "observables", "phases", "plots", "sgd_langevin",
         "phase_langevin")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"dysonbm.{name}")
    raise AttributeError(f"module 'dysonbm' has no attribute {name!r}")


def run(config_or_path, out=None, overwrite: bool = False, progress: bool = False, **overrides) -> Results:
    """Run an experiment from a `Config` or a TOML path; keyword overrides use `__` for `.`
    (``train__lr=0.05`` sets ``train.lr``). Returns the same `Results` as `load`."""
    from dysonbm import runner

    sets = {key.replace("__", "."): value for key, value in overrides.items()}
    if isinstance(config_or_path, Config):
        cfg = config.from_dict(config.apply_overrides(config_or_path.to_dict(), sets)) if sets else config_or_path
    else:
        cfg = config.load(config_or_path, sets)
    return runner.run(cfg, out=out, overwrite=overwrite, progress=progress)


__all__ = ["Config", "ConfigError", "Results", "config", "io", "load", "run", *_LAZY]
