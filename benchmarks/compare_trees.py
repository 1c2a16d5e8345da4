"""The engine's replica-steps per second in two source trees, interleaved in one session: for a
refactor, the commit before against the commit after, under the same load.

    git worktree add --detach /tmp/before <rev>
    python benchmarks/compare_trees.py /tmp/before . --replicas 1024 --rounds 3

Each measurement is a fresh process that imports dysonbm from the tree named and times
`bench_engine.engine_rate` (the multilayer SGD workload, compilation excluded) on all cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

CODE = """
import sys
sys.path[:0] = [{tree!r}, {bench!r}]
import dysonbm, bench_engine
assert dysonbm.__file__.startswith({tree!r}), dysonbm.__file__
print(bench_engine.engine_rate({replicas}, {steps}, {devices}))
"""


def rate(tree: Path, replicas: int, steps: int, devices: int) -> float:
    code = CODE.format(tree=str(tree), bench=str(tree / "benchmarks"), replicas=replicas, steps=steps, devices=devices)
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs=2, type=Path, help="the tree before and the tree after")
    p.add_argument("--replicas", type=int, default=1024)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--devices", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args(argv)
    trees = [t.resolve() for t in args.trees]
    rates = {t: [] for t in trees}
    for r in range(args.rounds):
        for t in trees if r % 2 == 0 else trees[::-1]:  # alternate the order: drifting load hits both
            rates[t].append(rate(t, args.replicas, args.steps, args.devices))
            print(f"round {r}: {t}: {rates[t][-1]:,.0f} replica-steps/s", flush=True)
    before, after = (statistics.median(rates[t]) for t in trees)
    # the two runs of a round are neighbours in time: their ratio is the least disturbed by load
    ratios = [a / b for b, a in zip(rates[trees[0]], rates[trees[1]])]
    print(f"\nR = {args.replicas}, {args.devices} devices, median of {args.rounds}: before {before:,.0f}, "
          f"after {after:,.0f} replica-steps/s; after/before per round: "
          f"{', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
