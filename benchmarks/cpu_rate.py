"""Replica-steps per CPU-second of a preset's program on one device: a rate that other jobs on
the machine barely move (process time, not wall time), for before/after comparisons on a
shared machine.

    python benchmarks/cpu_rate.py rbm_linear_scaling:512:200 ts_online:1024:500
    PYTHONPATH=/tmp/before python benchmarks/cpu_rate.py ...      # another source tree

Each SPEC is NAME:R:STEPS; NAME is a shipped preset (its first grid point) or a workload of
`bench_reference.py` (multilayer, ts, ts_online, rbm). Compilation and one warm-up segment
are excluded; three segments of STEPS steps are timed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reference import WORKLOADS  # noqa: E402

from dysonbm import config, runner  # noqa: E402


def cpu_rate(name: str, replicas: int, steps: int, segments: int = 3) -> tuple[float, float]:
    """(replica-steps per CPU-second, per wall-second) of one chunk of ``replicas``."""
    if name in WORKLOADS:
        path = Path(tempfile.mkdtemp()) / f"{name}.toml"
        path.write_text(f"seed = 0\nreplicas = 1\nsteps = 1\nsnapshot_every = 1\n{WORKLOADS[name][0]}")
        name = str(path)
    full = config.load(name)
    raw = config.apply_overrides(full.to_dict(), {})
    raw["sweep"] = [{k: [v[0]] for k, v in full.sweeps[0].items()}] if full.sweeps else []
    raw.update(replicas=replicas, steps=steps * (segments + 1), snapshot_every=steps)
    raw["run"] = {**raw.get("run", {}), "segment_snapshots": 1, "chunk_size": replicas}
    if raw["model"].get("level_sde"):
        raw["model"]["level_sde"] = False
    plan = runner.Plan(config.from_dict(raw))
    _, keys, hp = plan.chunk_inputs(0)
    state, data, _ = plan.init(keys, hp)
    state, obs = plan.segment(state, hp, data, jnp.int32(0))
    jax.block_until_ready(obs)
    cpu, wall = time.process_time(), time.perf_counter()
    for s in range(segments):
        state, obs = plan.segment(state, hp, data, jnp.int32((s + 1) * steps))
    jax.block_until_ready(obs)
    n = replicas * steps * segments
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def main(argv) -> int:
    import dysonbm

    print(f"dysonbm from {Path(dysonbm.__file__).parent}; one device; replica-steps per second")
    for spec in argv:
        name, r, steps = spec.split(":")
        per_cpu, per_wall = cpu_rate(name, int(r), int(steps))
        print(f"{spec:<32} {per_cpu:>12,.0f} per CPU-s {per_wall:>12,.0f} per wall-s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
