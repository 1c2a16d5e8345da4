"""The β-Dyson Brownian motion relaxes to Wigner's semicircle (SCIENCE.md §2).

N levels in U = γλ²/2 from the degenerate start λ = 0, integrated with the split scheme for
t = 5/γ; the pooled levels are compared with the semicircle of radius sqrt(2βND/γ).

    python experiments/dbm_semicircle.py            # N = 32, 64 replicas (seconds)
    python experiments/dbm_semicircle.py --full     # N = 256, 400 replicas
"""

import argparse

import jax
import matplotlib.pyplot as plt
import numpy as np

import dysonbm as dbm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the published size")
    ap.add_argument("--out", default="dbm_semicircle.png", help="figure path")
    args = ap.parse_args(argv)
    n, replicas, beta = (256, 400, 2.0) if args.full else (32, 64, 2.0)
    p = dbm.DysonBM(n=n, start="zero")
    dt = dbm.sde.recommended_dt(n, beta=beta)
    steps = int(5.0 / dt)
    out = dbm.simulate(p.init, p.step, p.observe, key=jax.random.key(0), hp={**p.defaults(), "beta": beta, "dt": dt},
                       replicas=replicas, steps=steps)
    levels = np.asarray(out.observed["levels"][:, -1]).ravel()
    radius = dbm.rmt.semicircle_radius(n, 1.0, 1.0, beta)
    ks, pvalue = dbm.rmt.ks_test(levels / radius, dbm.rmt.semicircle_cdf, 1.0)
    print(f"N = {n}, β = {beta}, {replicas} replicas, t = {steps * dt:.2f}: KS distance to the semicircle {ks:.4f}")

    x = np.linspace(-1.1, 1.1, 400) * radius
    plt.hist(levels, bins=80, density=True, alpha=0.6, label="levels")
    plt.plot(x, dbm.rmt.semicircle_pdf(x, radius), "k", label=f"semicircle, R = {radius:.1f}")
    plt.xlabel("λ"), plt.legend(), plt.title(f"β-DBM, N = {n}, β = {beta:g}")
    plt.savefig(args.out, dpi=110)
    return ks


if __name__ == "__main__":
    main()
