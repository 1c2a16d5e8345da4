"""Throughput of the eigenvalue-SDE integrators: level-steps per second, side by side.

    python benchmarks/bench_dyson.py            # N = 16, 64, 256, 1024
    python benchmarks/bench_dyson.py --quick    # N = 16, 64

For each N: R replicas (R = 1024, fewer at N = 1024) of the β = 1 DBM with U = γλ²/2 at the
recommended dt, advanced by `dysonbm.dyson`'s stable split scheme, by its plain
Euler–Maruyama, and (if diffrax is importable) by diffrax's Euler on the same SDE and dt,
vmapped over replicas. Each is compiled and warmed up first; the timed call runs `steps`
steps from the stationary start. Level-steps/s = R·N·steps/seconds. Ratios are of times
measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import dyson as dy


def _timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile and warm up
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, out


def run_dysonbm(n, R, steps, scheme, key):
    p = dy.DysonBM(n, start="semicircle", scheme=scheme)
    hp = {k: jnp.full((R,), v) for k, v in p.defaults().items()}
    hp["dt"] = jnp.full((R,), dy.recommended_dt(n))
    keys = jax.random.split(key, R)
    init = jax.jit(jax.vmap(p.init))
    state = jax.block_until_ready(init(keys, hp))

    @jax.jit
    def advance(state):
        def body(i, s):
            ks = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
            return jax.vmap(p.step)(s, ks, hp)

        return jax.lax.fori_loop(0, steps, body, state).y

    seconds, y = _timed(advance, state)
    ordered = bool(jnp.all(jnp.isfinite(y)) & jnp.all(jnp.diff(y, axis=-1) > 0))
    return seconds, ordered


def run_diffrax(n, R, steps, key):
    import diffrax

    dt = dy.recommended_dt(n)
    beta = D = gamma = 1.0
    eye = jnp.eye(n, dtype=bool)

    def drift(t, y, args):
        d = y[:, None] - y[None, :]
        return -gamma * y + beta * D * jnp.sum(jnp.where(eye, 0.0, 1.0 / jnp.where(eye, 1.0, d)), axis=1)

    def diffusion(t, y, args):
        import lineax

        return lineax.DiagonalLinearOperator(jnp.full((n,), jnp.sqrt(2.0 * D), y.dtype))

    keys = jax.random.split(key, R)
    y0 = jax.vmap(lambda k: dy.sample_hermite(k, n, beta, 1.0))(keys)

    def one(y0, k):
        bm = diffrax.UnsafeBrownianPath(shape=(n,), key=k)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), t0=0.0, t1=steps * dt, dt0=dt, y0=y0,
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps + 1,
                                  adjoint=diffrax.DirectAdjoint())
        return sol.ys[-1]

    fn = jax.jit(jax.vmap(one))
    seconds, y = _timed(fn, y0, keys)
    ordered = bool(jnp.all(jnp.isfinite(y)) & jnp.all(jnp.diff(y, axis=-1) > 0))
    return seconds, ordered


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only N = 16, 64")
    ap.add_argument("--budget", type=float, default=3e8, help="pair interactions per timed run (sets steps)")
    args = ap.parse_args(argv)
    sizes = [16, 64] if args.quick else [16, 64, 256, 1024]
    try:
        import diffrax  # noqa: F401

        have_diffrax = True
    except ImportError:
        have_diffrax = False
        print("diffrax not importable: its column is skipped (pip install diffrax)")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    header = f"{'N':>5} {'R':>5} {'steps':>6} | {'split':>10} {'euler':>10}" + (f" {'diffrax':>10}" if have_diffrax else "")
    header += " | split/euler" + (" split/diffrax" if have_diffrax else "") + " | ordered s/e" + ("/d" if have_diffrax else "")
    print("level-steps per second (higher is better); ratios of times (lower is better for split)")
    print(header)
    key = jax.random.key(0)
    for n in sizes:
        R = 1024 if n < 1024 else 64
        steps = int(max(4, min(2000, args.budget / (R * n * n))))
        work = R * n * steps
        t_s, ok_s = run_dysonbm(n, R, steps, "split", key)
        t_e, ok_e = run_dysonbm(n, R, steps, "euler", key)
        row = f"{n:>5} {R:>5} {steps:>6} | {work / t_s:>10.3g} {work / t_e:>10.3g}"
        ratios = f" | {t_s / t_e:>11.2f}"
        flags = f" | {'y' if ok_s else 'n'}/{'y' if ok_e else 'n'}"
        if have_diffrax:
            t_d, ok_d = run_diffrax(n, R, steps, key)
            row += f" {work / t_d:>10.3g}"
            ratios += f" {t_s / t_d:>13.2f}"
            flags += f"/{'y' if ok_d else 'n'}"
        print(row + ratios + flags, flush=True)
    print("ordered: all levels finite and strictly increasing after the run (y/n)")


if __name__ == "__main__":
    main()
