"""The SGD phase diagram of a two-layer teacher–student network (SCIENCE.md §3.3): ordered,
paramagnetic and glassy phases over the temperature T = α/|B| and the initial width σ_W.

The `phase_quick` preset on a coarser grid through `dbm.run`; `dbm.phases.assemble` labels every
replica from its test loss, eigenvalues and overlap, and each grid point takes the majority.

    python experiments/phase_map.py          # 3 × 3 points, 4 replicas, 4000 steps (< 1 min)
    python experiments/phase_map.py --full   # the preset: 6 × 5 points, 12 replicas, 40 000 steps
"""

import argparse

import matplotlib.pyplot as plt
import numpy as np

import dysonbm as dbm

COLORS = {"ordered": "C0", "paramagnetic": "C1", "glassy": "C2", "divergent": "0.3", "unresolved": "0.8"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the published size")
    ap.add_argument("--out", default="phase_map.png", help="figure path")
    args = ap.parse_args(argv)
    small = {} if args.full else dict(replicas=4, steps=4000, snapshot_every=400, sweep__lr=[0.5, 8.0, 128.0],
                                      sweep__init_std=[0.25, 4.0, 64.0])
    results = dbm.run("phase_quick", **small)
    summary = dbm.phases.assemble(results)
    for lr, bs, width, label in zip(summary["lr"], summary["batch_size"], summary["init_std"], summary["majority"]):
        print(f"T = {dbm.temperature(lr, bs):8.4g}  σ_W = {width:6.3g}  {label}")

    for label, color in COLORS.items():
        at = np.asarray(summary["majority"]) == label
        plt.scatter(1 / summary["init_std"][at], summary["T"][at], c=color, s=120, marker="s", label=label)
    plt.xscale("log"), plt.yscale("log"), plt.xlabel(r"$1/\sigma_W$"), plt.ylabel(r"$T = \alpha/|B|$")
    plt.legend(fontsize=8), plt.title("SGD phase map (majority label per point)")
    plt.savefig(args.out, dpi=110)
    return summary["majority"]


if __name__ == "__main__":
    main()
