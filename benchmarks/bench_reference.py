"""`dbm run` against the published loops in plain numpy, whole processes, side by side.

For every model, the reference (`reference_loops.py`, one replica and one step at a time, as
the published generators are written) runs as one process per core, and `dbm run` runs the
same protocol at one grid point as one process over all cores; both are timed whole, start-up
and compilation included, as a user sees them. The table gives replica-steps/s and the ratio.

`dbm run` runs twice: first on an empty compilation cache, then again, when it loads its
programs from the cache (`dysonbm.compile_cache`), as every later run of the same shapes does.
"bound" is the largest ratio any run could show on this workload: the reference's time over
the start-up alone (a process that imports dysonbm and starts JAX's devices), timed here too.

    python benchmarks/bench_reference.py             # every model
    python benchmarks/bench_reference.py --models rbm --scale 0.25
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent

#: the published teacher–student model (SCIENCE.md §3.1), both data protocols
TEACHER_STUDENT = """
name = "bench_ts"
[model]
name = "teacher_student"
n = 2
teacher_eigs = [2.0, 2.0]
noise = 0.1
[train]
lr = 0.1
batch_size = 16
init_std = 0.1
"""

#: model: (dbm config, dbm replicas × steps, reference replicas × steps per process)
WORKLOADS = {
    "multilayer": ("""
name = "bench_multilayer"
[model]
name = "multilayer"
d_in = 3
hidden = 32
features = 16
activation = "tanh"
[train]
lr = 0.5
batch_size = 4
init_std = 1.0
[data]
protocol = "fixed"
batches_per_epoch = 1000
n_test = 128
""", (2048, 20000), (2, 20000)),
    "ts": (TEACHER_STUDENT + """
[data]
protocol = "fixed"
batches_per_epoch = 500
reshuffle = false
[ensemble]
problem = "run"
inputs = "point"
noise = "replica"
test = "run"
""", (4096, 5000), (4, 5000)),
    "ts_online": (TEACHER_STUDENT + """
[data]
protocol = "online"
""", (4096, 5000), (4, 5000)),
    "rbm": ("""
name = "bench_rbm"
[model]
name = "gaussian_rbm"
n_visible = 10
n_hidden = 10
mu2 = 9.0
m2 = 4.0
sigma_h = 1.0
eta = 0.0
gibbs_steps = 3
data_term = "exact"
[train]
lr = 0.1
batch_size = 16
init_std = 0.1
""", (2048, 2000), (4, 2000)),
}


def timed(cmds: list[list[str]], env: dict | None = None) -> float:
    """Wall seconds of ``cmds`` run concurrently, from the first start to the last exit."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for c in cmds]
    for p, c in zip(procs, cmds):
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{' '.join(c)} failed:\n{err.decode()[-2000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--scale", type=float, default=1.0, help="multiply every workload's steps")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    dbm = str(pathlib.Path(sys.executable).with_name("dbm"))
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
        startup = min(timed([[sys.executable, "-c", "import dysonbm, jax; jax.devices()"]], env) for _ in range(3))
        print(f"{cores} cores; whole processes, start-up and compilation included; start-up alone {startup:.2f} s")
        print(f"{'':<11} {'reference':>11} {'dbm run, first':>31} {'dbm run, again (cached)':>31}")
        print(f"{'model':<11} {'%d proc.' % cores:>11} " + f"{'rate':>10} {'ratio':>6} {'wall s':>6} {'compile':>7}" * 2
              + f" {'bound':>6}")
        for name in args.models:
            toml, (r, steps), (r_ref, steps_ref) = WORKLOADS[name]
            steps, steps_ref = max(1, int(steps * args.scale)), max(1, int(steps_ref * args.scale))
            cfg = pathlib.Path(tmp, f"{name}.toml")
            cfg.write_text(f"seed = 0\nreplicas = {r}\nsteps = {steps}\nsnapshot_every = {steps}\n{toml}")
            ref = [[sys.executable, str(HERE / "reference_loops.py"), name, str(r_ref), str(steps_ref), str(i)]
                   for i in range(cores)]
            ref_rate = cores * r_ref * steps_ref / timed(ref)
            cells = []
            env["DBM_COMPILE_CACHE"] = str(pathlib.Path(tmp, f"{name}-cache"))  # empty at the first run
            for attempt in ("first", "again"):
                out = pathlib.Path(tmp, f"{name}-{attempt}")
                wall = timed([[dbm, "run", str(cfg), "--out", str(out)]], env)
                compile_s = json.loads((out / "manifest.json").read_text())["compile_s"]  # reported apart by the run
                rate = r * steps / wall
                cells.append(f"{rate:>10.3g} {rate / ref_rate:>5.0f}× {wall:>6.1f} {compile_s:>6.1f}s")
            bound = r * steps / ref_rate / startup
            print(f"{name:<11} {ref_rate:>11.3g} {' '.join(cells)} {bound:>5.0f}×", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
