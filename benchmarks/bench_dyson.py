"""Throughput of the eigenvalue-SDE integrators, side by side with diffrax's Euler–Maruyama.

    python benchmarks/bench_dyson.py            # N = 16, 64, 256, 1024, then the equal-statistics run
    python benchmarks/bench_dyson.py --quick    # N = 16, 64 and a shorter equal-statistics run
    python benchmarks/bench_dyson.py --quick --clock cpu --repeat 3   # CPU seconds, fastest of 3

Workload: the β = 1 DBM with U = γλ²/2 (γ = D = 1), R replicas (1024; 64 at N = 1024) started
from the exact stationary Coulomb gas, vmapped over replicas on one device. Compared:
`dysonbm.sde`'s split scheme, its plain Euler–Maruyama, and (if importable) diffrax's Euler
on the same SDE. Everything is compiled and warmed up before the timed call.

1. Same step: level-steps/s = R·N·steps/seconds at the recommended dt, and the fraction of
   replicas whose levels end finite and strictly ordered ("ok").
2. Equal statistics (N = 64): the same physical time integrated by the split scheme at the
   recommended dt and by diffrax at 1, 1/4, 1/16, 1/64 of it. A run "has the statistics" when
   every replica ends finite and ordered and ⟨Σλ²⟩ (over the finite replicas) matches the
   exact N + βN(N−1)/2 within 3 standard errors. For β = 1, Euler–Maruyama crosses levels at a rate per unit time that
   does not fall with dt (a pair closer than ~sqrt(D·dt) is crossed with probability O(1),
   and the chance of such a gap is O(dt)), so no dt gives it the statistics; the table
   shows how its crossings and NaNs behave as dt falls, and what each run costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import sde as dy

BETA = D = GAMMA = 1.0


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCK["wall"]
_repeat = 1


def _timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile and warm up
    best = float("inf")
    for _ in range(_repeat):  # the fastest of the repeats: the least disturbed by other load
        t0 = _clock()
        out = jax.block_until_ready(fn(*args))
        best = min(best, _clock() - t0)
    return best, out


def _quality(y, n):
    """(fraction of replicas ending finite, fraction ending finite and strictly ordered,
    ⟨Σλ²⟩/exact − 1 over the finite replicas and its standard error). Σλ² does not depend on
    the labels, so the bias is meaningful even for crossed levels."""
    y = np.asarray(y, float)
    finite = np.all(np.isfinite(y), axis=-1)
    ordered = finite & np.all(np.diff(y, axis=-1) > 0, axis=-1)
    exact = D / GAMMA * (n + BETA * n * (n - 1) / 2)
    s2 = np.sum(y[finite] ** 2, axis=-1) / exact
    if s2.size < 2:
        return float(finite.mean()), float(ordered.mean()), float("nan"), float("nan")
    return float(finite.mean()), float(ordered.mean()), float(s2.mean() - 1), float(s2.std(ddof=1) / np.sqrt(s2.size))


def _start(n, R, key):
    keys = jax.random.split(key, R)
    y0 = jax.jit(jax.vmap(lambda k: dy.sample_hermite(k, n, BETA, (D / GAMMA) ** 0.5)))(keys)
    return keys, y0


def run_dysonbm(n, R, steps, dt, scheme, key):
    p = dy.DysonBM(n, start="given", initial_levels=(0.0,) * n, scheme=scheme)
    hp = {k: jnp.full((R,), v) for k, v in p.defaults().items()}
    hp["dt"] = jnp.full((R,), dt)
    keys, y0 = _start(n, R, key)
    count = jnp.zeros((R,), jnp.int32)

    @jax.jit
    def advance(y):
        def body(i, s):
            ks = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
            return jax.vmap(p.step)(s, ks, hp)

        return jax.lax.fori_loop(0, steps, body, dy.LevelState(y, count, count, count)).y

    return _timed(advance, y0)


def run_diffrax(n, R, steps, dt, key):
    import diffrax
    import lineax

    eye = jnp.eye(n, dtype=bool)

    def drift(t, y, args):
        d = y[:, None] - y[None, :]
        return -GAMMA * y + BETA * D * jnp.sum(jnp.where(eye, 0.0, 1.0 / jnp.where(eye, 1.0, d)), axis=1)

    def diffusion(t, y, args):
        return lineax.DiagonalLinearOperator(jnp.full((n,), (2.0 * D) ** 0.5, y.dtype))

    keys, y0 = _start(n, R, key)

    def one(y0, k):
        bm = diffrax.UnsafeBrownianPath(shape=(n,), key=k)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), t0=0.0, t1=steps * dt, dt0=dt, y0=y0,
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps + 1,
                                  adjoint=diffrax.DirectAdjoint())
        return sol.ys[-1]

    return _timed(jax.jit(jax.vmap(one)), y0, keys)


def same_step(sizes, budget, have_diffrax, key):
    print("\n1. Same step (recommended dt): level-steps per second; 'ok' = fraction of replicas ending finite and ordered")
    cols = ["split", "euler"] + (["diffrax"] if have_diffrax else [])
    print(f"{'N':>5} {'R':>5} {'steps':>6} | " + " ".join(f"{c:>10}" for c in cols)
          + " | " + " ".join(f"{c + ' ok':>10}" for c in cols) + " | split time / other")
    ratios = []
    for n in sizes:
        R = 1024 if n < 1024 else 64
        steps = int(max(10, min(2000, budget / (R * n * n))))
        dt = dy.recommended_dt(n, D, GAMMA, BETA)
        times, oks = [], []
        for c in cols:
            t, y = run_diffrax(n, R, steps, dt, key) if c == "diffrax" else run_dysonbm(n, R, steps, dt, c, key)
            times.append(t)
            oks.append(_quality(y, n)[1])
        work = R * n * steps
        print(f"{n:>5} {R:>5} {steps:>6} | " + " ".join(f"{work / t:>10.3g}" for t in times)
              + " | " + " ".join(f"{o:>10.3f}" for o in oks)
              + " | " + " ".join(f"{times[0] / t:.1f}×{c}" for t, c in zip(times[1:], cols[1:])), flush=True)
        ratios.append(f"N = {n}: {times[0] / times[1]:.2f}")
    print("split time ÷ Euler time per step: " + ", ".join(ratios), flush=True)


def equal_statistics(t_run, have_diffrax, key, n=64, R=1024):
    dt0 = dy.recommended_dt(n, D, GAMMA, BETA)
    print(f"\n2. Equal statistics: N = {n}, R = {R}, physical time {t_run:g} (recommended dt = {dt0:.3g})")
    print(f"{'integrator':>10} {'dt':>9} {'steps':>6} {'seconds':>8} | {'finite':>6} {'ordered':>7} {'<Σλ²> bias (finite)':>19} {'stats?':>6}")
    rows = [("split", 1)] + ([("diffrax", f) for f in (1, 4, 16, 64)] if have_diffrax else [("euler", f) for f in (1, 4, 16, 64)])
    split_time = None
    for name, frac in rows:
        dt = dt0 / frac
        steps = int(round(t_run / dt))
        if name == "diffrax":
            t, y = run_diffrax(n, R, steps, dt, key)
        else:
            t, y = run_dysonbm(n, R, steps, dt, name, key)
        finite, ordered, bias, err = _quality(y, n)
        has = ordered == 1.0 and abs(bias) <= 3 * err
        split_time = t if name == "split" else split_time
        print(f"{name:>10} {dt:>9.3g} {steps:>6} {t:>8.2f} | {finite:>6.3f} {ordered:>7.3f} {bias:>+11.4f}±{err:.4f} {'yes' if has else 'no':>6}"
              + ("" if name == "split" else f"   (split time / this: {split_time / t:.2f})"), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 16, 64 only and a shorter equal-statistics run")
    ap.add_argument("--budget", type=float, default=3e8, help="pair interactions per timed run in part 1 (sets steps)")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                    help="wall (perf_counter) or cpu (process_time: this process's CPU seconds, steadier on a loaded machine)")
    ap.add_argument("--repeat", type=int, default=1, help="timed calls per run; the fastest counts")
    args = ap.parse_args(argv)
    global _clock, _repeat
    _clock, _repeat = CLOCK[args.clock], max(1, args.repeat)
    have_diffrax = importlib.util.find_spec("diffrax") is not None
    if not have_diffrax:
        print("diffrax not installed: its columns are skipped (pip install -e '.[bench]')")
    print(f"eigenvalue SDEs: jax {jax.__version__} on {jax.devices()[0].platform}, one device, {args.clock} clock")
    key = jax.random.key(0)
    same_step([16, 64] if args.quick else [16, 64, 256, 1024], args.budget, have_diffrax, key)
    equal_statistics(0.25 if args.quick else 1.0, have_diffrax, key)


if __name__ == "__main__":
    main()
