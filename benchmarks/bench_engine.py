"""Replica-steps per second of the multilayer SGD engine, side by side with a numpy loop.

The workload is the published phase-diagram network (SCIENCE.md §3.3): tanh, |B| = 4,
K = 16, L = 32, a fixed dataset of 1000 batches. The reference is what a hand-written research
script does: a Python loop over replicas and steps with per-step einsum forward and gradient
on one replica at a time. Both run in this process, one after the other, and the table gives
their ratio.

    python benchmarks/bench_engine.py            # R = 1, 64, 1024 on all devices and on one
    python benchmarks/bench_engine.py --quick    # fewer steps

The last column is the fraction of the machine's fp32 peak the engine reaches: FLOP per
replica-step counted by hand (`step_flop`) against the rate of a large matrix product
(`gemm_peak`), the best this machine's XLA does on dense fp32 work, for the devices the row
used (on CPU per core: XLA's matrix product uses every core, the engine one core per device).

It also prices the published ensemble (a teacher, dataset and test set per replica) against
one teacher for the run and one dataset per grid point, at the largest R, side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# the numpy loop runs one replica at a time on one core; BLAS threads of its own would keep
# spinning after it and take the cores from the engine's timings that follow (measured: the
# one-device rate fell by a third)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    cores = len(os.sched_getaffinity(0))
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={cores}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dysonbm import config, runner  # noqa: E402

K, L, D, BATCH, BATCHES = 16, 32, 3, 4, 1000


def numpy_loop(replicas: int, steps: int, lr: float = 0.5, seed: int = 0) -> float:
    """Replica-steps/s of a plain numpy training loop, one replica and one step at a time."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(L, D)) / np.sqrt(D)
    z = rng.normal(size=K) / np.sqrt(K)
    w_teacher = rng.normal(size=(K, L)) / np.sqrt(L)
    x = rng.normal(size=(BATCHES * BATCH, D))
    y = np.einsum("k,nk->n", z, np.tanh(np.einsum("kl,nl->nk", w_teacher, np.tanh(np.einsum("ld,nd->nl", m, x)))))
    start = time.perf_counter()
    for _ in range(replicas):
        w = rng.normal(size=(K, L)) / np.sqrt(L)
        for t in range(steps):
            b = t % BATCHES
            xb, yb = x[b * BATCH:(b + 1) * BATCH], y[b * BATCH:(b + 1) * BATCH]
            phi0 = np.tanh(np.einsum("ld,nd->nl", m, xb))
            s = np.tanh(np.einsum("kl,nl->nk", w, phi0))
            r = np.einsum("k,nk->n", z, s) - yb
            delta = np.einsum("n,k,nk->nk", r, z, 1.0 - s * s) / BATCH
            w -= lr * np.einsum("nk,nl->kl", delta, phi0)
    return replicas * steps / (time.perf_counter() - start)


def step_flop(k: int = K, l: int = L, b: int = BATCH) -> int:
    """FLOP of one multilayer SGD step, counted by hand (a multiply-add is 2, tanh 1):
    forward W φ0 and the gradient Σ_b δ_b φ0_bᵀ 2bkl each, the update 2kl, and per sample
    and feature the tanh, f', the readout and δ (about 7)."""
    return 4 * b * k * l + 2 * k * l + 7 * b * k


def gemm_peak(n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of an n×n fp32 matrix product on every device at once (best of ``repeats``):
    on CPU, all cores' (one device's product already runs on all of them)."""
    devices = jax.devices()
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("d",)), jax.sharding.PartitionSpec("d"))
    a = jax.device_put(jnp.full((len(devices), n, n), 1.0 / n, jnp.float32), sharding)
    # HIGHEST, as the engine's products: no TF32 on an accelerator
    product = jax.jit(lambda a: jnp.einsum("dij,djk->dik", a, a, precision=jax.lax.Precision.HIGHEST),
                      out_shardings=sharding)
    jax.block_until_ready(product(a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(product(a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * len(devices) / best


#: one teacher and test set for the run, one dataset per grid point (the cheapest ensemble)
SHARED_ENSEMBLE = {"problem": "run", "inputs": "point", "test": "run"}


def bench_plan(replicas: int, steps: int, devices: int, unroll: int = 1, ensemble: dict | None = None,
               every: int | None = None) -> runner.Plan:
    """The plan of the benchmark's run: segments of ``every`` steps (default ``steps``)."""
    every = every or steps
    raw = {
        "name": "bench", "seed": 0, "replicas": replicas, "steps": 2 * every, "snapshot_every": every,
        "model": {"name": "multilayer", "activation": "tanh", "features": K, "hidden": L, "d_in": D},
        "train": {"lr": 0.5, "batch_size": BATCH, "init_std": 1.0},
        "data": {"protocol": "fixed", "batches_per_epoch": BATCHES},
        "record": {"spectra": False},
        "run": {"segment_snapshots": 1, "unroll": unroll},
        "ensemble": ensemble or {},
    }
    return runner.Plan(config.from_dict(raw), devices=devices)


def engine_rate(replicas: int, steps: int, devices: int, unroll: int = 1, ensemble: dict | None = None) -> float:
    """Replica-steps/s of dbm's engine over all chunks of the run (the runner's own chunk
    size), each chunk ``steps`` steps and one snapshot; compilation excluded: chunk 0 runs one
    untimed segment first. ``ensemble``: the `[ensemble]` table (default: the published one,
    everything per replica)."""
    plan = bench_plan(replicas, steps, devices, unroll, ensemble)
    _, keys, hp = plan.chunk_inputs(0)
    state, data, _ = plan.init(keys, hp)
    jax.block_until_ready(plan.segment(state, hp, data, jnp.int32(0)))  # compile
    elapsed = 0.0
    for c in range(plan.n_chunks):
        _, keys, hp = plan.chunk_inputs(c)
        state, data, _ = plan.init(keys, hp)
        jax.block_until_ready(state)
        start = time.perf_counter()
        state, obs = plan.segment(state, hp, data, jnp.int32(0))
        jax.block_until_ready(obs)
        elapsed += time.perf_counter() - start
    return replicas * steps / elapsed


def steady_rate(replicas: int, steps: int, devices: int, unroll: int = 1, repeats: int = 3) -> float:
    """Replica-steps/s of the steps alone: chunk 0 run for ``steps`` and for 2 × ``steps``
    steps (each ending in one snapshot, best of ``repeats``), the difference of the times."""
    times = []
    for every in (steps, 2 * steps):
        plan = bench_plan(replicas, steps, devices, unroll, every=every)
        ids, keys, hp = plan.chunk_inputs(0)
        state, data, _ = plan.init(keys, hp)
        state, obs = plan.segment(state, hp, data, jnp.int32(0))  # compile (the state is donated)
        jax.block_until_ready(obs)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            state, obs = plan.segment(state, hp, data, jnp.int32(0))
            jax.block_until_ready(obs)
            best = min(best, time.perf_counter() - start)
        times.append(best)
    return len(set(ids.tolist())) * steps / (times[1] - times[0])


def segment_steps(replicas: int, scale: float) -> int:
    """Steps timed per chunk: at least 20 000 (× scale), so that the one snapshot at the end
    (the full-dataset loss and gradient norm, a test-set gradient per sample, a 16×16
    eigensolver: a few thousand steps' worth) weighs little, as between the published
    preset's rare snapshots."""
    return int(scale * max(20_000, min(200_000, 2_000_000 / replicas)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps (noisier figures)")
    p.add_argument("--replicas", type=int, nargs="*", default=[1, 64, 1024])
    p.add_argument("--unroll", type=int, default=1)
    args = p.parse_args(argv)
    n_dev = len(jax.devices())
    scale = 0.25 if args.quick else 1.0
    ref_steps = int(4000 * scale)
    ref = numpy_loop(2, ref_steps)
    dev = jax.devices()[0]
    print(f"device: {n_dev} x {dev.platform}:{getattr(dev, 'device_kind', '')}  jax {jax.__version__}")
    # on CPU a device is one core for the engine, while the matrix product uses every core
    on_cpu = jax.devices()[0].platform == "cpu"
    unit = "core" if on_cpu else "device"
    n_gemm = 1024 if on_cpu else 8192  # an accelerator needs a larger product to reach its peak
    peak_per_unit = gemm_peak(n_gemm) / (len(os.sched_getaffinity(0)) if on_cpu else n_dev)
    flop = step_flop()
    print(f"numpy loop (1 replica at a time, {ref_steps} steps x 2 replicas): {ref:,.0f} replica-steps/s")
    print(f"fp32 peak: {peak_per_unit / 1e9:,.1f} GFLOP/s per {unit} (n = {n_gemm} matrix product); "
          f"{flop:,} FLOP per replica-step\n")
    print("replica-steps/s: all chunks, each with one snapshot; steady: the steps alone (chunk 0)")
    print(f"{'R':>6} {'devices':>7} {'replica-steps/s':>16} {'x numpy':>9} {'steady':>12} {'of peak':>8}")
    device_counts = sorted({1, n_dev})
    for r in args.replicas:
        steps = segment_steps(r, scale)
        for d in device_counts:
            if r % d:
                continue
            rate = engine_rate(r, steps, d, args.unroll)
            steady = steady_rate(r, steps, d, args.unroll)
            share = steady * flop / (peak_per_unit * d)
            print(f"{r:>6} {d:>7} {rate:>16,.0f} {rate / ref:>9.1f} {steady:>12,.0f} {share:>8.1%}", flush=True)
    r = max(args.replicas)
    steps = segment_steps(r, scale)
    own = engine_rate(r, steps, n_dev, args.unroll)
    shared = engine_rate(r, steps, n_dev, args.unroll, SHARED_ENSEMBLE)
    print(f"\nensemble at R = {r} on {n_dev} devices: everything per replica (published) {own:,.0f}, "
          f"one teacher and one dataset per point {shared:,.0f} replica-steps/s; cost {1 - own / shared:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
