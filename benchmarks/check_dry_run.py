"""How right `dbm run --dry-run` is: its estimate for a preset at reduced size, then the run.

    python benchmarks/check_dry_run.py rbm_linear_scaling replicas=128 steps=1000 snapshot_every=50
    python benchmarks/check_dry_run.py multilayer_paper replicas=2 steps=4000 snapshot_every=200

The estimate is the dry run's (`runner.estimate`: per padding, a chunk's init, its program
calls, steps and snapshots timed apart, times its chunks, plus the calibrations' compile); the measurement is `runner.run`
of the same plan, compile included, in the same process.
"""

from __future__ import annotations

import os
import sys
import time
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    cores = len(os.sched_getaffinity(0))
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={cores}"

from dysonbm import config, presets, runner  # noqa: E402


def main(argv: list[str]) -> int:
    name, overrides = argv[0], config.parse_set_args(argv[1:])
    cfg = config.load(presets.path(name), overrides)
    plan = runner.Plan(cfg)
    est = runner.estimate(plan)
    estimate = est["total_s"]
    t0 = time.perf_counter()
    runner.run(cfg, progress=False)
    measured = time.perf_counter() - t0
    print(f"{name} {' '.join(argv[1:])}: {plan.n_chunks} chunks, estimated {estimate:.1f} s "
          f"(compile {est['compile_s']:.1f} s), measured {measured:.1f} s, ratio {measured / estimate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
