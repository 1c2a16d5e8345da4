"""Checkpoints: a run killed mid-sweep resumes to results bit-identical to an uninterrupted run;
a checkpoint of another config, or a corrupt one, is refused (one line, exit 2)."""

import gc
import json
import os
import shlex
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
lr = [0.05]
batch_size = [8, 4]  # chunk 1 is padded to |B| = 4, chunk 0 to 8: a resume across paddings
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
    drop = lambda m: {k: v for k, v in m.items() if k not in ("wall_time_s", "compile_s", "compiles", "compiles_cached", "created")}  # noqa: E731
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


def test_checkpoint_write_interrupted_mid_array_leaves_the_old_file_and_prints_nothing(tmp_path, monkeypatch):
    """A signal can land while numpy is zipping; older numpy then leaves its ZipFile open, and
    one left on a closed file prints a traceback when collected (the signalled run's one line)."""
    from numpy.lib import format as npy_format
    from dysonbm.runner.checkpoint import _write_npz

    path = tmp_path / "position.npz"
    _write_npz(path, {"a": np.arange(3)})
    written = []

    def write_array(fid, array, **kw):
        written.append(array.shape)
        if len(written) == 2:
            raise KeyboardInterrupt
        return real(fid, array, **kw)

    real = npy_format.write_array
    monkeypatch.setattr(npy_format, "write_array", write_array)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(KeyboardInterrupt):
        _write_npz(path, {"a": np.arange(5), "b": np.ones(2)})
    gc.collect()
    assert len(written) == 2 and unraisable == [], unraisable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["position.npz"]
    with np.load(path) as f:
        assert f["a"].tolist() == [0, 1, 2]


@pytest.fixture(scope="module")
def uninterrupted(env, tmp_path_factory):
    """The results of CFG run without a stop, to compare resumed runs with."""
    where = tmp_path_factory.mktemp("whole")
    (where / "cfg.toml").write_text(CFG)
    res = dbm(env, "run", where / "cfg.toml", "--out", where / "out", "--quiet")
    assert res.returncode == 0, res.stderr
    return io.load(where / "out")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signalled_run_stops_cleanly_and_resumes_bitwise(sig, env, tmp_path, write_config, uninterrupted):
    cfg = write_config(CFG)
    out = tmp_path / "stopped"
    proc = subprocess.Popen(dbm_args("run", cfg, "--out", out, "--quiet"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out / "checkpoint" / "chunk-00000.npz", proc)
        while (position(out).get("chunk"), position(out)["segments"] >= 2) != (1, True):  # chunk 1 under way
            assert proc.poll() is None, "the run ended before it was signalled"
            time.sleep(0.01)
        proc.send_signal(sig)
        signalled = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # stopped within a segment (a segment of this run takes well under a second), not at the end
    assert time.monotonic() - signalled < 20
    assert proc.returncode == 128 + sig, err
    assert not (out / "manifest.json").exists(), "the run finished before it was signalled"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0] and "resume with: " in lines[0], err
    # a valid checkpoint of chunk 1, and nothing else: no temporary file, no half-written save
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.name != "cfg.toml")
    assert left[:3] == ["stopped", "stopped/checkpoint", "stopped/checkpoint/chunk-00000.npz"], left
    assert left[3:] == ["stopped/checkpoint/position.npz"], left
    meta = position(out)
    assert meta["chunk"] == 1 and 2 <= meta["segments"] < 20, meta

    # the printed command, run as printed, continues to the numbers of an uninterrupted run
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[0] == "dbm" and "--resume" in command and str(out) in command, command
    res = subprocess.run([sys.executable, "-m", "dysonbm.cli", *command[1:]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert not (out / "checkpoint").exists()
    a = io.load(out)
    assert a.names() == uninterrupted.names()
    for name in a.names():
        np.testing.assert_array_equal(a[name], uninterrupted[name], err_msg=name)


def test_resume_of_complete_results_refuses_another_config(env, tmp_path, write_config, capsys, uninterrupted):
    out = uninterrupted.path
    cfg = write_config(CFG)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert cli.main(["run", str(cfg), "--out", str(out), "--resume", "--set", "train.lr=0.07", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another config" in err[0] and "0.07" in err[0], err
    # [run] settings that change no number are not a different config
    assert cli.main(["run", str(cfg), "--out", str(out), "--resume", "--set", "run.chunk_size=2", "--quiet"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
