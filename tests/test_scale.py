"""Scaling out: device count, memory estimate and automatic chunks, shards, many processes.

Runs that need their own device count or process go through subprocesses sharing one
persistent compilation cache, so each program compiles once for the whole module.
"""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from dysonbm import config, io, runner

from conftest import ROOT

CFG = """
name = "scale"
seed = 2
replicas = 4
steps = 40
snapshot_every = 10
[model]
name = "teacher_student"
noise = 0.1
[train]
lr = 0.1
batch_size = 4
[data]
protocol = "online"
[record]
spectra = {spectra}
weights = true
[run]
chunk_size = {chunk}
[[sweep]]
lr = [0.1, 0.2, 0.3]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax-cache")
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    """One single-process run of the config the shard, merge and process tests split up."""
    folder = tmp_path_factory.mktemp("reference")
    cfg = folder / "cfg.toml"
    cfg.write_text(CFG.format(spectra="false", chunk=4))
    res = dbm(env, "run", cfg, "--out", folder / "full", "--quiet")
    assert res.returncode == 0, res.stderr
    return cfg, folder / "full"


def dbm(env, *args, **kw):
    return subprocess.run([sys.executable, "-m", "dysonbm.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, **kw)


def assert_same(a: io.Results, b: io.Results, ignore=("wall_time_s", "compile_s", "compiles_cached", "created", "merged_from",
                                                   "axes")):
    assert a.names() == b.names()
    for name in a.names():
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert a.axes[name] == b.axes[name]
    drop = lambda m: {k: v for k, v in m.items() if k not in ignore}  # noqa: E731
    assert drop(a.manifest) == drop(b.manifest)


def test_four_devices_bitwise_equal_to_one(env):
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from dysonbm import config, runner
        assert len(jax.devices()) == 4
        cfg = config.from_dict(config.tomllib.loads({CFG.format(spectra="true", chunk=0)!r}))
        one = runner.run(cfg, progress=False, devices=1)
        four = runner.run(cfg, progress=False, devices=4)
        for name in one.names():
            np.testing.assert_array_equal(one[name], four[name], err_msg=name)
        print("ok", one.manifest["device"], four.manifest["device"])
    """)
    env4 = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env4, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ok 1 x cpu" in res.stdout and "4 x cpu" in res.stdout


def test_memory_estimate_matches_arrays(reference):
    cfg_path, full = reference
    plan = runner.Plan(config.load(cfg_path), devices=2)
    stored = io.load(full)
    expected = plan.footprint["results"] * plan.total + plan.footprint["problems"]
    assert plan.footprint["problems"] > 0
    assert sum(a.nbytes for a in stored.arrays.values()) == expected
    on_disk = sum(np.load(p, mmap_mode="r").nbytes for p in (full / "arrays").glob("*.npy"))
    assert on_disk == expected
    # the state, data and snapshot parts of the device estimate are the program's own arrays
    _, keys, hp = plan.chunk_inputs(0)
    state, data, obs0 = jax.eval_shape(plan.init, keys, hp)
    parts = plan.footprint["parts"]
    assert runner.plan._nbytes(state) == parts["state"] * plan.slots
    assert runner.plan._nbytes(data) == parts["data"] * plan.slots
    assert runner.plan._nbytes(obs0) * (plan.seg + 1) == parts["snapshots (segment)"] * plan.slots


def test_automatic_chunks_follow_the_budget():
    cfg = config.from_dict(config.tomllib.loads(CFG.format(spectra="false", chunk=0)))
    roomy = runner.Plan(cfg, devices=2)
    assert roomy.auto_chunk and roomy.n_chunks == 1
    per = roomy.footprint["device"]
    tight = runner.Plan(cfg, devices=2, memory_budget=5 * per)  # room for 5 replicas: 2 per device
    assert (tight.chunk, tight.n_chunks, tight.slots) == (4, 3, 4)
    assert tight.chunk * per <= tight.budget


def test_chunks_hold_points_of_one_batch_size():
    from dysonbm.runner.plan import chunk_ranges

    # points of |B| 4, 4, 16, 4 with 5 replicas each, chunks of at most 4
    assert chunk_ranges([4, 4, 16, 4], 5, 0, 20, 4) == [(0, 4), (4, 8), (8, 10), (10, 14), (14, 15), (15, 19), (19, 20)]
    # a shard's range starts mid-point; one chunk per run of equal batch sizes when they fit
    assert chunk_ranges([4, 4, 16, 4], 5, 3, 17, 100) == [(3, 10), (10, 15), (15, 17)]


def test_dry_run_estimates_each_batch_size_from_its_own_calibration(monkeypatch):
    cfg = config.from_dict(config.apply_overrides(config.tomllib.loads(CFG.format(spectra="false", chunk=4)),
                                                  {"sweep": [{"lr": [0.1], "batch_size": [4, 16]}]}))
    plan = runner.Plan(cfg, devices=1)
    seen = []

    def fake(plan, steps=300, chunk=0):
        batch = plan.chunk_padding(chunk).batch
        seen.append(batch)
        return {"compile_s": 1.0, "init_s": 0.0, "call_s": 0.5, "per_chunk_step_s": batch * 1e-3, "snapshot_s": 0.0,
                "steps": 4}

    monkeypatch.setattr(runner.dryrun, "calibrate", fake)
    est = runner.estimate(plan)
    assert seen == [4, 16]
    calls = 0.5 * plan.n_segments  # each segment of a chunk is one call of its program
    assert plan.n_segments > 1
    assert est["parts"] == [(4, pytest.approx(calls + 4 * 1e-3 * 40), 1), (16, pytest.approx(calls + 16 * 1e-3 * 40), 1)]
    assert est["total_s"] == pytest.approx(2.0 + 2 * calls + 20 * 1e-3 * 40)
    text = runner.dry_run(plan)
    assert "per chunk x 1 at |B| = 4" in text and "per chunk x 1 at |B| = 16" in text, text


def test_dry_run_reports_and_writes_nothing(env, reference, tmp_path):
    out = tmp_path / "never"
    res = dbm(env, "run", reference[0], "--out", out, "--dry-run")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    for needle in ("3 grid points x 4 replicas = 12 replicas", "replica-steps 480", "memory per replica",
                   "chunks: 3 x 4 replicas", "estimated wall time"):
        assert needle in text, text
    assert not out.exists()


def test_shards_merge_into_the_single_run(env, reference, tmp_path):
    cfg, full = reference
    for i, n in ((0, 2), (1, 2), (1, 5)):
        res = dbm(env, "run", cfg, "--out", tmp_path / f"{i}-{n}", "--quiet", "--shard", f"{i}/{n}")
        assert res.returncode == 0, res.stderr
    p1 = io.load(tmp_path / "1-2")
    assert p1.manifest["shard"] == {"index": 1, "count": 2, "replica_ids": [4, 12]}  # whole grid points
    assert io.load(tmp_path / "1-5").manifest["shard"]["replica_ids"] == [2, 4]  # 5 shards > 3 points
    res = dbm(env, "merge", tmp_path / "1-2", tmp_path / "0-2", "--out", tmp_path / "merged")
    assert res.returncode == 0, res.stderr
    assert_same(io.load(full), io.load(tmp_path / "merged"))
    # a shard of another config: same arrays, another seed in its manifest
    other = io.load(tmp_path / "0-2")
    other.manifest["config"]["seed"] = 5
    io.save(other, tmp_path / "other")
    cases = [(["0-2", "1-5", "1-2"], "overlap"), (["1-2"], "missing"), (["1-5", "1-2"], "missing"),
             (["other", "1-2"], "different config"), (["merged", "1-2"], "not a shard")]
    for dirs, message in cases:
        res = dbm(env, "merge", *(tmp_path / d for d in dirs), "--out", tmp_path / "bad")
        assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1, (dirs, res.stderr)
        assert not (tmp_path / "bad").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_merge_into_the_single_run(env, reference, tmp_path):
    cfg, full = reference
    coord = f"127.0.0.1:{free_port()}"
    out = tmp_path / "job"
    procs = [subprocess.Popen([sys.executable, "-m", "dysonbm.cli", "run", str(cfg), "--out", str(out), "--quiet",
                               "--coordinator", coord, "--num-processes", "2", "--process-id", str(i)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    merged = io.load(out)
    assert [m["shard"]["replica_ids"] for m in merged.manifest["merged_from"]] == [[0, 4], [4, 12]]
    assert_same(io.load(full), merged)
