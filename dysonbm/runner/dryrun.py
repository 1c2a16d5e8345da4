"""`dbm run --dry-run`: the plan, its sizes and, optionally, a timed calibration, without running it."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from dysonbm.runner.plan import HEADROOM, Plan
from dysonbm.runner.progress import _duration


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""


def _seconds(s: float) -> str:
    return f"{s:.3g} s" if s < 60 else _duration(s)


def calibrate(plan: Plan, steps: int = 300, chunk: int = 0, min_seconds: float = 0.2) -> dict:
    """Seconds of a chunk's init, of one call of its segment program beside its work, of one
    chunk-step and of one snapshot, timed apart, for chunk ``chunk`` (the first by default;
    chunks of one padding cost the same).

    Three programs: ``2h`` steps and one snapshot (``h = steps // 2``), ``h`` steps twice with
    a snapshot each, and ``2h + n`` steps with one snapshot. The second less the first is one
    snapshot; the third less the first is n steps, with n raised (one more compile) until they
    take ``min_seconds``; what the first leaves is the call's own cost. A run whose snapshots
    are far apart then costs what its steps cost, one with costly snapshots (the level-SDE
    terms) what they cost, and many short segments what their calls cost. Each program's time
    is the best of two calls.
    """
    h = max(1, steps // 2)
    pad = plan.chunk_padding(chunk)
    _, keys, hp = plan.chunk_inputs(chunk)
    state, step = None, 2 * h  # the compiling calls below take steps 0 … 2h − 1

    def timed(program, length):
        # every call goes on from the last one's step, as a run does: calls that re-read the
        # same batches found them in cache and timed the RBM's steps at half their cost
        nonlocal state, step
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            state, obs = program(state, hp, data, jnp.int32(step))
            jax.block_until_ready((state, obs))
            best = min(best, time.perf_counter() - t0)
            step += length
        return best

    t0 = time.perf_counter()
    one, two = plan.segment_program(2 * h, 1, pad.sim), plan.segment_program(h, 2, pad.sim)
    state, data, _ = pad.init(keys, hp)
    jax.block_until_ready(state)
    for program in (one, two):  # compile both
        state, obs = program(state, hp, data, jnp.int32(0))
    jax.block_until_ready((state, obs))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, data, _ = pad.init(keys, hp)
    jax.block_until_ready((state, data))
    init_s = time.perf_counter() - t0
    t_one, t_two = timed(one, 2 * h), timed(two, 2 * h)
    extra, t_long = 2 * h, None
    for _ in range(2):
        longer = plan.segment_program(2 * h + extra, 1, pad.sim)
        state, obs = longer(state, hp, data, jnp.int32(step))  # compile
        step += 2 * h + extra
        t_long = timed(longer, 2 * h + extra)
        spent = t_long - t_one
        if spent >= min_seconds:
            break
        extra = int(extra * min(64.0, max(2.0, min_seconds / max(spent, 1e-9))))  # once more, long enough
    per_step = max(t_long - t_one, 0.0) / extra
    snapshot = max(t_two - t_one, 0.0)
    call = max(t_one - 2 * h * per_step - snapshot, 0.0)
    return {"compile_s": compile_s, "init_s": init_s, "call_s": call, "per_chunk_step_s": per_step,
            "snapshot_s": snapshot, "steps": 4 * h + extra}


def estimate(plan: Plan) -> dict:
    """The calibrated wall time of ``plan``: ``total_s``, ``compile_s`` and, per padding (batch
    size), ``parts`` ``(batch, seconds per chunk, chunks)``, each from its own calibration
    (chunks of |B| = 64 cost more than chunks of |B| = 4)."""
    cfg = plan.cfg
    members = {}
    for c in range(plan.n_chunks):
        members.setdefault(plan.chunk_padding(c).batch, []).append(c)
    parts, compile_s = [], 0.0
    for batch, chunks in members.items():
        cal = calibrate(plan, chunk=chunks[0])
        per_chunk = (cal["init_s"] + cal["call_s"] * plan.n_segments + cal["per_chunk_step_s"] * cfg.steps
                     + cal["snapshot_s"] * plan.n_intervals)
        parts.append((batch, per_chunk, len(chunks)))
        compile_s += cal["compile_s"]
    # the calibration's compile (init and two programs) stands in for the run's (init and one)
    total = sum(per_chunk * n for _, per_chunk, n in parts) + compile_s
    return {"total_s": total, "compile_s": compile_s, "parts": parts, "steps": cal["steps"]}


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
        est = estimate(plan)
        several = len(est["parts"]) > 1
        parts = ", ".join(f"{_seconds(per_chunk)} per chunk x {n}" + (f" at |B| = {batch}" if several else "")
                          for batch, per_chunk, n in est["parts"])
        lines.append(f"  estimated wall time: {_seconds(est['total_s'])} ({parts} + compile {est['compile_s']:.1f} s; "
                     f"from {est['steps']} calibration steps, a chunk's init, calls, steps and snapshots timed apart)")
    return "\n".join(lines)
