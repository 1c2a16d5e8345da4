"""The linear scaling rule: the mean spacing ⟨S⟩ of the two teacher–student levels is a function of
T = α/|B| alone, and collapses onto the predicted scale with slope 1 (SCIENCE.md §3.1).

The `ts_linear_scaling` preset (sweeps over α, |B| and the label noise A) run through `dbm.run`,
analysed by `dbm.scaling.analyse`: ⟨S⟩ at every grid point against the predicted scale.

    python experiments/linear_scaling_collapse.py          # fresh data, 128 replicas, 400 steps (< 1 min)
    python experiments/linear_scaling_collapse.py --full   # the published protocol: 3000 replicas, 5000 steps
"""

import argparse

import matplotlib.pyplot as plt

import dysonbm as dbm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the published size")
    ap.add_argument("--out", default="linear_scaling_collapse.png", help="figure path")
    args = ap.parse_args(argv)
    small = {} if args.full else dict(replicas=128, steps=400, snapshot_every=20, data={"protocol": "online"},
                                      ensemble__inputs="replica")
    results = dbm.run("ts_linear_scaling", **small)
    analysis = dbm.scaling.analyse(results)
    fit = analysis.fits["mean_s"]
    print(f"{len(analysis.stats)} points: ⟨S⟩ = b·x with b = {fit.slope:.4f} ± {fit.slope_err:.4f} "
          f"(theory {fit.theory}), χ²/dof = {fit.chi2_dof:.2f}")

    plt.errorbar(fit.x, fit.y, fit.yerr, fmt="o", ms=4, label="SGD, one point per (α, |B|, A)")
    plt.plot([0, fit.x.max()], [0, fit.x.max()], "k--", label="slope 1")
    plt.xlabel("predicted scale x"), plt.ylabel("⟨S⟩"), plt.legend(), plt.title("linear scaling collapse")
    plt.savefig(args.out, dpi=110)
    return fit


if __name__ == "__main__":
    main()
