"""Experiment configuration: frozen dataclasses, TOML loading, `--set` overrides, grid expansion.

A config file has top-level keys and a few sections::

    name = "ts_quick"            # results go to results/<name> unless --out is given
    seed = 0
    replicas = 256               # replicas per grid point
    steps = 4000
    snapshot_every = 200

    [model]      # name = "teacher_student" (see dysonbm.registry.REGISTRY) and the model's
                 # own static settings (fields of its dataclass)
    [train]      # lr, batch_size, init_std (defaults for the grid), optimizer
    [data]       # protocol = "online" | "fixed", batches_per_epoch or n_data, ...
    [ensemble]   # what a replica draws for itself: problem / inputs / noise / test =
                 # "replica" | "point" | "run" (dysonbm.ensemble; defaults: the published protocol)
    [divergence] # bounds beyond which a replica is declared diverged and frozen
    [record]     # what is saved at snapshots
    [run]        # chunking and devices (never changes the numbers)

    [[sweep]]    # a product grid over any per-replica hyperparameter; blocks are concatenated
    lr = [0.1, 0.2]
    batch_size = [4, 8, 16]

Every error is a `ConfigError` whose message names the field and the value, so the command
line can print one line and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dysonbm.registry import REGISTRY, build_model, is_process
from dysonbm import sizes
from dysonbm.values import HP_BASE, INT32_MAX, ConfigError
from dysonbm.values import coerce as _coerce


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 0.1
    batch_size: int = 16
    init_std: float = 0.1
    optimizer: str = "sgd"  # sgd | momentum | adam | adamw
    momentum: float = 0.9
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


#: ``[train] optimizer`` names and the optax transforms they stand for, as functions of the
#: learning rate (a traced per-replica array in the engine). From Python any optax transform
#: works (`dysonbm.sgd`); a config names one of these. optax is passed in, imported only when
#: a transform is built, so that this module stays free of jax.
OPTIMIZERS = {
    "sgd": lambda optax, t, lr: optax.sgd(lr),
    "momentum": lambda optax, t, lr: optax.sgd(lr, momentum=t.momentum, nesterov=t.nesterov),
    "adam": lambda optax, t, lr: optax.adam(lr, b1=t.b1, b2=t.b2, eps=t.eps),
    # the decay is the model's per-replica ``weight_decay`` (a sweepable hyperparameter)
    "adamw": lambda optax, t, lr, weight_decay: optax.adamw(lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=weight_decay),
}
#: per-replica hyperparameters an optimiser reads besides lr (`dysonbm.sgd`: ``tx.hyperparameters``)
OPTIMIZER_HYPERPARAMETERS = {"adamw": ("weight_decay",)}


def make_optimizer(train: TrainConfig):
    """``lr -> optax.GradientTransformation``: the transform ``train.optimizer`` names, with
    the settings of ``train``."""
    import optax

    build = OPTIMIZERS[train.optimizer]

    def tx(lr, **hp):
        return build(optax, train, lr, **hp)

    tx.hyperparameters = OPTIMIZER_HYPERPARAMETERS.get(train.optimizer, ())
    return tx


@dataclass(frozen=True)
class DataConfig:
    protocol: str = "online"  # online (fresh samples every step) | fixed (a finite dataset)
    batches_per_epoch: int = 0  # dataset of batches_per_epoch * batch_size samples
    n_data: int = 0  # or a dataset of n_data samples whatever the batch size
    reshuffle: bool = False  # reshuffle the dataset each epoch (else fixed order)
    n_test: int = 128  # held-out test set (drawn at the [ensemble] test granularity)
    text: str = ""  # a UTF-8 text file: the corpus of a model that reads text (transformer)


@dataclass(frozen=True)
class DivergenceConfig:
    max_loss: float = 1e12
    max_weight: float = 1e6


@dataclass(frozen=True)
class RecordConfig:
    spectra: bool = True
    weights: bool = False


@dataclass(frozen=True)
class RunConfig:
    chunk_size: int = 0  # replicas per compiled chunk; 0 = all (rounded to the devices)
    segment_snapshots: int = 0  # snapshots per host segment; 0 = about 20 segments
    devices: int = 0  # devices to shard over; 0 = all local devices
    unroll: int = 1  # SGD steps fused per scan iteration
    dtype: str = "float32"


# settings read only by one optimiser, and those of a finite dataset
OPTIMIZER_SETTINGS = {"sgd": (), "momentum": ("momentum", "nesterov"), "adam": ("b1", "b2", "eps"),
                      "adamw": ("b1", "b2", "eps")}
DATASET_SETTINGS = ("batches_per_epoch", "n_data", "reshuffle")
# sections an SDE process never reads (it has no loss, optimiser, data or recorded weights)
_PROCESS_FREE = ("train", "data", "divergence", "record")
SECTIONS = {
    "train": TrainConfig,
    "data": DataConfig,
    "divergence": DivergenceConfig,
    "record": RecordConfig,
    "run": RunConfig,
}
TOP_LEVEL = {"name": str, "seed": int, "replicas": int, "steps": int, "snapshot_every": int}
SEED_MAX = 2**32 - 1  # jax.random.key keeps 32 bits of the seed: 2**32 would be seed 0 again


@dataclass(frozen=True)
class Config:
    name: str
    model: str
    seed: int = 0
    replicas: int = 16
    steps: int = 1000
    snapshot_every: int = 100
    model_params: dict = field(default_factory=dict)
    ensemble: dict = field(default_factory=dict)  # as requested; `resolved_ensemble` fills in defaults
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    divergence: DivergenceConfig = DivergenceConfig()
    record: RecordConfig = RecordConfig()
    run: RunConfig = RunConfig()
    sweeps: tuple = ()

    @property
    def n_snapshots(self) -> int:
        """Snapshots including the initial state."""
        return self.steps // self.snapshot_every + 1

    def to_dict(self) -> dict:
        """The settings this run reads (what a manifest records): those `unread` names are
        left out, so that a dict written here loads again with `from_dict`."""
        out = {k: getattr(self, k) for k in TOP_LEVEL}
        out["model"] = {"name": self.model, **self.model_params}
        out["ensemble"] = dict(self.ensemble)
        skip = unread(self, build_model(self))
        for name in SECTIONS:
            values = {k: v for k, v in dataclasses.asdict(getattr(self, name)).items() if f"{name}.{k}" not in skip}
            if values or name not in _PROCESS_FREE:
                out[name] = values
        out["sweep"] = [dict(s) for s in self.sweeps]
        return out


# ---------------------------------------------------------------------------------------
# loading

def load_toml(path: str | Path) -> dict:
    """A TOML file, or the shipped preset of that name (`dysonbm.presets`)."""
    from dysonbm import presets

    path = presets.lookup(str(path)) or Path(path)
    if path.is_dir():
        raise ConfigError("config", str(path), "is a folder, not a TOML file")
    if not path.is_file():
        raise ConfigError("config", str(path), f"no such file or preset (presets: {', '.join(presets.names())})")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("config", str(path), f"malformed TOML ({err})") from None
    except UnicodeDecodeError as err:  # tomllib decodes the bytes as UTF-8 itself
        raise ConfigError("config", str(path), f"not UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r})") from None
    except OSError as err:
        raise ConfigError("config", str(path), f"cannot be read ({err.strerror or type(err).__name__})") from None


def parse_value(text: str) -> Any:
    """A `--set` value: a TOML literal (number, bool, list, quoted string) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """Set dotted keys (`train.lr`, `model.noise`, `steps`) in a raw config dict (copied).

    All ``sweep.<name>`` keys together make ONE product block: merged into the file's sweep
    when it has a single block (a key swept there is replaced, not added twice), else the
    block replaces the file's blocks. ``sweep`` itself replaces the whole list of blocks.
    """
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    block = {}
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] == "sweep" and len(parts) > 1:
            if len(parts) != 2 or not parts[1]:
                raise ConfigError(key, value, "use sweep.<name>=[values]")
            block[parts[1]] = value
            continue
        target = raw
        for part in parts[:-1]:
            sub = target.setdefault(part, {})
            if not isinstance(sub, dict):
                raise ConfigError(key, value, f"{part!r} is not a section")
            target = sub
        target[parts[-1]] = value
    if block:
        blocks = raw.get("sweep")
        blocks = [blocks] if isinstance(blocks, dict) else blocks
        if isinstance(blocks, list) and len(blocks) == 1 and isinstance(blocks[0], dict):
            block = {**blocks[0], **block}
        raw["sweep"] = [block]
    return raw


def parse_set_args(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--set", item, "expected key=value")
        key, text = item.split("=", 1)
        if not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError("--set", item, "expected key=value with a key like train.lr")
        out[key.strip()] = parse_value(text.strip())
    return out


def _section(name: str, cls: type, raw: Any):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(name, raw, "expected a table")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}", value, f"unknown key (known: {', '.join(known)})")
        values[key] = _coerce(f"{name}.{key}", value, _type_of(known[key]))
    return cls(**values)


def _type_of(f: dataclasses.Field) -> type:
    return {"float": float, "int": int, "str": str, "bool": bool}.get(str(f.type), type(f.default))


def from_dict(raw: dict) -> Config:
    """Validate a raw dict (as read from TOML) into a Config; raises ConfigError."""

    allowed = set(TOP_LEVEL) | set(SECTIONS) | {"model", "sweep", "ensemble"}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(key, value, "unknown key")
    top = {}
    for key, kind in TOP_LEVEL.items():
        if key in raw:
            top[key] = _coerce(key, raw[key], kind)
    model_raw = raw.get("model")
    if not isinstance(model_raw, dict) or "name" not in model_raw:
        raise ConfigError("model.name", None, f"missing (one of: {', '.join(sorted(REGISTRY))})")
    model_raw = dict(model_raw)
    top["model"] = model_raw.pop("name")
    if top["model"] not in REGISTRY:
        raise ConfigError("model.name", top["model"], f"unknown model (one of: {', '.join(sorted(REGISTRY))})")
    top.setdefault("name", top["model"])
    for key in ("replicas", "steps", "snapshot_every"):
        if key in top and top[key] <= 0:
            raise ConfigError(key, top[key], "must be positive")
    sections = {name: _section(name, cls, raw.get(name)) for name, cls in SECTIONS.items()}
    ensemble = raw.get("ensemble") or {}
    if not isinstance(ensemble, dict):
        raise ConfigError("ensemble", ensemble, "expected a table")
    cfg = Config(**top, model_params=model_raw, ensemble=dict(ensemble), **sections, sweeps=_sweeps(raw.get("sweep")))
    skip = unread(cfg, build_model(cfg))
    for name in SECTIONS:
        for key, value in (raw.get(name) or {}).items():
            if f"{name}.{key}" in skip:
                raise ConfigError(f"{name}.{key}", value, skip[f"{name}.{key}"])
    validate(cfg)
    resolved_ensemble(cfg)
    return cfg


def unread(cfg: Config, model) -> dict[str, str]:
    """Section settings that this run would not read, each with the reason. A config that
    gives one is refused (a setting accepted and ignored would run something else than asked
    for, silently); `Config.to_dict` leaves them out."""
    out = {}
    if is_process(model):
        for name in _PROCESS_FREE:
            for f in fields(SECTIONS[name]):
                out[f"{name}.{f.name}"] = f"an SDE process ({cfg.model!r}) has no [{name}] settings"
        return out
    for optimizer, names in OPTIMIZER_SETTINGS.items():
        # an unknown optimiser is named as such by `validate`, not through its settings
        if cfg.train.optimizer in OPTIMIZER_SETTINGS and optimizer != cfg.train.optimizer:
            for name in set(names) - set(OPTIMIZER_SETTINGS[cfg.train.optimizer]):
                out[f"train.{name}"] = f"read only by train.optimizer = {optimizer!r} (this config: {cfg.train.optimizer!r})"
    if "text" not in getattr(model, "__dataclass_fields__", {}):
        out["data.text"] = f"model {cfg.model!r} reads no text"
    if not model.uses_data:
        for name in ("protocol", *DATASET_SETTINGS):
            out[f"data.{name}"] = f"model {cfg.model!r} reads no training data with these settings"
    elif cfg.data.protocol == "online":
        for name in DATASET_SETTINGS:
            out[f"data.{name}"] = 'no dataset with data.protocol = "online" (fresh samples every step)'
    return out


def resolved_ensemble(cfg: Config, model=None) -> dict[str, str]:
    """Granularity of each quenched ingredient: the `[ensemble]` table over the model's
    published defaults (`dysonbm.ensemble`)."""
    from dysonbm import ensemble

    model = model if model is not None else build_model(cfg)
    try:
        return ensemble.resolve(model, cfg.data.protocol, cfg.ensemble)
    except ensemble.EnsembleError as err:
        raise ConfigError(err.field, err.value, str(err)) from None


def _sweeps(raw: Any) -> tuple:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(b, dict) for b in raw):
        raise ConfigError("sweep", raw, "expected [[sweep]] tables of lists")
    out = []
    for block in raw:
        if not block:  # would otherwise run the [train] point as if nothing were swept
            raise ConfigError("sweep", block, "empty [[sweep]] table: give at least one key = [values]")
        out.append({k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in block.items()})
    return tuple(out)


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    raw = load_toml(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return from_dict(raw)


# ---------------------------------------------------------------------------------------
# validation and grid expansion

def model_of(stored: dict):
    """The model of a stored (manifest) config: what `Results.model` returns."""
    return build_model(from_dict(stored))


def hyper_names(model) -> tuple[str, ...]:
    return HP_BASE + tuple(model.sweepable)


def grid_points(cfg: Config, model=None) -> list[dict[str, float]]:
    """Expand the sweeps into grid points: dicts of every per-replica hyperparameter."""
    model = model if model is not None else build_model(cfg)
    base = {"lr": cfg.train.lr, "batch_size": cfg.train.batch_size, "init_std": cfg.train.init_std}
    base.update(model.defaults())
    names = model.sweepable if is_process(model) else hyper_names(model)
    points = [] if cfg.sweeps else [dict(base)]
    for block in cfg.sweeps:
        for key, values in block.items():
            if key not in names:
                raise ConfigError(f"sweep.{key}", list(values), f"not a sweepable hyperparameter ({', '.join(names)})")
            if not values:
                raise ConfigError(f"sweep.{key}", [], "empty list")
        keys = list(block)
        for combo in itertools.product(*(block[k] for k in keys)):
            point = dict(base)
            for key, value in zip(keys, combo):
                point[key] = _coerce(f"sweep.{key}", value, int if key == "batch_size" else float)
            points.append(point)
    for point in points:
        _check_point(cfg, point)
        if hasattr(model, "validate"):  # an SDE process checks its own parameters
            try:
                model.validate(point)
            except ValueError as err:
                swept = sorted({k for b in cfg.sweeps for k in b})
                raise ConfigError("sweep" if swept else "model", {k: point[k] for k in model.sweepable}, str(err)) from None
    return points


def _check_point(cfg: Config, point: dict) -> None:
    where = lambda k: f"sweep.{k}" if any(k in b for b in cfg.sweeps) else f"train.{k}"  # noqa: E731
    for key in HP_BASE:
        if point[key] <= 0:
            raise ConfigError(where(key), point[key], "must be positive")
    if point["batch_size"] > INT32_MAX:  # per-replica batch sizes are int32 on device
        raise ConfigError(where("batch_size"), point["batch_size"], f"at most {INT32_MAX}")
    if cfg.data.protocol != "online" and cfg.data.n_data and point["batch_size"] > cfg.data.n_data:
        raise ConfigError(where("batch_size"), point["batch_size"], f"larger than the dataset (data.n_data = {cfg.data.n_data})")


def _check_optimizer_hyperparameters(cfg: Config) -> None:
    """A per-replica setting read only by an optimiser (AdamW's weight decay) needs that
    optimiser, and the optimiser needs a model that carries the setting."""
    sweepable = getattr(REGISTRY[cfg.model], "sweepable", ())
    wanted = OPTIMIZER_HYPERPARAMETERS.get(cfg.train.optimizer, ())
    for name in wanted:
        if name not in sweepable:
            raise ConfigError("train.optimizer", cfg.train.optimizer,
                              f"needs a model with a {name} setting, not {cfg.model!r}")
    for owner, names in OPTIMIZER_HYPERPARAMETERS.items():
        for name in set(names) - set(wanted):
            given = [(f"model.{name}", cfg.model_params[name])] if name in cfg.model_params else []
            given += [(f"sweep.{name}", list(b[name])) for b in cfg.sweeps if name in b]
            if given:
                raise ConfigError(*given[0],
                                  f"read only by train.optimizer = {owner!r} (this config: {cfg.train.optimizer!r})")


def validate(cfg: Config) -> None:
    t, d, r = cfg.train, cfg.data, cfg.run
    if not isinstance(cfg.name, str) or not cfg.name or cfg.name in (".", "..") or any(c in cfg.name for c in "/\\\0"):
        # the default results directory is results/<name>: a path here would escape it
        raise ConfigError("name", cfg.name, "must be a plain name without path separators (it names results/<name>)")
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError("seed", cfg.seed, f"must be in 0..{SEED_MAX} (the random key keeps 32 bits)")
    if cfg.steps > INT32_MAX:
        raise ConfigError("steps", cfg.steps, f"at most {INT32_MAX} (steps are counted in int32)")
    if t.optimizer not in OPTIMIZERS:
        raise ConfigError("train.optimizer", t.optimizer, f"one of {', '.join(OPTIMIZERS)}")
    _check_optimizer_hyperparameters(cfg)
    # defaults included: they are what an optimiser switched to by --set would read
    for name in ("momentum", "b1", "b2"):
        if not 0 <= getattr(t, name) < 1:
            raise ConfigError(f"train.{name}", getattr(t, name), "must be in [0, 1)")
    if not t.eps > 0:
        raise ConfigError("train.eps", t.eps, "must be positive")
    if d.protocol == "shared":
        raise ConfigError("data.protocol", d.protocol, 'use protocol = "fixed" with [ensemble] inputs = "point"')
    if d.protocol not in ("online", "fixed"):
        raise ConfigError("data.protocol", d.protocol, "one of online, fixed")
    if d.protocol != "online":
        if d.batches_per_epoch and d.n_data:
            raise ConfigError("data.n_data", d.n_data, "give either data.n_data or data.batches_per_epoch")
        if not (d.batches_per_epoch or d.n_data):
            raise ConfigError("data.batches_per_epoch", d.batches_per_epoch, f"protocol {d.protocol!r} needs a dataset size (batches_per_epoch or n_data)")
    for name in ("batches_per_epoch", "n_data"):
        if getattr(d, name) < 0:
            raise ConfigError(f"data.{name}", getattr(d, name), "must not be negative")
    if d.n_test <= 0:
        raise ConfigError("data.n_test", d.n_test, "must be positive")
    if cfg.steps % cfg.snapshot_every:
        raise ConfigError("snapshot_every", cfg.snapshot_every, f"must divide steps = {cfg.steps}")
    for name in ("max_loss", "max_weight"):
        if getattr(cfg.divergence, name) <= 0:
            raise ConfigError(f"divergence.{name}", getattr(cfg.divergence, name), "must be positive")
    for name in ("chunk_size", "segment_snapshots", "devices"):
        if getattr(r, name) < 0:
            raise ConfigError(f"run.{name}", getattr(r, name), "must not be negative")
    if r.unroll < 1:
        raise ConfigError("run.unroll", r.unroll, "must be at least 1")
    if r.dtype not in ("float32", "float64"):
        raise ConfigError("run.dtype", r.dtype, "float32 or float64")
    sizes.check_grid(cfg)  # before the grid is expanded into a list of points
    model = build_model(cfg)
    grid_points(cfg, model)
