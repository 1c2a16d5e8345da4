"""The results store: one directory per run.

    DIR/manifest.json   resolved config, grid points, seeds, versions, device, wall time,
                        and for each array its axis names
    DIR/arrays/<name>.npy

Every array has leading axes ``(point, replica)``; snapshot observables then ``snapshot`` and
their own axes (``level`` for spectra). ``steps`` gives the step of each snapshot and
``hp_<name>`` the per-replica hyperparameters. Analysis code reads only this store, so a run
merged from many machines is analysed like a laptop run.

A shard (``dbm run --shard i/n``) is a store whose manifest has ``shard = {index, count,
replica_ids: [lo, hi]}`` and whose arrays have one flat leading axis ``replica_id`` (ids
``g = p·R + r`` from lo to hi − 1) in place of ``(point, replica)``; `merge` joins shards
into the store a single run writes.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Results:
    manifest: dict
    arrays: dict[str, np.ndarray]
    axes: dict[str, tuple[str, ...]]
    path: Path | None = None

    @property
    def points(self) -> list[dict]:
        return self.manifest["points"]

    @property
    def steps(self) -> np.ndarray:
        return np.asarray(self.manifest["steps"])

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def diverged(self) -> np.ndarray:
        return self.arrays["diverged"]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def names(self) -> list[str]:
        return sorted(self.arrays)

    def summary(self) -> str:
        """A table per grid point: hyperparameters, final losses, divergence, spectrum edges."""
        return summary_table(self)

    def __repr__(self) -> str:
        if "shard" in self.manifest:
            return f"Results({self.manifest['config']['name']!r}, {_shard_text(self.manifest)})"
        shape = self.arrays["diverged"].shape
        return f"Results({self.manifest['config']['name']!r}, points={shape[0]}, replicas={shape[1]}, snapshots={len(self.steps)})"


def save(results: Results, path: str | Path, overwrite: bool = False) -> Path:
    """Write atomically: into a sibling temporary directory, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "arrays").mkdir(parents=True)
    for name, array in results.arrays.items():
        np.save(tmp / "arrays" / f"{name}.npy", np.asarray(array))
    manifest = dict(results.manifest)
    manifest["axes"] = {k: list(v) for k, v in results.axes.items()}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json_default))
    if path.exists():
        if not overwrite:
            shutil.rmtree(tmp)
            raise FileExistsError(path)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(path)
    results.path = path
    return path


def load(path: str | Path) -> Results:
    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{path}: not a results directory (no manifest.json)")
    manifest = json.loads(manifest_file.read_text())
    axes = {k: tuple(v) for k, v in manifest.get("axes", {}).items()}
    arrays = {name: np.load(path / "arrays" / f"{name}.npy") for name in axes}
    return Results(manifest, arrays, axes, path)


class MergeError(ValueError):
    """Shards that do not make one run: other configs, overlapping or missing replicas."""


# manifest entries that describe how one process ran, not what was computed
RUN_INFO = ("shard", "wall_time_s", "created", "device", "chunk_size", "chunk_slots", "versions")


def merge(shards: list[Results]) -> Results:
    """Join shards of one run into the results a single run gives (arrays bit-identical).

    Raises `MergeError` if a store is not a shard, the shards come from different configs,
    or their replica ids overlap or leave a gap.
    """
    if not shards:
        raise MergeError("nothing to merge")
    for r in shards:
        if "shard" not in r.manifest:
            raise MergeError(f"{r.path or r}: not a shard (no shard entry in its manifest)")
    first = shards[0]
    same = ("format", "config", "points", "steps", "seed")
    for r in shards[1:]:
        for key in same:
            if r.manifest.get(key) != first.manifest.get(key):
                raise MergeError(f"{r.path} and {first.path}: different {key}, not shards of one run")
        if r.axes != first.axes:
            raise MergeError(f"{r.path} and {first.path}: different arrays, not shards of one run")
    cfg = first.manifest["config"]
    n_points, replicas = len(first.manifest["points"]), cfg["replicas"]
    ordered = sorted(shards, key=lambda r: tuple(r.manifest["shard"]["replica_ids"]))
    expect = 0
    for r in ordered:
        lo, hi = r.manifest["shard"]["replica_ids"]
        if lo < expect:
            raise MergeError(f"{r.path}: replica ids {lo}..{hi - 1} overlap another shard")
        if lo > expect:
            raise MergeError(f"replica ids {expect}..{lo - 1} missing: no shard covers them")
        expect = hi
    if expect != n_points * replicas:
        raise MergeError(f"replica ids {expect}..{n_points * replicas - 1} missing: no shard covers them")
    arrays, axes = {}, {}
    for name, ax in first.axes.items():
        whole = np.concatenate([r.arrays[name] for r in ordered], axis=0)
        arrays[name] = whole.reshape((n_points, replicas) + whole.shape[1:])
        axes[name] = ("point", "replica") + tuple(ax[1:])
    manifest = {k: v for k, v in first.manifest.items() if k not in ("shard", "axes")}
    manifest["wall_time_s"] = max(r.manifest.get("wall_time_s", 0.0) for r in shards)
    manifest["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest["merged_from"] = [{k: r.manifest[k] for k in RUN_INFO if k in r.manifest} for r in ordered]
    return Results(manifest, arrays, axes)


def _shard_text(m: dict) -> str:
    s = m["shard"]
    lo, hi = s["replica_ids"]
    return f"shard {s['index']}/{s['count']}, replica ids {lo}..{hi - 1}"


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple)):
        return list(obj)
    return str(obj)


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else "inf"
    return f"{x:.4g}"


def summary_table(results: Results) -> str:
    """One row per grid point: hyperparameters that vary, final losses (median over finite
    replicas), the divergent fraction and the mean extreme levels of the final spectrum."""
    if "shard" in results.manifest:
        m = results.manifest
        return (f"{m['config']['name']}: {_shard_text(m)} of {len(m['points'])} points x "
                f"{m['config']['replicas']} replicas, {m.get('wall_time_s', float('nan')):.1f} s on "
                f"{m.get('device', '?')} (join the shards with `dbm merge`)")
    points = results.points
    losses = [name for name in ("test_loss", "train_loss", "grad_norm") if name in results]
    default = ["lr", "batch_size"] if losses else [k for k in ("D", "beta", "dt") if k in points[0]]
    varying = [k for k in points[0] if len({p[k] for p in points}) > 1] or default
    cols = varying + ["replicas", "diverged"] + losses
    spec = next((name for name in ("eigs", "svals", "levels") if name in results), None)
    if spec:
        cols += [f"{spec}_min", f"{spec}_max"]
    rows = []
    div = results["diverged"]
    for p, point in enumerate(points):
        ok = ~div[p]
        row = [_fmt(point[k]) for k in varying]
        row += [str(div.shape[1]), f"{div[p].mean():.0%}"]
        for name in losses:
            if ok.any():
                row.append(_fmt(float(np.nanmedian(results[name][p][ok, -1]))))
            else:
                row.append("-")
        if spec:
            final = results[spec][p][ok, -1] if ok.any() else np.full((1, 1), np.nan)
            row += [_fmt(float(np.mean(final.min(axis=-1)))), _fmt(float(np.mean(final.max(axis=-1))))]
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    m = results.manifest
    head = (
        f"{m['config']['name']}: model {m['config']['model']['name']}, {len(points)} points x "
        f"{div.shape[1]} replicas, {m['config']['steps']} steps, {len(results.steps)} snapshots, "
        f"{m.get('wall_time_s', float('nan')):.1f} s on {m.get('device', '?')}"
    )
    return "\n".join([head, line(cols), *(line(r) for r in rows)])
