"""Chunks of replicas × segments of steps, sharded over devices, with progress on the host.

The grid's P points × R replicas are flattened to global replica ids ``g = p·R + r``. They run
in chunks of a fixed size (the last one padded with copies, which are discarded), each chunk
as one jitted program whose replica axis is sharded over the devices. Between segments the
host collects the snapshots and reports progress; nothing crosses to the host inside a scan.
"""

from __future__ import annotations

import datetime
import math
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dysonbm import engine, io
from dysonbm.config import Config, build_model, grid_points, hyper_names


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
        if self.tty is False and now - self.last_print < 2.0 and done_steps < self.total:
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
    return min((d for d in range(1, n_intervals + 1) if n_intervals % d == 0), key=lambda d: (abs(d - target), d))


class Plan:
    """Everything a run needs that follows from its config: model, grid, shared data, sharding."""

    def __init__(self, cfg: Config, devices: int | None = None, chunk_size: int | None = None):
        if cfg.run.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.cfg = cfg
        model = build_model(cfg)
        self.points = grid_points(cfg, model)
        self.n_points, self.replicas = len(self.points), cfg.replicas
        self.total = self.n_points * self.replicas
        self.max_batch = max(int(p["batch_size"]) for p in self.points)
        if "chains" in getattr(model, "__dataclass_fields__", {}):
            model = model.replace(chains=self.max_batch)  # persistent chains padded like batches
        self.model = model
        self.names = hyper_names(model)
        self.layout = engine.DataLayout.from_config(cfg, self.max_batch)
        self.sim = engine.make_sim(model, cfg, self.layout)

        n_dev = devices or cfg.run.devices or len(jax.devices())
        all_devices = jax.devices()
        if n_dev > len(all_devices):
            raise ValueError(f"run.devices = {n_dev}: only {len(all_devices)} available")
        self.devices = all_devices[:n_dev]
        self.mesh = Mesh(np.array(self.devices), ("replica",))
        self.batched = NamedSharding(self.mesh, PartitionSpec("replica"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.chunk = min(chunk_size or cfg.run.chunk_size or self.total, self.total)  # real replicas
        self.n_chunks = math.ceil(self.total / self.chunk)
        # slots per chunk: a multiple of the devices and at least two per device (padding):
        # XLA compiles a replica axis of length one as an unbatched program, whose last bits
        # can differ from the batched one
        self.slots = max(2, math.ceil(self.chunk / n_dev)) * n_dev

        self.n_intervals = cfg.steps // cfg.snapshot_every
        self.seg = _segment_snapshots(self.n_intervals, cfg.run.segment_snapshots)
        self.steps = np.arange(self.n_intervals + 1) * cfg.snapshot_every

        self.hp = {}
        for name in self.names:
            values = np.repeat([p[name] for p in self.points], self.replicas)
            self.hp[name] = values.astype(np.int32 if name == "batch_size" else jnp.result_type(float))
        self.point_of = np.repeat(np.arange(self.n_points, dtype=np.int32), self.replicas)

        root = jax.random.key(cfg.seed)
        self.replica_root = jax.random.fold_in(root, engine.REPLICAS)
        problem = model.problem(jax.random.fold_in(root, engine.PROBLEM))
        shared = {
            "problem": problem,
            "test": engine.draw_samples(model, jax.random.fold_in(root, engine.TEST_SET), problem, self.layout.n_test),
        }
        if self.layout.protocol == "shared":
            data_root = jax.random.fold_in(root, engine.SHARED_DATA)
            shared["train"] = jax.vmap(
                lambda p: engine.draw_samples(model, jax.random.fold_in(data_root, p), problem, self.layout.n_max)
            )(jnp.arange(self.n_points))
        self.shared = shared

        # shard_map runs the vmapped program on each device's slice of replicas with no
        # communication; letting the partitioner propagate shardings instead would gather
        # around the unpartitionable eigensolver calls at every snapshot.
        rep, none = PartitionSpec("replica"), PartitionSpec()
        shared_specs = {k: (rep if a == 0 else none) for k, a in engine.shared_axes(self.shared).items()}
        data_spec = rep if self.sim.batched_data else none
        self.init = jax.jit(jax.shard_map(
            engine.init_fn(self.sim), mesh=self.mesh,
            in_specs=(rep, rep, shared_specs, rep), out_specs=rep, check_vma=False,
        ))
        self.segment = jax.jit(jax.shard_map(
            engine.segment_fn(self.sim, cfg.snapshot_every, self.seg, cfg.run.unroll), mesh=self.mesh,
            in_specs=(rep, rep, data_spec, shared_specs, none), out_specs=rep, check_vma=False,
        ), donate_argnums=(0,))

    def chunk_inputs(self, c: int):
        """Keys, hyperparameters and grid points of chunk ``c`` (padded with its last replica)."""
        start = c * self.chunk
        stop = min(start + self.chunk, self.total)
        ids = np.minimum(np.arange(start, start + self.slots), stop - 1)
        keys = jax.vmap(lambda i: jax.random.fold_in(self.replica_root, i))(jnp.asarray(ids))
        hp = {k: v[ids] for k, v in self.hp.items()}
        put = lambda x: jax.device_put(x, self.batched)  # noqa: E731
        return ids, put(keys), put(hp), put(self.point_of[ids])

    def chunk_shared(self):
        """``shared`` as the vmapped program takes it (see engine.SHARED_AXES)."""
        shared = {}
        for name, value in self.shared.items():
            if engine.SHARED_AXES[name] == 0:
                value = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (self.slots,) + a.shape), value)
                shared[name] = jax.device_put(value, self.batched)
            else:
                shared[name] = jax.device_put(value, self.replicated)
        return shared


def execute(plan: Plan, progress: bool = True) -> io.Results:
    """Run every chunk and return the results (not yet written)."""
    cfg = plan.cfg
    t_start = time.perf_counter()
    meter = Progress(plan.total * cfg.steps, progress)
    collected: dict[str, np.ndarray] = {}
    diverged = np.zeros(plan.total, bool)
    diverge_step = np.full(plan.total, -1, np.int32)
    n_snap = plan.n_intervals + 1
    shared = plan.chunk_shared()

    def store(name, rows, values, snapshots):
        values = np.asarray(values)[: len(rows)]  # drop the padding
        if name not in collected:
            collected[name] = np.empty((plan.total, n_snap) + values.shape[2:], values.dtype)
        collected[name][rows, snapshots] = values

    for c in range(plan.n_chunks):
        ids, keys, hp, points = plan.chunk_inputs(c)
        n_real = min(plan.chunk, plan.total - c * plan.chunk)
        rows = ids[:n_real]
        state, data, obs0 = plan.init(keys, hp, shared, points)
        for name, value in obs0.items():
            store(name, rows, np.asarray(value)[:, None], slice(0, 1))
        for s in range(plan.n_intervals // plan.seg):
            t0 = s * plan.seg * cfg.snapshot_every
            state, obs = plan.segment(state, hp, data, shared, jnp.int32(t0))
            first = 1 + s * plan.seg
            for name, value in obs.items():
                store(name, rows, value, slice(first, first + plan.seg))
            t_end = t0 + plan.seg * cfg.snapshot_every
            meter.update(c * plan.chunk * cfg.steps + n_real * t_end, f"chunk {c + 1}/{plan.n_chunks} step {t_end}/{cfg.steps}")
        flag, step = engine.outcome(state)
        diverged[rows] = np.asarray(flag)[:n_real]
        diverge_step[rows] = np.asarray(step)[:n_real]
    meter.close()
    wall = time.perf_counter() - t_start

    shape = (plan.n_points, plan.replicas)
    arrays = {name: v.reshape(shape + v.shape[1:]) for name, v in collected.items()}
    axes = {name: ("point", "replica", "snapshot") + tuple(plan.sim.axes.get(name, ())) for name in arrays}
    arrays["diverged"], axes["diverged"] = diverged.reshape(shape), ("point", "replica")
    arrays["diverge_step"], axes["diverge_step"] = diverge_step.reshape(shape), ("point", "replica")
    for name, values in plan.hp.items():
        arrays[f"hp_{name}"], axes[f"hp_{name}"] = values.reshape(shape), ("point", "replica")
    return io.Results(manifest(plan, wall), arrays, axes)


def manifest(plan: Plan, wall: float) -> dict:
    import optax

    from dysonbm import __version__

    dev = plan.devices[0]
    return {
        "format": 1,
        "config": plan.cfg.to_dict(),
        "points": plan.points,
        "steps": plan.steps.tolist(),
        "seed": plan.cfg.seed,
        "replica_keys": "fold_in(fold_in(key(seed), 3), p * replicas + r)",
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


def run(cfg: Config, out: str | Path | None = None, overwrite: bool = False, progress: bool = True,
        devices: int | None = None, chunk_size: int | None = None) -> io.Results:
    """Run ``cfg``; write the results to ``out`` when given (refused if it exists, unless
    ``overwrite``)."""
    if out is not None and Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite)")
    plan = Plan(cfg, devices=devices, chunk_size=chunk_size)
    results = execute(plan, progress=progress)
    if out is not None:
        io.save(results, out, overwrite=overwrite)
    return results
