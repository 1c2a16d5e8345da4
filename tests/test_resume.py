"""Checkpoints: a run killed mid-sweep resumes to results bit-identical to an uninterrupted run;
a checkpoint of another config, or a corrupt one, is refused (one line, exit 2)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dysonbm import cli, io

from conftest import ROOT

N = 24
CFG = f"""
name = "resume"
seed = 4
replicas = 4
steps = 3000
snapshot_every = 150
[model]
name = "teacher_student"
n = {N}
teacher_eigs = {[2.0] * N}
[train]
lr = 0.05
batch_size = 8
[data]
protocol = "online"
[record]
spectra = false
weights = true
[run]
chunk_size = 4
[[sweep]]
lr = [0.05, 0.1]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax-cache")
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "PYTHONPATH": str(ROOT)}


def dbm_args(*args):
    return [sys.executable, "-m", "dysonbm.cli", *map(str, args)]


def dbm(env, *args):
    return subprocess.run(dbm_args(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def wait_for(path, proc, timeout=90.0):
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.01)


def position(out) -> dict:
    try:
        with np.load(out / "checkpoint" / "position.npz") as f:
            return json.loads(str(f["meta"]))
    except (OSError, ValueError):
        return {"segments": 0}


def test_killed_run_resumes_bitwise(env, tmp_path, write_config, capsys):
    cfg = write_config(CFG)
    out = tmp_path / "killed"
    proc = subprocess.Popen(dbm_args("run", cfg, "--out", out, "--quiet"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(out / "checkpoint" / "chunk-00000.npz", proc)  # chunk 0 done
        while (position(out).get("chunk"), position(out)["segments"] >= 2) != (1, True):  # chunk 1 under way
            assert proc.poll() is None, "the run ended before it was killed"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it was killed"
    assert position(out)["chunk"] == 1

    # another config is refused, and the checkpoint is left as it was
    assert cli.main(["run", str(cfg), "--out", str(out), "--resume", "--set", "seed=5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another config" in err, err
    # without --resume or --overwrite an interrupted run is not touched either
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2

    res = dbm(env, "run", cfg, "--out", out, "--resume", "--quiet")
    assert res.returncode == 0, res.stderr
    assert not (out / "checkpoint").exists()
    # --resume on a directory that does not exist runs from scratch
    res = dbm(env, "run", cfg, "--out", tmp_path / "whole", "--resume", "--quiet")
    assert res.returncode == 0, res.stderr
    a, b = io.load(out), io.load(tmp_path / "whole")
    assert a.names() == b.names()
    for name in a.names():
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    drop = lambda m: {k: v for k, v in m.items() if k not in ("wall_time_s", "created")}  # noqa: E731
    assert drop(a.manifest) == drop(b.manifest)
    # complete results: --resume says so and runs nothing
    capsys.readouterr()
    assert cli.main(["run", str(cfg), "--out", str(out), "--resume", "--quiet"]) == 0
    assert "complete" in capsys.readouterr().out


def test_corrupt_checkpoint_is_refused(tmp_path, write_config, capsys):
    small = CFG.replace("steps = 3000", "steps = 300")
    cfg = write_config(small)
    out = tmp_path / "r"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "position.npz").write_bytes(b"not a zip file")
    assert cli.main(["run", str(cfg), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreadable" in err, err
    assert not (out / "manifest.json").exists()
