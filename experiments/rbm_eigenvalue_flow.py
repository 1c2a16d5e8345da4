"""The levels σ_h²ξ² of a Gaussian RBM trained by SGD flow to their fixed points μ² − κ, one per
mode of the free-field target, and fluctuate around them (SCIENCE.md §3.2).

The `rbm_quick` preset at one (α, |B|) through `dbm.run`; `dbm.scaling.spectrum` gives the levels
in target-mode order and their fixed points.

    python experiments/rbm_eigenvalue_flow.py          # 8 replicas, 800 updates (< 1 min)
    python experiments/rbm_eigenvalue_flow.py --full   # 128 replicas, 2500 updates
"""

import argparse

import matplotlib.pyplot as plt
import numpy as np

import dysonbm as dbm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the published size")
    ap.add_argument("--out", default="rbm_eigenvalue_flow.png", help="figure path")
    args = ap.parse_args(argv)
    size = dict(replicas=128, steps=2500, snapshot_every=125) if args.full else dict(replicas=8, steps=800,
                                                                                      snapshot_every=40)
    results = dbm.run("rbm_quick", sweep=[], train__lr=0.2, **size)  # one point: α = 0.2, |B| = 16
    spec = dbm.scaling.spectrum(results)
    levels = np.asarray(spec.levels[0])[~np.asarray(results.diverged[0], bool)]  # (replica, snapshot, level)
    mean = levels.mean(axis=0)
    distance = np.abs(mean - spec.targets[0]).mean(axis=-1)  # mean |level − fixed point| per snapshot
    print(f"{levels.shape[0]} replicas: mean distance of a level to its fixed point μ² − κ "
          f"{distance[0]:.3f} at step 0, {distance[-1]:.3f} after {results.steps[-1]} updates")

    plt.plot(results.steps, mean, "C0", lw=1)
    for t in np.unique(spec.targets[0]):
        plt.axhline(t, color="k", ls="--", lw=0.7)
    plt.xlabel("SGD step"), plt.ylabel(r"$\sigma_h^2\xi^2$ (replica mean)"), plt.title("Gaussian RBM: level flow")
    plt.savefig(args.out, dpi=110)
    return distance


if __name__ == "__main__":
    main()
