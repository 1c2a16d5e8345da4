"""Replica-steps per second of every model's published preset on this machine's devices.

Each preset runs at R replicas for a few segments of its own program (compilation timed
apart), so the figures are the steady rate of the configuration a user launches, with its
published ensemble (a teacher per replica for the multilayer network, frozen per-replica
noise for the teacher–student model, persistent chains for the RBM), and the projected wall
time of the full published preset at that rate.

    python benchmarks/bench_models.py                       # R = 1024 on CPU
    python benchmarks/bench_models.py --replicas 14400      # one GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    cores = len(os.sched_getaffinity(0))
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={cores}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dysonbm import config, runner  # noqa: E402

#: preset, steps per timed segment, FLOP per replica-step (counted by hand, forward + backward)
PRESETS = {
    "multilayer_paper": (2000, 9.0e3),
    "ts_linear_scaling": (500, 4.0e2),
    "rbm_linear_scaling": (200, 2.0e4),
}


def preset_rate(name: str, replicas: int, steps: int, segments: int = 2) -> dict:
    """Steady replica-steps/s of preset ``name`` at ``replicas`` replicas on all local devices."""
    full = config.load(name)
    raw = config.apply_overrides(full.to_dict(), {})
    # one grid point, the preset's own ensemble and data; snapshots at the end of each segment
    raw["sweep"] = [{k: [v[0]] for k, v in full.sweeps[0].items()}] if full.sweeps else []
    raw.update(replicas=replicas, steps=steps * (segments + 1), snapshot_every=steps)
    raw["run"] = {**raw["run"], "segment_snapshots": 1, "chunk_size": replicas}
    if raw["model"].get("level_sde"):
        # at the preset's interval (5×10⁶ steps) these snapshot terms cost 0.1% of the run;
        # at a timed segment's, they would dominate it
        raw["model"]["level_sde"] = False
    plan = runner.Plan(config.from_dict(raw))
    t0 = time.perf_counter()
    _, keys, hp = plan.chunk_inputs(0)
    state, data, _ = plan.init(keys, hp)
    state, obs = plan.segment(state, hp, data, jnp.int32(0))
    jax.block_until_ready(obs)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(segments):
        state, obs = plan.segment(state, hp, data, jnp.int32((s + 1) * steps))
    jax.block_until_ready(obs)
    rate = replicas * steps * segments / (time.perf_counter() - t0)
    total = full.replicas * len(config.grid_points(full)) * full.steps
    return {"rate": rate, "compile_s": compile_s, "full_replica_steps": total, "full_hours": total / rate / 3600}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=1024)
    p.add_argument("--presets", nargs="*", default=list(PRESETS))
    p.add_argument("--peak-tflops", type=float, default=0.0, help="fp32 peak of the devices, for the fraction")
    args = p.parse_args(argv)
    dev = jax.devices()[0]
    print(f"device: {len(jax.devices())} x {dev.platform}:{getattr(dev, 'device_kind', '')}  jax {jax.__version__}")
    print(f"{'preset':<20} {'R':>6} {'replica-steps/s':>16} {'compile s':>9} {'full preset':>12} {'of peak':>8}")
    for name in args.presets:
        steps, flop = PRESETS[name]
        r = preset_rate(name, args.replicas, steps)
        frac = f"{r['rate'] * flop / (args.peak_tflops * 1e12):.2%}" if args.peak_tflops else "–"
        print(f"{name:<20} {args.replicas:>6} {r['rate']:>16,.0f} {r['compile_s']:>9.1f} "
              f"{r['full_hours']:>10.3g} h {frac:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
