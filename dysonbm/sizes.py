"""Will a run fit? Decided before anything proportional to the run is allocated.

Three checks, each a `ConfigError` naming the field that makes the run too large, the figure
and the limit:

- `check_grid` (from `config.validate`): the grid is not yet expanded; its replica ids must
  fit the engine's int32 and its list of points the host.
- `check_sizes` (before a `Plan` is built): a lower bound of the host memory of the run
  from the config alone: the per-replica hyperparameters and grid points a plan holds, and
  results of at least one float32 per snapshot per replica.
- `check_plan` (after the plan, before `execute` allocates): the exact results the host
  holds and the device memory of one chunk, from the plan's footprint (shapes only).

Nothing here allocates an array; this module imports jax only through the plan it is given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from typing import TYPE_CHECKING

from dysonbm.registry import build_model
from dysonbm.values import HP_BASE, INT32_MAX, ConfigError

if TYPE_CHECKING:
    from dysonbm.config import Config

HEADROOM = 2  # as `runner.HEADROOM`: device bytes per replica over the arrays counted
POINT_BYTES = 2048  # one grid point: a Python dict in the plan and its entry in the manifest
SNAPSHOT_BYTES = 64  # one snapshot's step: int64 array, Python int in the manifest and its JSON


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return ""


def host_memory() -> tuple[int | None, str]:
    """Bytes the host can still give this process, and where the figure comes from.

    The smaller of the kernel's MemAvailable and the room left under a cgroup limit; None
    where neither can be read (then nothing is refused).
    """
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "available host memory"))
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 2**60:  # v1 reports "no limit" as a huge number
                found.append((int(limit) - int(Path(usage_file).read_text()), "room under the memory limit"))
        except (OSError, ValueError):
            pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free host memory"))
        except (OSError, ValueError):
            pass
    if not found:
        return None, "unknown"
    avail, source = min(found)
    return max(avail, 0), source


def _points(n: int) -> str:
    return f"{n} grid point" + ("" if n == 1 else "s")


def grid_size(cfg: Config) -> int:
    """Grid points of the config's sweeps, counted without expanding them."""
    if not cfg.sweeps:
        return 1
    return sum(math.prod(len(values) for values in block.values()) for block in cfg.sweeps)


def _shard_ids(n_points: int, replicas: int, shard: tuple[int, int] | None) -> int:
    """Replica ids of the largest shard (see `runner.shard_range`)."""
    total = n_points * replicas
    if not shard:
        return total
    count = shard[1]
    if count <= n_points:
        return math.ceil(n_points / count) * replicas
    return math.ceil(total / count)


def check_grid(cfg: Config) -> None:
    """Refuse a grid whose replica ids overflow int32 or whose points cannot be listed."""
    n_points = grid_size(cfg)
    total = n_points * cfg.replicas
    if total > INT32_MAX:
        raise ConfigError("replicas", cfg.replicas, f"{_points(n_points)} x {cfg.replicas} replicas = {total} "
                                                    f"replica ids, more than the {INT32_MAX} the engine can number (int32)")
    avail, source = host_memory()
    if avail is not None and n_points * POINT_BYTES > avail:
        raise ConfigError("sweep", f"{n_points} grid points",
                          f"listing them needs {_bytes(n_points * POINT_BYTES)} of host memory, {_bytes(avail)} {source}")


def check_sizes(cfg: Config, shard: tuple[int, int] | None = None) -> None:
    """Refuse a run whose host arrays cannot fit, from the config alone (a lower bound).

    Counts what a `Plan` builds for every replica of the grid (hyperparameters, made as
    float64 and cast, and the grid point of each), the steps of the snapshots, and the
    results of the run or of the largest shard at one float32 per snapshot per replica.
    """
    check_grid(cfg)
    n_points = grid_size(cfg)
    total = n_points * cfg.replicas
    n_ids = _shard_ids(n_points, cfg.replicas, shard)
    n_snap = cfg.steps // cfg.snapshot_every + 1
    n_hp = len(HP_BASE) + len(getattr(build_model(cfg), "sweepable", ()))
    plan = total * (n_hp * (8 + 4) + 4) + n_points * POINT_BYTES + n_snap * SNAPSHOT_BYTES
    per_replica = n_snap * 4 + n_hp * 4 + 5
    need = plan + n_ids * per_replica
    avail, source = host_memory()
    if avail is None or need <= avail:
        return
    if n_snap > n_ids:  # snapshots make the bulk: name what sets their number
        field, value = "snapshot_every", cfg.snapshot_every
        what = f"{n_snap} snapshots (steps {cfg.steps} / snapshot_every) x {n_ids} replicas"
    else:
        field, value = "replicas", cfg.replicas
        what = f"{_points(n_points)} x {cfg.replicas} replicas"
    raise ConfigError(field, value, f"{what} need at least {_bytes(need)} of host memory, {_bytes(avail)} {source}")


def device_free(devices) -> tuple[int | None, str]:
    """Free bytes on ``devices`` together, or None where a backend reports no limit (CPU)."""
    free = 0
    for d in devices:
        try:
            stats = d.memory_stats()
        except Exception:  # noqa: BLE001 - backends without memory stats raise or return None
            stats = None
        if not stats or "bytes_limit" not in stats:
            return None, ""
        free += stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return free, "free device memory"


def _culprit(plan, parts: dict) -> tuple[str, object, str]:
    """The config field behind the largest of ``parts`` (bytes per replica of a chunk)."""
    part = max(parts, key=parts.get) if parts else "state"
    cfg, d = plan.cfg, plan.cfg.data
    if part == "batch":
        swept = any("batch_size" in block for block in cfg.sweeps)
        field, value = ("sweep.batch_size" if swept else "train.batch_size"), plan.max_batch
    elif part == "data":
        field, value = ("data.n_data", d.n_data) if d.n_data else ("data.batches_per_epoch", d.batches_per_epoch)
    elif part.startswith("snapshots"):
        field, value = "run.segment_snapshots", plan.seg
    else:
        field, value = "model", cfg.model
    return field, value, part


def _data_floor(plan) -> dict[str, int]:
    """Bytes per replica that one batch and a stored dataset take at least, from the shapes
    of one sample (`Model.problem`, `Model.sample`); {} for models without data."""
    model = plan.model
    if not getattr(model, "uses_data", False):
        return {}
    import jax
    import numpy as np

    key = jax.random.key(0)
    try:
        sample = jax.eval_shape(model.sample, key, jax.eval_shape(model.problem, key))
    except Exception:  # noqa: BLE001 - a model outside the base protocol: the footprint alone decides
        return {}
    one = sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree_util.tree_leaves(sample))
    layout = getattr(plan, "layout", None)
    stored = layout.n_max if layout is not None and layout.protocol != "online" else 0
    return {"batch": one * plan.max_batch, "data": one * stored}


def check_plan(plan) -> None:
    """Refuse a plan whose results or one chunk cannot fit, before `execute` allocates them."""
    fp, cfg = plan.footprint, plan.cfg
    n_snap = plan.n_intervals + 1
    results = fp["results"] * plan.n_ids + fp.get("problems", 0)  # problems: as stored, all replicas
    avail, source = host_memory()
    if avail is not None and results > avail:
        field, value = ("snapshot_every", cfg.snapshot_every) if n_snap > plan.n_ids else ("replicas", cfg.replicas)
        raise ConfigError(field, value, f"the results of {plan.n_ids} replicas x {n_snap} snapshots need "
                                        f"{_bytes(results)} of host memory, {_bytes(avail)} {source}")
    floor = _data_floor(plan)
    per_replica = max(fp["device"], HEADROOM * sum(floor.values()))
    unbatched = fp.get("unbatched", 0) * len(plan.devices)
    free, where = device_free(plan.devices)
    if free is None:  # CPU devices share the host's memory with the results
        if avail is None:
            return
        free, where = avail - results, f"{source} beside the results"
    chunk = per_replica * plan.slots + unbatched
    if chunk <= free:
        return
    n_dev = len(plan.devices)
    # a batch or dataset the footprint did not count in full names the field behind it
    parts = floor if per_replica > fp["device"] else dict(fp.get("parts", {}))
    field, value, part = _culprit(plan, parts)
    fit = (free - unbatched) // per_replica // n_dev * n_dev
    if fit >= 2 * n_dev:  # a smaller chunk fits (two replicas per device at the least)
        if not plan.auto_chunk:
            field, value = "run.chunk_size", plan.chunk
        raise ConfigError(field, value, f"a chunk of {plan.slots} replicas needs {_bytes(chunk)} of device memory, "
                                        f"{_bytes(max(free, 0))} {where}: run with --chunk-size {fit} or less")
    raise ConfigError(field, value, f"even a chunk of {2 * n_dev} replicas needs "
                                    f"{_bytes(per_replica * 2 * n_dev + unbatched)} of device memory ({part} "
                                    f"{_bytes(parts.get(part, fp['device']))} per replica), {_bytes(max(free, 0))} {where}")
