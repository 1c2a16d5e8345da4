"""What a run will do before it does it: the replica ids it covers, the chunk size that fits the
devices' memory, the chunks and the segments between checkpoints, and the jitted programs of a
chunk."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dysonbm import engine, ensemble, sizes
from dysonbm.data import DataLayout
from dysonbm._version import __version__
from dysonbm.config import Config, grid_points, hyper_names, make_optimizer, resolved_ensemble
from dysonbm.registry import build_model, is_process


CPU_BUDGET = 2 << 30  # bytes for a chunk when the backend reports no memory limit
DEVICE_FRACTION = 0.5  # of the free device memory
HEADROOM = 2  # device bytes per replica = HEADROOM × the arrays we can count
CPU_REPLICAS_PER_DEVICE = 64


def _segment_snapshots(n_intervals: int, requested: int) -> int:
    """Snapshot intervals per segment: a divisor of the total (one compile), ~20 segments."""
    if requested:
        return min(requested, n_intervals)
    target = max(1, n_intervals // 20)
    # divisors come in pairs (d, n/d) with d <= sqrt(n): O(sqrt n), not a loop over every snapshot
    divisors = set()
    for d in range(1, math.isqrt(n_intervals) + 1):
        if n_intervals % d == 0:
            divisors.update((d, n_intervals // d))
    return min(divisors, key=lambda d: (abs(d - target), d))


def shard_range(n_points: int, replicas: int, index: int, count: int) -> tuple[int, int]:
    """Replica ids ``[lo, hi)`` of shard ``index`` of ``count``: contiguous, whole grid points
    when there are at least as many points as shards, else an even split of the ids."""
    if not 0 <= index < count:
        raise ValueError(f"--shard = {index}/{count}: need 0 <= i < n")
    total = n_points * replicas
    if count > total:
        raise ValueError(f"--shard = {index}/{count}: more shards than the {total} replicas")
    if count <= n_points:
        return (index * n_points // count) * replicas, ((index + 1) * n_points // count) * replicas
    return index * total // count, (index + 1) * total // count


def _nbytes(tree) -> int:
    """Bytes of a pytree of arrays or shape structs (typed keys counted as their key data)."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.eval_shape(jax.random.key_data, leaf)
        total += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    return total


def device_budget(devices) -> tuple[int, str]:
    """Bytes a chunk may use on ``devices`` together, and where the figure comes from."""
    free, _ = sizes.device_free(devices)
    if free is None:
        return CPU_BUDGET, f"{CPU_BUDGET / 2**30:.0f} GiB default (no memory limit reported)"
    return int(DEVICE_FRACTION * free), f"{DEVICE_FRACTION:.0%} of free device memory"


class Padding(NamedTuple):
    """What the chunks whose batches (and persistent chains) are padded to ``batch`` run."""

    batch: int
    model: object
    layout: DataLayout
    sim: engine.Simulation
    init: Callable
    segment: Callable


def chunk_ranges(point_batch: list[int], replicas: int, lo: int, hi: int, chunk: int) -> list[tuple[int, int]]:
    """Replica ids ``[start, stop)`` of each chunk of ``[lo, hi)``: at most ``chunk`` ids, all
    of grid points of one padded batch size (``point_batch[p]``), in id order."""
    ranges, start = [], lo
    while start < hi:
        p = start // replicas
        end = (p + 1) * replicas  # the run of consecutive points padded alike ends at `end`
        while end < hi and point_batch[end // replicas] == point_batch[p]:
            end += replicas
        stop = min(start + chunk, end, hi)
        ranges.append((start, stop))
        start = stop
    return ranges


def data_layout(cfg: Config, max_batch: int) -> DataLayout:
    """The engine's data layout of a config's `[data]` table, for batches of up to ``max_batch``."""
    d = cfg.data
    if d.protocol == "online":
        return DataLayout("online", max_batch, n_test=d.n_test)
    n_max = d.n_data if d.n_data else d.batches_per_epoch * max_batch
    return DataLayout(d.protocol, max_batch, n_max, d.batches_per_epoch, d.n_data, d.reshuffle, d.n_test)


def simulation(model, cfg: Config, layout: DataLayout) -> engine.Simulation:
    """The simulation a config describes: SGD replicas of a model under the optax transform
    its ``[train] optimizer`` names, or an SDE process."""
    if is_process(model):
        return engine.make_sde_sim(model)
    return engine.make_sgd_sim(model, make_optimizer(cfg.train), layout, cfg.divergence,
                               spectra=cfg.record.spectra, weights=cfg.record.weights)


class Plan:
    """Everything a run needs that follows from its config: model, grid, ensemble, sharding.

    ``shard=(i, n)`` restricts the run to shard i of n (see `shard_range`); ``chunk_size``
    overrides ``run.chunk_size``, where 0 picks the largest chunk that fits ``memory_budget``
    bytes (default: see `device_budget`).
    """

    def __init__(self, cfg: Config, devices: int | None = None, chunk_size: int | None = None,
                 shard: tuple[int, int] | None = None, memory_budget: int | None = None):
        if cfg.run.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.cfg = cfg
        sizes.check_sizes(cfg, shard)  # from the config alone, before anything proportional to the run
        model = build_model(cfg)
        self.points = grid_points(cfg, model)
        self.n_points, self.replicas = len(self.points), cfg.replicas
        self.total = self.n_points * self.replicas
        self.shard = shard
        self.lo, self.hi = shard_range(self.n_points, self.replicas, *shard) if shard else (0, self.total)
        self.n_ids = self.hi - self.lo
        # batches and chains are padded to the point's own batch size, so a replica's numbers
        # never depend on the grid around it; an SDE process has no batch (one padding)
        self.max_batch = max(int(p["batch_size"]) for p in self.points)
        self.point_batch = [self.max_batch if is_process(model) else int(p["batch_size"]) for p in self.points]
        self.ensemble = resolved_ensemble(cfg, model)
        self.names = hyper_names(model)

        # local devices: in a multi-process job each process runs its own shard (see module doc)
        all_devices = jax.local_devices()
        n_dev = devices or cfg.run.devices or len(all_devices)
        if n_dev > len(all_devices):
            raise ValueError(f"run.devices = {n_dev}: only {len(all_devices)} available")
        self.devices = all_devices[:n_dev]
        self.mesh = Mesh(np.array(self.devices), ("replica",))
        self.batched = NamedSharding(self.mesh, PartitionSpec("replica"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

        self.n_intervals = cfg.steps // cfg.snapshot_every
        self.seg = _segment_snapshots(self.n_intervals, cfg.run.segment_snapshots)
        self.n_segments = self.n_intervals // self.seg
        self.steps = np.arange(self.n_intervals + 1) * cfg.snapshot_every

        self._model = model
        self.paddings: dict[int, Padding] = {}
        # memory is sized for the largest padding; `model`, `layout`, `sim`, `init` and
        # `segment` are its
        top = self.padding(self.max_batch)
        self.model, self.layout, self.sim = top.model, top.layout, top.sim
        self.init, self.segment = top.init, top.segment

        # per grid point; a replica's are its point's (`hp_of`): nothing here grows with R
        self.point_hp = {name: np.asarray([p[name] for p in self.points],
                                          np.int32 if name == "batch_size" else jnp.result_type(float))
                         for name in self.names}

        root = jax.random.key(cfg.seed)
        self.roots = {"replica": jax.random.fold_in(root, ensemble.REPLICA)}
        self.roots.update({name: jax.random.fold_in(root, ensemble.TAGS[name]) for name in self.ensemble})

        self.budget, self.budget_source = (memory_budget, "given") if memory_budget else device_budget(self.devices)
        self.footprint = self._footprint()
        requested = chunk_size or cfg.run.chunk_size
        self.auto_chunk = not requested
        self.chunk = min(requested or self._fitting_chunk(), self.n_ids)  # real replicas, at most
        # a chunk never mixes paddings, so a run has a few more chunks than n_ids / chunk
        self.ranges = chunk_ranges(self.point_batch, self.replicas, self.lo, self.hi, self.chunk)
        self.n_chunks = len(self.ranges)
        # slots per chunk: a multiple of the devices and at least two per device (padding):
        # XLA compiles a replica axis of length one as an unbatched program, whose last bits
        # can differ from the batched one
        self.slots = max(2, math.ceil(self.chunk / n_dev)) * n_dev

    def padding(self, batch: int) -> Padding:
        """The model, data layout, simulation and programs of the chunks padded to ``batch``."""
        if batch not in self.paddings:
            model = self._model
            if "chains" in getattr(model, "__dataclass_fields__", {}):
                model = model.replace(chains=batch)  # persistent chains padded like batches
            layout = data_layout(self.cfg, batch)
            sim = simulation(model, self.cfg, layout)
            # shard_map runs the vmapped program on each device's slice of replicas with no
            # communication; letting the partitioner propagate shardings instead would gather
            # around the unpartitionable eigensolver calls at every snapshot.
            rep = PartitionSpec("replica")
            init = jax.jit(jax.shard_map(engine.init_fn(sim), mesh=self.mesh, in_specs=(rep, rep), out_specs=rep,
                                         check_vma=False))
            self.paddings[batch] = Padding(batch, model, layout, sim, init,
                                           self.segment_program(self.cfg.snapshot_every, self.seg, sim))
        return self.paddings[batch]

    def chunk_padding(self, c: int) -> Padding:
        """The padding of chunk ``c`` (that of its grid points)."""
        return self.padding(self.point_batch[self.ranges[c][0] // self.replicas])

    def rows(self, c: int) -> np.ndarray:
        """Rows of chunk ``c``'s real replicas in the run's results (ids minus ``lo``)."""
        start, stop = self.ranges[c]
        return np.arange(start - self.lo, stop - self.lo)

    def segment_program(self, every: int, snapshots: int, sim: engine.Simulation | None = None):
        """The jitted, sharded ``run_segment`` for ``snapshots`` intervals of ``every`` steps
        (of ``sim``, by default the largest padding's)."""
        rep = PartitionSpec("replica")
        return jax.jit(jax.shard_map(
            engine.segment_fn(sim or self.sim, every, snapshots, self.cfg.run.unroll), mesh=self.mesh,
            in_specs=(rep, rep, rep, PartitionSpec()), out_specs=rep, check_vma=False,
        ), donate_argnums=(0,))

    def hp_of(self, ids: np.ndarray) -> dict:
        """The hyperparameters of replicas ``ids`` (global ids): their grid points'."""
        return {k: v[np.asarray(ids) // self.replicas] for k, v in self.point_hp.items()}

    def replica_keys(self, ids: np.ndarray) -> dict:
        """The replica's own key and its ingredients' keys (`dysonbm.ensemble`), per id."""
        points = ids // self.replicas
        keys = {}
        for name, root in self.roots.items():
            unit = ids if name == "replica" else ensemble.units(self.ensemble[name], ids, points)
            keys[name] = jax.vmap(lambda i, r=root: jax.random.fold_in(r, i))(jnp.asarray(unit, jnp.uint32))
        return keys

    def _footprint(self) -> dict:
        """Bytes per replica of what the program holds (shapes only, nothing is computed)."""
        sim = self.sim
        hp0 = {k: jnp.asarray(v[0]) for k, v in self.point_hp.items()}
        keys0 = jax.tree_util.tree_map(lambda k: k[0], self.replica_keys(np.zeros(1, np.int64)))

        def one(keys, hp):
            state, data = sim.init(keys, hp)
            return state, data, sim.observe(state, hp, data)

        state, data, obs = jax.eval_shape(one, keys0, hp0)
        self.obs_shapes = {k: (v.shape, np.dtype(v.dtype)) for k, v in obs.items()}
        self.problem_shapes = {k: (v.shape, np.dtype(v.dtype)) for k, v in data.get("problem", {}).items()}
        # one batch of the largest size: a sample's bytes (from the test set) times |B|_max
        batch = 0
        if getattr(self.model, "uses_data", False):
            batch = _nbytes(data["test"]) // self.layout.n_test * self.max_batch
        sizes = {
            "state": _nbytes(state),
            "data": _nbytes(data),
            "batch": batch,
            "snapshots (segment)": (self.seg + 1) * _nbytes(obs),
            "hyperparameters": _nbytes(hp0) + _nbytes(keys0),
        }
        device = HEADROOM * sum(sizes.values())
        results = (self.n_intervals + 1) * _nbytes(obs) + 1 + 4  # snapshots, diverged, diverge_step
        per_problem = sum(math.prod(shape) * dt.itemsize for shape, dt in self.problem_shapes.values())
        granularity = "replica" if self.shard else self.ensemble.get("problem", "run")
        stored = {"replica": self.n_ids, "point": self.n_points, "run": 1}[granularity]
        return {"device": device, "results": results, "problems": per_problem * stored, "parts": sizes}

    def _fitting_chunk(self) -> int:
        n_dev = len(self.devices)
        fit = max(1, self.budget // self.footprint["device"])
        if self.devices[0].platform == "cpu":
            # a CPU core runs a chunk fastest while its working set stays in cache: measured
            # on the multilayer network, 64 replicas per core ran 2x faster than 512
            fit = min(fit, CPU_REPLICAS_PER_DEVICE * n_dev)
        return max(n_dev, fit // n_dev * n_dev) if fit >= n_dev else fit

    def chunk_inputs(self, c: int):
        """Ids, keys and hyperparameters of chunk ``c`` (padded with its last replica)."""
        start, stop = self.ranges[c]
        ids = np.minimum(np.arange(start, start + self.slots), stop - 1)
        hp = self.hp_of(ids)
        put = lambda x: jax.device_put(x, self.batched)  # noqa: E731
        return ids, put(self.replica_keys(ids)), put(hp)

    def fingerprint(self) -> str:
        """Hash of what fixes the numbers and their layout in a checkpoint."""

        cfg = self.cfg.to_dict()
        cfg["run"] = {k: v for k, v in cfg["run"].items() if k not in ("devices", "chunk_size")}
        key = {
            "config": cfg, "points": self.points, "ids": [self.lo, self.hi], "chunk": self.chunk,
            "slots": self.slots, "segment": self.seg, "padding": "per point", "dysonbm": __version__,
            "jax": jax.__version__,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
