"""The results store: one directory per run.

    DIR/manifest.json   resolved config, grid points, seeds, versions, device, wall time,
                        and for each array its axis names
    DIR/arrays/<name>.npy

Every array has leading axes ``(point, replica)``; snapshot observables then ``snapshot`` and
their own axes (``level`` for spectra). ``steps`` gives the step of each snapshot. The
hyperparameters are stored once, in the manifest's grid points (exact, as configured), and read
with `Results.hp`; a replica's are its point's. Analysis code reads only this store, so a run
merged from many machines is analysed like a laptop run.

A shard (``dbm run --shard i/n``) is a store whose manifest has ``shard = {index, count,
replica_ids: [lo, hi]}`` and whose arrays have one flat leading axis ``replica_id`` (ids
``g = p·R + r`` from lo to hi − 1) in place of ``(point, replica)``; `merge` joins shards
into the store a single run writes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dysonbm import ensemble


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

    def model(self):
        """The model (or SDE process) this run simulated, rebuilt from the stored config; with
        `problem` it is everything needed to evaluate a loss, a gradient or a sample again."""
        from dysonbm import config

        return config.model_of(self.config)

    def hp(self, name: str) -> np.ndarray:
        """Hyperparameter ``name`` per grid point, ``(point,)``, as configured (float64; int for
        ``batch_size``). The one place a results directory keeps it: add ``[:, None]`` for a
        per-replica array."""
        if name not in self.points[0]:
            raise KeyError(f"{name!r} is not a hyperparameter of this run ({', '.join(self.points[0])})")
        return np.asarray([p[name] for p in self.points], np.int64 if name == "batch_size" else np.float64)

    @property
    def diverged(self) -> np.ndarray:
        return self.arrays["diverged"]

    @property
    def ensemble(self) -> dict[str, str]:
        """Granularity of each quenched ingredient: "replica", "point" or "run"."""
        return dict(self.manifest.get("ensemble", {}))

    def problem(self, point: int, replica: int = 0) -> dict[str, np.ndarray]:
        """The problem (teacher, fixed layers, target kernel) replica ``replica`` of grid point
        ``point`` trained on, as stored (`problem_<name>` arrays at their granularity)."""
        out = {}
        for name, axes in self.axes.items():
            if name.startswith("problem_"):
                index = {"point": point, "replica": replica}
                lead = tuple(index[a] for a in axes if a in index)
                out[name[len("problem_"):]] = self.arrays[name][lead]
        return out

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
    """Write atomically: into a sibling temporary directory, then rename over ``path``.

    An existing ``path`` is replaced only with ``overwrite`` and only if dbm wrote it (see
    `not_ours`); else FileExistsError before anything is written. On any failure or
    interrupt the temporary directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path}: exists")
        reason = not_ours(path)
        if reason:
            raise FileExistsError(f"{path}: {reason}; not replacing it")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "arrays").mkdir(parents=True)
        for name, array in results.arrays.items():
            np.save(tmp / "arrays" / f"{name}.npy", np.asarray(array))
        manifest = dict(results.manifest)
        manifest["axes"] = {k: list(v) for k, v in results.axes.items()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json_default))
        with deferred_interrupts():  # the swap is never left half-way
            if path.exists():
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            old.rename(path)
        raise
    results.path = path
    return path


RESULT_ENTRIES = {"manifest.json": "file", "arrays": r".+\.npy", "figures": r".+\.png",
                  "checkpoint": r"chunk-\d+\.npz|position\.npz|\..+\.tmp-\d+"}


def not_ours(path: str | Path) -> str | None:
    """Why ``path`` is not a directory dbm may replace, or None: it is empty, or it holds
    only what a run writes (manifest.json, arrays/, checkpoint/, figures/, part-<i>/) with a
    manifest or a checkpoint of dbm's own, so replacing it loses nothing of anyone else's."""
    path = Path(path)
    if path.is_symlink():  # a rename would replace the link, not what it points to
        return "a symbolic link"
    if not path.is_dir():
        return "not a directory"
    try:
        entries = sorted(os.listdir(path))
    except OSError as err:
        return f"cannot be read ({err.strerror or type(err).__name__})"
    if not entries:
        return None
    own = False
    for entry in entries:
        inside = path / entry
        if re.fullmatch(r"part-\d+", entry):
            reason = not_ours(inside)
            if reason:
                return f"{entry}: {reason}"
            own = True
            continue
        kind = RESULT_ENTRIES.get(entry)
        if kind is None:
            return f"holds {entry!r}, which dbm did not write"
        if kind == "file":
            own = own or _is_manifest(inside)
            continue
        try:
            foreign = [f for f in os.listdir(inside) if not re.fullmatch(kind, f)] if inside.is_dir() else [""]
        except OSError:
            foreign = [""]
        if foreign:
            return f"holds {entry}/{foreign[0]}, which dbm did not write"
        own = own or entry == "checkpoint"
    return None if own else "no manifest or checkpoint of dbm's in it"


RUN_LAYOUT = ("devices", "chunk_size", "segment_snapshots")  # [run] settings that change no number


def config_difference(stored: dict, requested: dict) -> str | None:
    """The first setting in which two configs (as `Config.to_dict` or a manifest holds them)
    differ, as ``key = stored there, requested here``; None if they run the same numbers."""
    a, b = (json.loads(json.dumps(c, default=_json_default)) for c in (stored, requested))
    for c in (a, b):
        if isinstance(c.get("run"), dict):
            c["run"] = {k: v for k, v in c["run"].items() if k not in RUN_LAYOUT}
    return _difference(a, b, "")


def _difference(a, b, where: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}{key} {'absent' if key not in a else repr(a[key])} there, " \
                       f"{'absent' if key not in b else repr(b[key])} here"
            found = _difference(a[key], b[key], f"{where}{key}.")
            if found:
                return found
        return None
    return None if a == b else f"{where.rstrip('.') or 'config'} = {a!r} there, {b!r} here"


def _is_manifest(path: Path) -> bool:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and "format" in m and isinstance(m.get("config"), dict)


@contextlib.contextmanager
def deferred_interrupts():
    """Hold SIGINT and SIGTERM until the block is done, then deliver them as usual (main
    thread only: signal handlers can be changed nowhere else)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in held[:1]:
            handler = previous[s]
            if callable(handler):
                handler(s, None)
            elif handler != signal.SIG_IGN:
                signal.raise_signal(s)


def load(path: str | Path) -> Results:
    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{path}: not a results directory (no manifest.json)")
    manifest = _read_manifest(manifest_file)
    axes = {k: tuple(v) for k, v in manifest.get("axes", {}).items()}
    arrays = {name: _read_array(path, name, axes[name], manifest) for name in axes}
    return Results(manifest, arrays, axes, path)


class ResultsError(ValueError):
    """A results directory that cannot be read as one: names the bad file and why."""


def _read_manifest(file: Path) -> dict:
    """The manifest, checked for every entry the summary and the analyses read."""
    try:
        m = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ResultsError(f"{file}: unreadable ({type(err).__name__})") from None

    def bad(what):
        return ResultsError(f"{file}: {what}")

    if not isinstance(m, dict):
        raise bad(f"expected a JSON object, got {type(m).__name__}")
    for key, kind in (("config", dict), ("points", list), ("steps", list), ("axes", dict)):
        if not isinstance(m.get(key), kind):
            raise bad(f"{key!r} missing or not a {'JSON object' if kind is dict else 'list'}")
    cfg = m["config"]
    if not isinstance(cfg.get("name"), str) or not isinstance(cfg.get("model"), dict) or "name" not in cfg["model"]:
        raise bad("config without a name or a model name")
    for key in ("replicas", "steps"):
        if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool) or cfg[key] <= 0:
            raise bad(f"config.{key} = {cfg.get(key)!r}: expected a positive integer")
    points = m["points"]
    if not points or not all(isinstance(p, dict) for p in points):
        raise bad("'points' must be a non-empty list of objects")
    keys = set(points[0])
    for p in points:
        if set(p) != keys or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p.values()):
            raise bad(f"grid point {p!r}: expected the numbers {sorted(keys)}")
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in m["steps"]) or not m["steps"]:
        raise bad("'steps' must be a non-empty list of numbers")
    for name, ax in m["axes"].items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise bad(f"array name {name!r}: not a plain file name")
        if not isinstance(ax, list) or not all(isinstance(a, str) for a in ax):
            raise bad(f"axes of {name!r}: expected a list of names")
    lead = ["replica_id"] if "shard" in m else ["point", "replica"]
    if m["axes"].get("diverged") != lead:
        raise bad(f"axes of 'diverged' = {m['axes'].get('diverged')!r}, expected {lead}")
    for name in ("test_loss", "train_loss", "grad_norm", "eigs", "svals", "levels"):  # what the summary reads
        ax = m["axes"].get(name)
        if ax is not None and ax[:len(lead) + 1] != lead + ["snapshot"]:
            raise bad(f"axes of {name!r} = {ax!r}, expected {lead + ['snapshot']} first")
    if "shard" in m:
        s = m["shard"]
        ids = s.get("replica_ids") if isinstance(s, dict) else None
        if (not isinstance(ids, list) or len(ids) != 2 or not all(isinstance(i, int) for i in ids)
                or not 0 <= ids[0] < ids[1] or not all(isinstance(s.get(k), int) for k in ("index", "count"))):
            raise bad(f"shard = {s!r}: expected index, count and replica_ids [lo, hi]")
    return m


def _read_array(path: Path, name: str, axes: tuple, manifest: dict) -> np.ndarray:
    """One array, checked against the sizes its axes have in the manifest."""
    file = path / "arrays" / f"{name}.npy"
    try:
        array = np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise ResultsError(f"{file}: missing (listed in manifest.json)") from None
    except (OSError, ValueError, EOFError) as err:
        raise ResultsError(f"{file}: unreadable ({type(err).__name__})") from None
    if not isinstance(array, np.ndarray):
        raise ResultsError(f"{file}: not a single array")
    lo_hi = manifest.get("shard", {}).get("replica_ids", [0, 0])
    sizes = {"point": len(manifest["points"]), "replica": manifest["config"]["replicas"],
             "replica_id": lo_hi[1] - lo_hi[0], "snapshot": len(manifest["steps"])}
    expected = tuple(sizes.get(a) for a in axes)
    if array.ndim != len(axes) or any(e is not None and e != n for e, n in zip(expected, array.shape)):
        want = " x ".join(f"{a} {e}" if e is not None else a for a, e in zip(axes, expected))
        raise ResultsError(f"{file}: shape {array.shape}, expected {want}")
    return array


class MergeError(ValueError):
    """Shards that do not make one run: other configs, overlapping or missing replicas."""


# manifest entries that describe how one process ran, not what was computed
RUN_INFO = ("shard", "wall_time_s", "compile_s", "compiles", "compiles_cached", "created", "device", "chunk_size",
            "chunk_slots", "versions")


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
    granularity = first.manifest.get("ensemble", {}).get("problem", "replica")
    for name, ax in first.axes.items():
        whole = np.concatenate([r.arrays[name] for r in ordered], axis=0)
        if name.startswith("problem_"):  # shards keep problems per replica: back to their granularity
            stored, lead = ensemble.stored_problems({name: whole}, granularity, n_points, replicas)
            arrays[name], axes[name] = stored[name], lead + tuple(ax[1:])
            continue
        arrays[name] = whole.reshape((n_points, replicas) + whole.shape[1:])
        axes[name] = ("point", "replica") + tuple(ax[1:])
    manifest = {k: v for k, v in first.manifest.items() if k not in ("shard", "axes")}
    for timing in ("wall_time_s", "compile_s"):
        manifest[timing] = max(r.manifest.get(timing, 0.0) for r in shards)
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


def _sweep_blocks(config: dict) -> list[dict]:
    blocks = config.get("sweep") or []
    blocks = [blocks] if isinstance(blocks, dict) else blocks
    return [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def grid_text(config: dict) -> str:
    """The grid a config runs, block by block: ``lr=[0.1, 0.2] x batch_size=[16] + ...``,
    or ``one point`` when nothing is swept."""

    def values(v):
        v = v if isinstance(v, (list, tuple)) else [v]
        return "[" + ", ".join(f"{x:g}" if isinstance(x, (int, float)) else repr(x) for x in v) + "]"

    blocks = _sweep_blocks(config)
    if not blocks:
        return "one point"
    return " + ".join(" x ".join(f"{k}={values(v)}" for k, v in b.items()) for b in blocks)


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
    swept = {k for block in _sweep_blocks(results.config) for k in block}
    varying = [k for k in points[0] if k in swept or len({p[k] for p in points}) > 1] or default
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
        f"{m['config']['name']}: model {m['config']['model']['name']}, grid {grid_text(m['config'])}: {len(points)} points x "
        f"{div.shape[1]} replicas, {m['config']['steps']} steps, {len(results.steps)} snapshots, "
        f"{m.get('wall_time_s', float('nan')):.1f} s (compile {m.get('compile_s', float('nan')):.1f} s"
        f"{', from the cache' if m.get('compiles') and m.get('compiles_cached') == m['compiles'] else ''}) "
        f"on {m.get('device', '?')}"
    )
    return "\n".join([head, line(cols), *(line(r) for r in rows)])
