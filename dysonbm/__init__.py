"""dysonbm: random-matrix dynamics of learning in JAX.

    import dysonbm as dbm
    res = dbm.run("ts_quick", steps=500, train__lr=0.05)  # a preset or a path; `__` stands for `.`
    res["eigs"].shape      # (point, replica, snapshot, level)
    res = dbm.load("results/ts_quick")

    init_fn, step_fn = dbm.sgd(dbm.TeacherStudent(), optax_tx)     # SGD of one replica
    out = dbm.simulate(p.init, p.step, p.observe, key=k, hp=hp, steps=1000, every=100)

Importing touches no device: the `dbm` command sets XLA's flags (the host device count)
before the first computation, which is when jax reads them.
"""

from __future__ import annotations

from dysonbm import analysis, config, engine, io, models, registry, runner, sde
from dysonbm._version import __version__
from dysonbm.analysis import langevin_comparison, level_sde, phases, rmt, scaling, spectrum, weights
from dysonbm.config import Config, ConfigError
from dysonbm.engine import Trajectory, simulate
from dysonbm.io import Results, load
from dysonbm.models import GaussianRBM, LinearNet, Multilayer, TeacherStudent, Transformer
from dysonbm.sde import DysonBM, LevelSDE, MatrixDBM, MatrixWishart, WishartProcess, temperature

# last: importing the submodule `dysonbm.sgd` sets the package attribute `sgd` to the module;
# this binds the name to the function, which `dbm.sgd(...)` calls
from dysonbm.sgd import Bounds, sgd  # noqa: E402  isort: skip


def run(config_or_path, out=None, overwrite: bool = False, progress: bool = False, **overrides) -> Results:
    """Run an experiment from a `Config` or a TOML path; keyword overrides use `__` for `.`
    (``train__lr=0.05`` sets ``train.lr``). Returns the same `Results` as `load`."""
    sets = {key.replace("__", "."): value for key, value in overrides.items()}
    if isinstance(config_or_path, Config):
        cfg = config.from_dict(config.apply_overrides(config_or_path.to_dict(), sets)) if sets else config_or_path
    else:
        cfg = config.load(config_or_path, sets)
    return runner.run(cfg, out=out, overwrite=overwrite, progress=progress)


__all__ = [
    "__version__", "run", "load", "Results", "Config", "ConfigError", "sgd", "Bounds", "simulate", "Trajectory",
    "TeacherStudent", "Multilayer", "GaussianRBM", "LinearNet", "Transformer", "DysonBM", "WishartProcess", "LevelSDE",
    "MatrixDBM", "MatrixWishart",
    "temperature", "analysis", "config", "engine", "io", "models", "registry", "runner", "sde",
    "langevin_comparison", "level_sde", "phases", "rmt", "scaling", "spectrum", "weights",
]
