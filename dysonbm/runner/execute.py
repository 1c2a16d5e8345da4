"""Running a plan: chunks × segments with checkpoints and resume, the manifest, and `run`, the entry point."""

from __future__ import annotations

import datetime
import platform
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import compile_cache, engine, ensemble, io, sizes
from dysonbm._version import __version__
from dysonbm.config import Config
from dysonbm.runner.checkpoint import CHECKPOINT, CheckpointError, _meta, _read_npz, _state_from_host, _state_to_host, _write_npz
from dysonbm.runner.plan import Plan
from dysonbm.runner.progress import Progress


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

    if ck is not None and resume and (ck / "position.npz").exists():
        saved = _read_npz(ck / "position.npz", fp)
        first_chunk, first_seg = saved["meta"]["chunk"], saved["meta"]["segments"]
        wall_before = saved["meta"]["wall"]
        for c in range(first_chunk):
            done = _read_npz(ck / f"chunk-{c:05d}.npz", fp)
            rows = plan.rows(c)
            for name in collected:
                collected[name][rows] = done[f"obs_{name}"]
            diverged[rows], diverge_step[rows] = done["diverged"], done["diverge_step"]
            for name in problems:
                problems[name][rows] = done[f"problem_{name}"]
        if first_seg:
            rows = plan.rows(first_chunk)
            upto = 1 + first_seg * plan.seg
            for name in collected:
                collected[name][rows, :upto] = saved[f"obs_{name}"]
    elif ck is not None:
        shutil.rmtree(ck, ignore_errors=True)
    if ck is not None:
        ck.mkdir(parents=True, exist_ok=True)

    meter = Progress(plan.n_ids * cfg.steps, progress)
    programs = _Programs(meter)
    for c in range(first_chunk, plan.n_chunks):
        ids, keys, hp = plan.chunk_inputs(c)
        rows = plan.rows(c)
        n_real = len(rows)
        pad = plan.chunk_padding(c)
        state, data, obs0 = programs.get(("init", pad.batch), pad.init, keys, hp)(keys, hp)
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
            args = (state, hp, data, jnp.int32(t0))
            state, obs = programs.get(("segment", pad.batch), pad.segment, *args)(*args)
            first = 1 + s * plan.seg
            for name, value in obs.items():
                collected[name][rows, first:first + plan.seg] = np.asarray(value)[:n_real]
            t_end = t0 + plan.seg * cfg.snapshot_every
            meter.update(rows[0] * cfg.steps + n_real * t_end, f"chunk {c + 1}/{plan.n_chunks} step {t_end}/{cfg.steps}")
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
    return _results(plan, collected, problems, diverged, diverge_step, wall, programs.timing())


class _Programs:
    """The compiled programs of a run, compiled ahead of their first call and timed apart,
    once per program and argument shapes: the chunks of one padding have the same shapes, so a
    sweep compiles once per batch size, whatever its number of grid points."""

    def __init__(self, meter: Progress):
        self.meter = meter
        self.compiled = {}
        self.seconds = 0.0
        self.cached = 0  # of them loaded from the persistent cache (`dysonbm.compile_cache`)

    def get(self, name, jitted, *args):
        shapes = (name, jax.tree_util.tree_structure(args),
                  tuple((a.shape, a.dtype) for a in jax.tree_util.tree_leaves(args)))
        if shapes not in self.compiled:
            loaded, t0 = compile_cache.hits(), time.perf_counter()
            self.compiled[shapes] = jitted.lower(*args).compile()
            spent = time.perf_counter() - t0
            cached = compile_cache.hits() > loaded
            self.cached += cached
            self.seconds += spent
            self.meter.exclude(spent, cached)
        return self.compiled[shapes]

    def timing(self) -> dict:
        return {"compile_s": self.seconds, "compiles": len(self.compiled), "compiles_cached": self.cached}


def _results(plan: Plan, collected, problems, diverged, diverge_step, wall, timing=None) -> io.Results:
    """Arrays with leading axes (point, replica); a shard keeps the flat ``replica_id`` axis.
    Problems (``problem_<name>``) are kept at their granularity, per replica in a shard."""
    lead = ("replica_id",) if plan.shard else ("point", "replica")
    shape = (plan.n_ids,) if plan.shard else (plan.n_points, plan.replicas)
    arrays = {name: v.reshape(shape + v.shape[1:]) for name, v in collected.items()}
    axes = {name: lead + ("snapshot",) + tuple(plan.sim.axes.get(name, ())) for name in arrays}
    arrays["diverged"], axes["diverged"] = diverged.reshape(shape), lead
    arrays["diverge_step"], axes["diverge_step"] = diverge_step.reshape(shape), lead
    if plan.shard:
        stored, plead = problems, lead
    else:
        stored, plead = ensemble.stored_problems(problems, plan.ensemble.get("problem", "run"), *shape)
    for name, value in stored.items():
        arrays[f"problem_{name}"] = value
        axes[f"problem_{name}"] = plead + tuple(f"{name}_axis{i}" for i in range(value.ndim - len(plead)))
    return io.Results(manifest(plan, wall, timing), arrays, axes)


def manifest(plan: Plan, wall: float, timing: dict | None = None) -> dict:
    import optax


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
        # compilation of this process's programs (not of earlier, resumed processes)
        **(timing or {}),
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
