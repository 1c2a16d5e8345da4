"""The `dbm` command's persistent compilation cache: a rerun loads its programs from disk and
gives the same numbers bit for bit; a cache that cannot be used costs the run nothing."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from dysonbm import compile_cache, io
from tests.conftest import GOOD


def dbm(args, cache, tmp_path):
    """`dbm ARGS` in a fresh process (the cache is a process-wide JAX setting) with
    DBM_COMPILE_CACHE = ``cache`` and no JAX cache settings of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env.update(DBM_COMPILE_CACHE=str(cache), HOME=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "dysonbm.cli", *args], env=env, capture_output=True, text=True)


def test_the_cache_location_follows_the_environment(tmp_path):
    assert compile_cache.location({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "dysonbm" / "xla"
    assert compile_cache.location({"DBM_COMPILE_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    for off in ("off", "OFF", "0", "", " none "):
        assert compile_cache.location({"DBM_COMPILE_CACHE": off}) is None


def test_a_rerun_loads_its_programs_from_the_cache_and_gives_the_same_numbers(write_config, tmp_path):
    cfg, cache = write_config(GOOD), tmp_path / "cache"
    runs = {}
    for name, where in (("cold", cache), ("warm", cache), ("off", "off")):
        done = dbm(["run", str(cfg), "--out", str(tmp_path / name), "--quiet"], where, tmp_path)
        assert done.returncode == 0, done.stderr
        runs[name] = io.load(tmp_path / name)
    compiles = runs["cold"].manifest["compiles"]
    assert compiles >= 2  # the initialisation and the chunk program
    assert runs["cold"].manifest["compiles_cached"] == 0
    assert runs["warm"].manifest["compiles_cached"] == compiles
    assert runs["off"].manifest["compiles_cached"] == 0
    assert "from the cache" in dbm(["show", str(tmp_path / "warm")], "off", tmp_path).stdout
    assert len(list(cache.glob("*-cache"))) >= compiles
    for name in runs["cold"].names():
        for other in ("warm", "off"):
            np.testing.assert_array_equal(runs[other][name], runs["cold"][name], err_msg=f"{name}, {other}")
    info = dbm(["info"], cache, tmp_path)
    assert info.returncode == 0 and f"compilation cache: {cache} (" in info.stdout
    assert "compilation cache: off" in dbm(["info"], "off", tmp_path).stdout
    # a command that compiles nothing, or is refused, leaves no cache folder behind
    unused = tmp_path / "unused" / "xla"
    assert dbm(["configs"], unused, tmp_path).returncode == 0
    assert dbm(["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "x")], unused, tmp_path).returncode == 2
    assert not (tmp_path / "unused").exists()


def test_a_cache_that_cannot_be_created_is_skipped_with_a_note(write_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = dbm(["run", str(write_config(GOOD)), "--out", str(tmp_path / "res"), "--quiet"], blocker / "xla", tmp_path)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "compilation cache" in line]
    assert notes == [f"dbm: note: compilation cache off: cannot create {blocker / 'xla'} ({blocker} is not a folder)"]
    assert io.load(tmp_path / "res").manifest["compiles_cached"] == 0
    assert blocker.read_text() == "not a directory"


def test_a_jax_cache_set_up_by_the_user_is_left_alone(write_config, tmp_path):
    own = tmp_path / "jax-own"
    # JAX's own threshold (1 s) would leave this small run's programs out
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(own), "DBM_COMPILE_CACHE": str(tmp_path / "ours"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    done = subprocess.run([sys.executable, "-m", "dysonbm.cli", "run", str(write_config(GOOD)), "--out",
                           str(tmp_path / "res"), "--quiet"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list(own.glob("*-cache")) and not Path(tmp_path / "ours").exists()


def test_entries_left_empty_by_an_interrupted_write_are_mended(write_config, tmp_path):
    cfg, cache = write_config(GOOD), tmp_path / "cache"
    assert dbm(["run", str(cfg), "--out", str(tmp_path / "a"), "--quiet"], cache, tmp_path).returncode == 0
    entries = list(cache.glob("*-cache"))
    assert entries
    for entry in entries:  # as a process killed between creating and writing each would leave them
        entry.write_bytes(b"")
    again = dbm(["run", str(cfg), "--out", str(tmp_path / "b"), "--quiet"], cache, tmp_path)
    assert again.returncode == 0 and "compilation cache" not in again.stderr, again.stderr
    assert io.load(tmp_path / "b").manifest["compiles_cached"] == 0  # compiled afresh, and stored
    assert dbm(["run", str(cfg), "--out", str(tmp_path / "c"), "--quiet"], cache, tmp_path).returncode == 0
    third = io.load(tmp_path / "c").manifest
    assert third["compiles_cached"] == third["compiles"]


def test_no_home_directory_leaves_the_cache_off_with_a_note(tmp_path):
    code = ("import pathlib, sys\n"
            "def home(): raise RuntimeError('Could not determine home directory.')\n"
            "pathlib.Path.home = staticmethod(home)\n"
            "from dysonbm import cli\n"
            "sys.exit(cli.main(['configs']))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DBM_COMPILE_CACHE", "XDG_CACHE_HOME") and not k.startswith("JAX_COMPILATION_CACHE")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "ts_quick" in done.stdout, done.stderr
    assert done.stderr.strip() == "dbm: note: compilation cache off: no home directory (set DBM_COMPILE_CACHE=DIR)"
