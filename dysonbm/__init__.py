"""dysonbm: random-matrix dynamics of learning in JAX.

    import dysonbm as dbm
    res = dbm.run("ts_quick", steps=500, train__lr=0.05)  # a preset or a path; `__` stands for `.`
    res["eigs"].shape      # (point, replica, snapshot, level)
    res = dbm.load("results/ts_quick")

    init_fn, step_fn = dbm.sgd(dbm.TeacherStudent(), optax_tx)     # SGD of one replica
    out = dbm.simulate(p.init, p.step, p.observe, key=k, hp=hp, steps=1000, every=100)

The kernels, models and processes are imported on first use: ``import dysonbm`` loads no
jax, so the `dbm` command can set XLA's flags (the host device count) before jax starts.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib

# config and io do not import jax, so the `dbm` command can set XLA flags first
from dysonbm import config, io  # noqa: E402
from dysonbm.config import Config, ConfigError  # noqa: E402
from dysonbm.io import Results, load  # noqa: E402

_LAZY = ("engine", "models", "runner", "rmt", "dyson", "observables", "phases", "plots", "sgd_langevin",
         "rbm_langevin", "phase_langevin", "spectrum", "weights")

# name -> the module that defines it; the SGD kernel's module is not called `sgd`, since
# importing a submodule of that name would rebind `dysonbm.sgd` to the module
_NAMES = {
    "sgd": "sgd_kernel", "Bounds": "sgd_kernel",
    "simulate": "engine", "Trajectory": "engine",
    "TeacherStudent": "models.teacher_student", "Multilayer": "models.multilayer", "GaussianRBM": "models.gaussian_rbm",
    "DysonBM": "dyson", "WishartProcess": "dyson", "MatrixDBM": "dyson", "MatrixWishart": "dyson",
}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"dysonbm.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(f"dysonbm.{_NAMES[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'dysonbm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_NAMES))


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


__all__ = ["Config", "ConfigError", "Results", "config", "io", "load", "run", *_LAZY, *_NAMES]
