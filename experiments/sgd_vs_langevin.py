"""SGD against its Langevin equation at the same temperature (SCIENCE.md §1–§3.1): the two teacher–
student levels of an SGD ensemble, and the β = 1 Dyson Brownian motion whose diffusion D is the
gradient noise measured at the SGD's own stationary weights.

The `ts_langevin` preset through `dbm.run`; `dbm.langevin_comparison.compare` measures D, integrates
the DBM and compares the mean spacings. Expected: ⟨S⟩_SGD/⟨S⟩_Langevin ≈ sqrt(2/(2 − α)).

    python experiments/sgd_vs_langevin.py          # α = 0.1, 0.4 at |B| = 16, 128 replicas (< 1 min)
    python experiments/sgd_vs_langevin.py --full   # the preset: 9 points, 1024 replicas, 4000 steps
"""

import argparse

import matplotlib.pyplot as plt
import numpy as np

import dysonbm as dbm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the published size")
    ap.add_argument("--out", default="sgd_vs_langevin.png", help="figure path")
    args = ap.parse_args(argv)
    small = {} if args.full else dict(replicas=128, steps=800, snapshot_every=40,
                                      sweep=[{"lr": [0.1, 0.4], "batch_size": [16]}])
    results = dbm.run("ts_langevin", **small)
    comparisons = dbm.langevin_comparison.compare(results, **({} if args.full else dict(replicas=400, snapshots=20)))
    for c in comparisons:
        print(f"α = {c.hp['lr']:g}, |B| = {c.hp['batch_size']}: D = {c.D:.4g} ± {c.D_err:.1g}, "
              f"⟨S⟩ SGD/Langevin = {c.ratio:.3f} ± {c.ratio_err:.3f} (expected {c.expected_ratio:.3f})")

    lr = np.array([c.hp["lr"] for c in comparisons])
    plt.errorbar(lr, [c.ratio for c in comparisons], [c.ratio_err for c in comparisons], fmt="o", label="measured")
    a = np.linspace(0, lr.max() * 1.1, 100)
    plt.plot(a, np.sqrt(2 / (2 - a)), "k--", label=r"$\sqrt{2/(2-\alpha)}$")
    plt.xlabel(r"$\alpha$"), plt.ylabel(r"$\langle S\rangle_{SGD} / \langle S\rangle_{Langevin}$"), plt.legend()
    plt.title("SGD vs Langevin")
    plt.savefig(args.out, dpi=110)
    return comparisons


if __name__ == "__main__":
    main()
