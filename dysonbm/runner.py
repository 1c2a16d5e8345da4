"""Chunks of replicas × segments of steps, sharded over devices, checkpointed, resumable.

The grid's P points × R replicas are flattened to global replica ids ``g = p·R + r``. A run
covers a contiguous range of ids (all of them, or one shard ``i/n``), in chunks of a fixed
size (the last one padded with copies, which are discarded), each chunk one jitted program
whose replica axis is split over the local devices by ``shard_map``. Between segments the
host collects the snapshots, reports progress and writes a checkpoint; nothing crosses to
the host inside a scan. No number depends on the chunk size, the device count, the shard or
an interruption: each replica's key is ``fold_in(root, g)``.

Devices. On CPU each XLA device is one core's worth of work, and XLA exposes a single host
device unless told otherwise before jax is imported. The ``dbm`` command does this for you
(one device per core); from Python, call ``dysonbm.cli.configure_host_devices()`` before the
first ``import jax`` (or set ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>``).

Memory per replica (`Plan.footprint`, printed by ``dbm run --dry-run``):

    device  = 2 × (state + replica data + one batch + broadcast problem/test set
                   + observables of one segment and of t = 0 + hyperparameters)
    results = snapshots × observables + hyperparameters + 5 bytes (diverged, diverge_step)

The factor 2 is headroom for XLA's temporaries (gradients, the scan carry being rebuilt).
With ``run.chunk_size = 0`` the chunk is the largest that fits a budget: half of the
devices' free memory where the backend reports it, else 2 GiB (CPU). The host holds the
results of the whole run (``results`` × replicas), which is also the size written to disk.

Many machines. ``shard=(i, n)`` runs the i-th of n contiguous ranges of replica ids (whole
grid points when n ≤ P) into a directory of its own; `io.merge` joins them. A job spanning
hosts (`run_distributed`, after ``jax.distributed.initialize``) gives each process the shard
of its process index on its own local devices and lets process 0 merge the parts. Replicas
never communicate, so a global mesh would buy nothing but cross-host synchronisation at
every segment, and a slow or lost host would stall all others; independent parts also
checkpoint and resume one by one. The parts meet on a filesystem all processes see.

Checkpoints (``DIR/checkpoint/``): ``chunk-<c>.npz`` with the results of each finished
chunk, and ``position.npz`` with the position (chunk, segments done), the state of the
current chunk and its snapshots so far. Both carry a hash of the resolved config and of
what fixes the layout of the numbers (chunk, slots, segment length, id range, versions); a
checkpoint whose hash differs, or that cannot be read, is refused (`CheckpointError`).
Files are written to a temporary name and moved into place with ``os.replace``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dysonbm import engine, ensemble, io, sizes
from dysonbm.config import Config, build_model, grid_points, hyper_names, make_optimizer, resolved_ensemble

CPU_BUDGET = 2 << 30  # bytes for a chunk when the backend reports no memory limit
DEVICE_FRACTION = 0.5  # of the free device memory
HEADROOM = 2  # device bytes per replica = HEADROOM × the arrays we can count
CHECKPOINT = "checkpoint"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or written by another config."""


CPU_REPLICAS_PER_DEVICE = 64


class Progress:
    """A one-line progress report on stderr (rewritten in place on a terminal)."""

    def __init__(self, total_steps: int, enabled: bool = True, stream=None):
        self.total = total_steps
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = time.perf_counter()
        self.last_print = 0.0

    def update(self, done_steps: int, label: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self.tty and now - self.last_print < 2.0 and done_steps < self.total:
            return
        self.last_print = now
        elapsed = now - self.start
        rate = done_steps / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done_steps) / rate if rate > 0 else float("inf")
        frac = done_steps / self.total if self.total else 1.0
        bar = "#" * int(24 * frac)
        line = f"[{bar:<24}] {frac:6.1%} {label}  {rate:.3g} replica-steps/s  eta {_duration(eta)}"
        end = "\r" if self.tty and done_steps < self.total else "\n"
        print(line, end=end, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


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


def simulation(model, cfg: Config, layout: engine.DataLayout) -> engine.Simulation:
    """The simulation a config describes: SGD replicas of a model under the optax transform
    its ``[train] optimizer`` names, or an SDE process."""
    if engine.is_process(model):
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
        self.max_batch = max(int(p["batch_size"]) for p in self.points)
        if "chains" in getattr(model, "__dataclass_fields__", {}):
            model = model.replace(chains=self.max_batch)  # persistent chains padded like batches
        self.model = model
        self.ensemble = resolved_ensemble(cfg, model)
        self.names = hyper_names(model)
        self.layout = engine.DataLayout.from_config(cfg, self.max_batch)
        self.sim = simulation(model, cfg, self.layout)

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
        self.chunk = min(requested or self._fitting_chunk(), self.n_ids)  # real replicas
        self.n_chunks = math.ceil(self.n_ids / self.chunk)
        # slots per chunk: a multiple of the devices and at least two per device (padding):
        # XLA compiles a replica axis of length one as an unbatched program, whose last bits
        # can differ from the batched one
        self.slots = max(2, math.ceil(self.chunk / n_dev)) * n_dev

        # shard_map runs the vmapped program on each device's slice of replicas with no
        # communication; letting the partitioner propagate shardings instead would gather
        # around the unpartitionable eigensolver calls at every snapshot.
        rep = PartitionSpec("replica")
        self.init = jax.jit(jax.shard_map(
            engine.init_fn(self.sim), mesh=self.mesh, in_specs=(rep, rep), out_specs=rep, check_vma=False,
        ))
        self.segment = self.segment_program(cfg.snapshot_every, self.seg)

    def segment_program(self, every: int, snapshots: int):
        """The jitted, sharded ``run_segment`` for ``snapshots`` intervals of ``every`` steps."""
        rep = PartitionSpec("replica")
        return jax.jit(jax.shard_map(
            engine.segment_fn(self.sim, every, snapshots, self.cfg.run.unroll), mesh=self.mesh,
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
        results = (self.n_intervals + 1) * _nbytes(obs) + sum(v.itemsize for v in self.point_hp.values()) + 1 + 4
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
        start = self.lo + c * self.chunk
        stop = min(start + self.chunk, self.hi)
        ids = np.minimum(np.arange(start, start + self.slots), stop - 1)
        hp = self.hp_of(ids)
        put = lambda x: jax.device_put(x, self.batched)  # noqa: E731
        return ids, put(self.replica_keys(ids)), put(hp)

    def fingerprint(self) -> str:
        """Hash of what fixes the numbers and their layout in a checkpoint."""
        from dysonbm import __version__

        cfg = self.cfg.to_dict()
        cfg["run"] = {k: v for k, v in cfg["run"].items() if k not in ("devices", "chunk_size")}
        key = {
            "config": cfg, "points": self.points, "ids": [self.lo, self.hi], "chunk": self.chunk,
            "slots": self.slots, "segment": self.seg, "dysonbm": __version__, "jax": jax.__version__,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# checkpoints

def _write_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` to a temporary file, then ``os.replace``: a reader sees old or new, whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # an interrupt mid-write leaves the previous file and no temporary
        tmp.unlink(missing_ok=True)
        raise


def _read_npz(path: Path, fingerprint: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as err:  # noqa: BLE001 - any unreadable file is refused the same way
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}); remove it or rerun with --overwrite") from None
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"checkpoint {path.parent} was written by another config or layout; "
                              "rerun with the same config and chunk size, or with --overwrite")
    return {"meta": meta, **arrays}


def _meta(fingerprint: str, **fields) -> np.ndarray:
    return np.asarray(json.dumps({"fingerprint": fingerprint, **fields}))


def _state_to_host(state) -> dict:
    leaves = jax.tree_util.tree_leaves(jax.device_get(state))
    out = {}
    for i, leaf in enumerate(leaves):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[f"state_{i}"] = np.asarray(leaf)
    return out


def _state_from_host(template, arrays: dict, sharding):
    """The saved leaves in the structure of ``template`` (a fresh init of the same chunk)."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if len([k for k in arrays if k.startswith("state_")]) != len(leaves):
        raise CheckpointError("checkpoint state does not match the program's state; rerun with --overwrite")
    out = []
    for i, like in enumerate(leaves):
        saved = arrays[f"state_{i}"]
        if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(jax.device_put(saved, sharding), impl=jax.random.key_impl(like))
        else:
            if saved.shape != like.shape or saved.dtype != like.dtype:
                raise CheckpointError("checkpoint state does not match the program's state; rerun with --overwrite")
            value = jax.device_put(saved, sharding)
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)


# ---------------------------------------------------------------------------------------
# running

def execute(plan: Plan, progress: bool = True, checkpoint: str | Path | None = None,
            resume: bool = False) -> io.Results:
    """Run every chunk and return the results (not yet written).

    With ``checkpoint`` (a folder) the position is saved after every segment; with ``resume``
    the run continues from what is there (refused if it belongs to another config).
    """
    cfg = plan.cfg
    t_start = time.perf_counter()
    n_snap = plan.n_intervals + 1
    collected = {name: np.empty((plan.n_ids, n_snap) + shape, dtype) for name, (shape, dtype) in plan.obs_shapes.items()}
    problems = {name: np.empty((plan.n_ids,) + shape, dtype) for name, (shape, dtype) in plan.problem_shapes.items()}
    diverged = np.zeros(plan.n_ids, bool)
    diverge_step = np.full(plan.n_ids, -1, np.int32)
    ck = Path(checkpoint) if checkpoint is not None else None
    fp = plan.fingerprint()
    first_chunk, first_seg, saved, wall_before = 0, 0, None, 0.0

    def rows_of(c):
        start = c * plan.chunk
        return np.arange(start, min(start + plan.chunk, plan.n_ids))

    if ck is not None and resume and (ck / "position.npz").exists():
        saved = _read_npz(ck / "position.npz", fp)
        first_chunk, first_seg = saved["meta"]["chunk"], saved["meta"]["segments"]
        wall_before = saved["meta"]["wall"]
        for c in range(first_chunk):
            done = _read_npz(ck / f"chunk-{c:05d}.npz", fp)
            rows = rows_of(c)
            for name in collected:
                collected[name][rows] = done[f"obs_{name}"]
            diverged[rows], diverge_step[rows] = done["diverged"], done["diverge_step"]
            for name in problems:
                problems[name][rows] = done[f"problem_{name}"]
        if first_seg:
            rows = rows_of(first_chunk)
            upto = 1 + first_seg * plan.seg
            for name in collected:
                collected[name][rows, :upto] = saved[f"obs_{name}"]
    elif ck is not None:
        shutil.rmtree(ck, ignore_errors=True)
    if ck is not None:
        ck.mkdir(parents=True, exist_ok=True)

    meter = Progress(plan.n_ids * cfg.steps, progress)
    for c in range(first_chunk, plan.n_chunks):
        ids, keys, hp = plan.chunk_inputs(c)
        rows = rows_of(c)
        n_real = len(rows)
        state, data, obs0 = plan.init(keys, hp)
        for name, value in data.get("problem", {}).items():
            problems[name][rows] = np.asarray(value)[:n_real]
        s0 = 0
        if c == first_chunk and first_seg:
            state, s0 = _state_from_host(state, saved, plan.batched), first_seg
        else:
            for name, value in obs0.items():
                collected[name][rows, 0] = np.asarray(value)[:n_real]
        for s in range(s0, plan.n_segments):
            t0 = s * plan.seg * cfg.snapshot_every
            state, obs = plan.segment(state, hp, data, jnp.int32(t0))
            first = 1 + s * plan.seg
            for name, value in obs.items():
                collected[name][rows, first:first + plan.seg] = np.asarray(value)[:n_real]
            t_end = t0 + plan.seg * cfg.snapshot_every
            meter.update(c * plan.chunk * cfg.steps + n_real * t_end, f"chunk {c + 1}/{plan.n_chunks} step {t_end}/{cfg.steps}")
            if ck is not None and s + 1 < plan.n_segments:
                wall = wall_before + time.perf_counter() - t_start
                upto = first + plan.seg
                _write_npz(ck / "position.npz", {
                    "meta": _meta(fp, chunk=c, segments=s + 1, wall=wall),
                    **{f"obs_{k}": v[rows, :upto] for k, v in collected.items()},
                    **_state_to_host(state),
                })
        flag, step = engine.outcome(state)
        diverged[rows] = np.asarray(flag)[:n_real]
        diverge_step[rows] = np.asarray(step)[:n_real]
        if ck is not None:
            _write_npz(ck / f"chunk-{c:05d}.npz", {
                "meta": _meta(fp, chunk=c), "diverged": diverged[rows], "diverge_step": diverge_step[rows],
                **{f"obs_{k}": v[rows] for k, v in collected.items()},
                **{f"problem_{k}": v[rows] for k, v in problems.items()},
            })
            wall = wall_before + time.perf_counter() - t_start
            _write_npz(ck / "position.npz", {"meta": _meta(fp, chunk=c + 1, segments=0, wall=wall)})
    meter.close()
    wall = wall_before + time.perf_counter() - t_start
    return _results(plan, collected, problems, diverged, diverge_step, wall)


def _results(plan: Plan, collected, problems, diverged, diverge_step, wall) -> io.Results:
    """Arrays with leading axes (point, replica); a shard keeps the flat ``replica_id`` axis.
    Problems (``problem_<name>``) are kept at their granularity, per replica in a shard."""
    lead = ("replica_id",) if plan.shard else ("point", "replica")
    shape = (plan.n_ids,) if plan.shard else (plan.n_points, plan.replicas)
    arrays = {name: v.reshape(shape + v.shape[1:]) for name, v in collected.items()}
    axes = {name: lead + ("snapshot",) + tuple(plan.sim.axes.get(name, ())) for name in arrays}
    arrays["diverged"], axes["diverged"] = diverged.reshape(shape), lead
    arrays["diverge_step"], axes["diverge_step"] = diverge_step.reshape(shape), lead
    for name, values in plan.hp_of(np.arange(plan.lo, plan.hi)).items():
        arrays[f"hp_{name}"], axes[f"hp_{name}"] = values.reshape(shape), lead
    if plan.shard:
        stored, plead = problems, lead
    else:
        stored, plead = ensemble.stored_problems(problems, plan.ensemble.get("problem", "run"), *shape)
    for name, value in stored.items():
        arrays[f"problem_{name}"] = value
        axes[f"problem_{name}"] = plead + tuple(f"{name}_axis{i}" for i in range(value.ndim - len(plead)))
    return io.Results(manifest(plan, wall), arrays, axes)


def manifest(plan: Plan, wall: float) -> dict:
    import optax

    from dysonbm import __version__

    dev = plan.devices[0]
    out = {
        "format": 1,
        "config": plan.cfg.to_dict(),
        "points": plan.points,
        "steps": plan.steps.tolist(),
        "seed": plan.cfg.seed,
        "ensemble": plan.ensemble,
        "keys": ensemble.KEY_DERIVATION,
        "versions": {
            "dysonbm": __version__, "jax": jax.__version__, "jaxlib": jax.lib.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "python": platform.python_version(),
        },
        "device": f"{len(plan.devices)} x {dev.platform}:{getattr(dev, 'device_kind', dev.platform)}",
        "chunk_size": plan.chunk,
        "chunk_slots": plan.slots,
        "wall_time_s": wall,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if plan.shard:
        out["shard"] = {"index": plan.shard[0], "count": plan.shard[1], "replica_ids": [plan.lo, plan.hi]}
    return out


def state_of(out: str | Path) -> str:
    """``missing``, ``complete`` (results, no checkpoint), ``checkpoint``, or ``other``."""
    out = Path(out)
    if not out.exists():
        return "missing"
    if (out / CHECKPOINT / "position.npz").exists():
        return "checkpoint"
    if (out / "manifest.json").exists():
        return "complete"
    return "other"


def run(cfg: Config, out: str | Path | None = None, overwrite: bool = False, progress: bool = True,
        devices: int | None = None, chunk_size: int | None = None, shard: tuple[int, int] | None = None,
        resume: bool = False, checkpoint: bool = True, memory_budget: int | None = None) -> io.Results:
    """Run ``cfg``; write the results to ``out`` when given.

    An existing ``out`` is refused unless ``overwrite`` (start afresh) or ``resume``: continue
    from its checkpoint, or return its results if they are complete. With ``out`` and
    ``checkpoint``, a checkpoint is kept in ``out/checkpoint`` while running and removed with
    the final, atomic save. Only a directory dbm wrote is ever replaced or resumed
    (`io.not_ours`), and complete results of another config are refused (`CheckpointError`).
    Sizes are checked before anything proportional to the run is allocated (`dysonbm.sizes`);
    a run stopped before its first checkpoint (an error, an interrupt) leaves nothing behind.
    """
    if out is not None:
        out = Path(out)
        status = state_of(out)
        if status != "missing":
            if not (overwrite or resume):
                raise FileExistsError(f"{out} exists (use --overwrite or --resume)")
            reason = io.not_ours(out)
            if reason:
                raise FileExistsError(f"{out}: {reason}; not replacing it")
        if resume and status == "complete":
            return _complete_results(out, cfg, shard)
    plan = Plan(cfg, devices=devices, chunk_size=chunk_size, shard=shard, memory_budget=memory_budget)
    sizes.check_plan(plan)
    ck = out / CHECKPOINT if (out is not None and checkpoint) else None
    first_new = _first_missing(out) if out is not None else None
    if ck is not None and not resume:
        shutil.rmtree(ck, ignore_errors=True)
    elif ck is not None and ck.is_dir():  # temporaries of a killed run
        for stale in ck.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
    try:
        results = execute(plan, progress=progress, checkpoint=ck, resume=resume)
        if out is not None:
            # replaces the folder (and with it the checkpoint) in one rename
            io.save(results, out, overwrite=True)
    except BaseException:
        if ck is not None:
            _discard_unstarted(out, ck, first_new)
        raise
    return results


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""


def _seconds(s: float) -> str:
    return f"{s:.3g} s" if s < 60 else _duration(s)


def calibrate(plan: Plan, steps: int = 300) -> dict:
    """Seconds of the first chunk's init, of one chunk-step and of one snapshot, timed apart.

    Two programs of ``2h`` steps (``h = steps // 2``), one with a snapshot at the end and one
    with two: their difference is one snapshot's cost and the rest is the steps'. A run whose
    snapshots are far apart then costs what its steps cost, and one with costly snapshots (the
    level-SDE terms) what they cost, whatever the calibration's own spacing.
    """
    h = max(1, steps // 2)
    one, two = plan.segment_program(2 * h, 1), plan.segment_program(h, 2)
    _, keys, hp = plan.chunk_inputs(0)
    t0 = time.perf_counter()
    state, data, _ = plan.init(keys, hp)
    jax.block_until_ready(state)
    for program in (one, two):  # compile both
        state, obs = program(state, hp, data, jnp.int32(0))
    jax.block_until_ready((state, obs))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, data, _ = plan.init(keys, hp)
    jax.block_until_ready((state, data))
    init_s = time.perf_counter() - t0
    elapsed = []
    for program in (one, two):
        t0 = time.perf_counter()
        state, obs = program(state, hp, data, jnp.int32(2 * h))
        jax.block_until_ready((state, obs))
        elapsed.append(time.perf_counter() - t0)
    snapshot = max(elapsed[1] - elapsed[0], 0.0)
    per_step = max(elapsed[0] - snapshot, 0.0) / (2 * h)
    return {"compile_s": compile_s, "init_s": init_s, "per_chunk_step_s": per_step, "snapshot_s": snapshot,
            "steps": 4 * h}


def dry_run(plan: Plan, calibration: bool = True) -> str:
    """What a run of ``plan`` would take: grid, memory, chunks and (calibrated) wall time."""
    cfg, fp = plan.cfg, plan.footprint
    ids = f"replica ids {plan.lo}..{plan.hi - 1} ({plan.n_ids} of {plan.total})" if plan.shard else f"{plan.total} replicas"
    lines = [
        f"{cfg.name}: {plan.n_points} grid points x {plan.replicas} replicas = {plan.total} replicas"
        + (f"; shard {plan.shard[0]}/{plan.shard[1]}: {ids}" if plan.shard else ""),
        f"  steps {cfg.steps}, snapshots {plan.n_intervals + 1}, replica-steps {plan.n_ids * cfg.steps:.4g}",
        f"  memory per replica: device {_bytes(fp['device'])} (x{HEADROOM} headroom over "
        + ", ".join(f"{k} {_bytes(v)}" for k, v in fp["parts"].items()) + f"), results {_bytes(fp['results'])}",
        f"  memory total: device {_bytes(fp['device'] * plan.slots)} per chunk, "
        f"results {_bytes(fp['results'] * plan.n_ids + fp['problems'])} (host and disk)",
        f"  chunks: {plan.n_chunks} x {plan.chunk} replicas ({plan.slots} slots) on {len(plan.devices)} x "
        f"{plan.devices[0].platform}" + (f", chunk chosen for a budget of {_bytes(plan.budget)} ({plan.budget_source})"
                                          if plan.auto_chunk else ""),
        f"  segments: {plan.n_segments} per chunk of {plan.seg * cfg.snapshot_every} steps",
    ]
    if calibration:
        cal = calibrate(plan)
        per_chunk = cal["init_s"] + cal["per_chunk_step_s"] * cfg.steps + cal["snapshot_s"] * plan.n_intervals
        # the calibration's compile (init and two programs) stands in for the run's (init and one)
        total = per_chunk * plan.n_chunks + cal["compile_s"]
        lines.append(f"  estimated wall time: {_seconds(total)} ({_seconds(per_chunk)} per chunk x {plan.n_chunks} "
                     f"+ compile {cal['compile_s']:.1f} s; from {cal['steps']} calibration steps, a chunk's init, "
                     f"steps and snapshots timed apart)")
    return "\n".join(lines)


def run_distributed(cfg: Config, out: str | Path, process_id: int, num_processes: int, wait_s: float = 1.0,
                    **kwargs) -> io.Results | None:
    """One process of a multi-process job: shard ``process_id`` of ``num_processes`` into
    ``out/part-<i>``; process 0 then waits for every part and merges them into ``out``.

    Call after ``jax.distributed.initialize``; ``out`` must be on a filesystem all processes
    see. Returns the merged results on process 0, this process's part elsewhere.
    """
    out = Path(out)
    reason = io.not_ours(out) if out.exists() else None
    if reason:  # the parts would be written into it and the merge replace it
        raise FileExistsError(f"{out}: {reason}; not replacing it")
    if state_of(out) == "complete":
        if kwargs.get("resume"):
            return _complete_results(out, cfg, None)
        if not kwargs.get("overwrite"):
            raise FileExistsError(f"{out} exists (use --overwrite or --resume)")
    part = run(cfg, out / f"part-{process_id}", shard=(process_id, num_processes), **kwargs)
    if process_id != 0:
        return part
    parts = [out / f"part-{i}" for i in range(num_processes)]
    like = json.loads((parts[0] / "manifest.json").read_text())  # as stored: JSON lists, not tuples
    while True:
        ready = [p for p in parts if _is_part_of(p, like, num_processes)]
        if len(ready) == num_processes:
            break
        time.sleep(wait_s)
    merged = io.merge([io.load(p) for p in parts])
    io.save(merged, out, overwrite=True)
    return merged


def _is_part_of(path: Path, like: dict, count: int) -> bool:
    """A finished part of the same job (a stale part of another config is waited over)."""
    if state_of(path) != "complete":
        return False
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("config") == like["config"] and m.get("shard", {}).get("count") == count



def _complete_results(out: Path, cfg: Config, shard: tuple[int, int] | None) -> io.Results:
    """The finished results in ``out`` that ``--resume`` returns, if ``cfg`` computed them."""
    done = io.load(out)
    found = results_mismatch(done.manifest, cfg, shard)
    if found:
        raise CheckpointError(f"{out} holds the complete results of another config ({found}); "
                              "rerun with the same config, or with --overwrite")
    return done


def results_mismatch(manifest: dict, cfg: Config, shard: tuple[int, int] | None) -> str | None:
    """How complete results differ from what ``cfg`` (and ``shard``) would compute, or None."""
    found = io.config_difference(manifest.get("config", {}), cfg.to_dict())
    if found:
        return found
    have = manifest.get("shard")
    have = (have.get("index"), have.get("count")) if isinstance(have, dict) else None
    want = tuple(shard) if shard else None
    if have != want:
        text = lambda s: f"shard {s[0]}/{s[1]}" if s else "the whole run"  # noqa: E731
        return f"{text(have)} there, {text(want)} here"
    return None


def _first_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (None: it exists)."""
    first = None
    for p in (path, *path.parents):
        if p.exists():
            break
        first = p
    return first


def _discard_unstarted(out: Path, ck: Path, first_new: Path | None) -> None:
    """After a run stopped before its first checkpoint: remove the empty checkpoint folder
    and the folders the run created, so nothing blocks the next run; a checkpoint with a
    position is kept for --resume."""
    if (ck / "position.npz").exists():
        return
    if ck.is_dir() and all(f.name.startswith(".") and ".tmp-" in f.name for f in ck.iterdir()):
        shutil.rmtree(ck, ignore_errors=True)
    if first_new is None:
        return
    for p in (out, *out.parents):
        try:
            p.rmdir()  # only if empty
        except OSError:
            return
        if p == first_new:
            return
