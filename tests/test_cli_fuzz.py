"""Property: whatever config file and `--set` items a user writes, `dbm run --dry-run`
either succeeds or exits with status 2 and one line on stderr; it never raises.

Configs are random dictionaries written as TOML (some keys unknown, some values of the
wrong type, out of range, huge or non-finite), and `--set` items random keys and values.
The dry run's calibration (a compile and a few hundred steps) is replaced by a stub: it
checks nothing about the input, and it would make every valid example cost seconds.
"""

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from unittest import mock

import jax
import pytest

# hypothesis keeps its caches in ./.hypothesis unless told otherwise: keep the working tree clean
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "dysonbm-hypothesis"))
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dysonbm import cli  # noqa: E402
from dysonbm.runner import dryrun  # noqa: E402

# ---------------------------------------------------------------------------------------
# values a user might type: mostly plausible, often not


def _huge():
    return st.sampled_from([0, -1, 2**31, 2**32, 10**9, 10**12, 10**17, 2**63 + 5])


ANY = st.one_of(
    st.integers(-3, 40), _huge(), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=6), st.lists(st.integers(-2, 20), max_size=3),
)


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, each drawn in proportion to its weight (``one_of`` draws them
    evenly, and merges repeats)."""
    table = [s for w, s in choices for _ in range(w)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


def mostly(valid: st.SearchStrategy, weight: int = 4) -> st.SearchStrategy:
    """``valid`` most of the time, anything now and then: deep checks get reached too."""
    return weighted((weight, valid), (1, ANY))


SMALL_INT = mostly(st.integers(-1, 12))
POSITIVE = mostly(st.one_of(st.floats(-0.5, 2.0), st.sampled_from([0.0, 1e-3, 0.1, 0.9, 0.999, 1.0, 5.0])))


def _section(fields: dict) -> st.SearchStrategy:
    table = st.fixed_dictionaries({}, optional=fields)
    odd = st.fixed_dictionaries({"colour": ANY}, optional=fields)
    return weighted((16, table), (1, odd), (1, ANY))  # now and then an unknown key, or not a table at all


MODEL = st.fixed_dictionaries(
    {"name": st.sampled_from(["teacher_student", "multilayer", "dyson", "wishart", "matrix_dyson",
                              "gaussian_rbm", "perceptron"])},
    optional={
        "n": SMALL_INT, "m": SMALL_INT, "noise": POSITIVE, "hidden": SMALL_INT,
        "teacher_eigs": st.lists(st.floats(-1, 4), max_size=4),
        "activation": st.sampled_from(["tanh", "relu", "identity", "sigmoid"]),
        "potential": st.sampled_from(["quadratic", "quartic", "free", "sextic"]),
        "start": st.sampled_from(["zero", "semicircle", "stationary", "given", "hot"]),
        "gamma": POSITIVE, "g": POSITIVE, "beta": POSITIVE, "D": POSITIVE, "dt": POSITIVE,
        "n_visible": SMALL_INT,
    },
)

CONFIG = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries(
        {"model": mostly(MODEL, 16)},
        optional={
            "name": mostly(st.sampled_from(["fuzz"] * 12 + ["../escaped", "", "a/b", ".", ".."]), 8),
            "seed": mostly(st.one_of(st.integers(0, 100), st.integers(-2, 2**33)), 8),
            "replicas": SMALL_INT,
            "steps": mostly(st.one_of(st.integers(-1, 40), st.sampled_from([2 * 10**9, 10**10]))),
            "snapshot_every": SMALL_INT,
            "train": _section({
                "lr": POSITIVE, "batch_size": mostly(st.one_of(st.integers(-1, 40), _huge())), "init_std": POSITIVE,
                "optimizer": st.sampled_from(["sgd", "momentum", "adam", "rmsprop"]), "momentum": POSITIVE,
                "nesterov": mostly(st.booleans()), "b1": POSITIVE, "b2": POSITIVE, "eps": POSITIVE,
            }),
            "data": _section({
                "protocol": st.sampled_from(["online", "online", "fixed", "shared", "streaming"]),
                "n_data": SMALL_INT, "batches_per_epoch": SMALL_INT, "n_test": SMALL_INT,
                "reshuffle": mostly(st.booleans()),
            }),
            "divergence": _section({"max_loss": POSITIVE, "max_weight": POSITIVE}),
            "run": _section({
                "chunk_size": SMALL_INT, "segment_snapshots": SMALL_INT, "devices": st.integers(-1, 3),
                "unroll": SMALL_INT, "dtype": st.sampled_from(["float32", "float16"]),
            }),
            "sweep": mostly(st.lists(
                st.dictionaries(st.sampled_from(["lr", "batch_size", "init_std", "noise", "gamma", "beta", "colour"]),
                                mostly(st.lists(POSITIVE, max_size=3)), max_size=3),
                max_size=2), 3),
        },
    ),
    weighted((12, st.just({})), (1, st.fixed_dictionaries({"colour": ANY}))),
)

SET_KEYS = ["steps", "seed", "replicas", "snapshot_every", "name", "train.lr", "train.batch_size",
            "train.momentum", "sweep.lr", "sweep.batch_size", "sweep.init_std", "sweep", "model.n", "model.gamma",
            "data.protocol", "data.n_data", "run.unroll"]
ODD_SET_KEYS = ["train", "x.y.z", "sweep.lr.x", "", "train..lr"]
SET_VALUES = ["1", "0", "-1", "1e9", "1e12", "[1, 2]", "[]", "[0.1, -1]", "abc", '"fixed"', "nan", "inf",
              "true", "{a = 1}", "[{lr = [0.1]}]", "4294967296", "2e9", "0.5", "[4, 8]"]
SET_ITEM = st.builds(lambda k, v: f"{k}={v}",
                     weighted((16, st.sampled_from(SET_KEYS)), (1, st.sampled_from(ODD_SET_KEYS))),
                     weighted((4, st.sampled_from(SET_VALUES)), (1, st.text(max_size=6))))
SETS = st.lists(weighted((12, SET_ITEM), (1, st.text(max_size=10))), max_size=2)


# ---------------------------------------------------------------------------------------
# a minimal TOML writer for these dictionaries


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, (int, str)):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + "}"


def toml(doc: dict) -> str:
    lines, tables = [], []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables += [f"[{json.dumps(key)}]", *(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items())]
        elif key == "sweep" and isinstance(value, list) and value and all(isinstance(b, dict) for b in value):
            for block in value:
                tables += ["[[sweep]]", *(f"{json.dumps(k)} = {_value(v)}" for k, v in block.items())]
        else:
            lines.append(f"{json.dumps(key)} = {_value(value)}")
    return "\n".join(lines + tables) + "\n"


def _no_calibration(plan, steps=300, chunk=0):
    return {"compile_s": 0.0, "init_s": 0.0, "call_s": 0.0, "per_chunk_step_s": 0.0, "snapshot_s": 0.0, "steps": 0}


# no example database: the working tree stays clean, and a failure prints its example
@settings(max_examples=100, deadline=20_000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=CONFIG, sets=SETS)
def test_dry_run_succeeds_or_exits_2_with_one_line(doc, sets):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_text(toml(doc))
        argv = ["run", str(path), "--dry-run", "--quiet"]
        for item in sets:
            argv += ["--set", item]
        out, err = io.StringIO(), io.StringIO()
        x64 = jax.config.jax_enable_x64
        try:
            with mock.patch.object(dryrun, "calibrate", _no_calibration), \
                    contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = cli.main(argv)
                except SystemExit as exit_:  # argparse, for an item that looks like a flag
                    code = exit_.code
        finally:
            jax.config.update("jax_enable_x64", x64)
        lines = err.getvalue().strip().splitlines()
        if code == 0:
            assert "grid points" in out.getvalue(), out.getvalue()
        else:
            assert code == 2, (code, err.getvalue())
            assert len(lines) == 1 and lines[0].startswith("dbm: error:"), err.getvalue()
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["fuzz.toml"]  # a dry run writes nothing


def test_toml_writer_round_trips():
    import tomllib

    doc = {"name": "a\"b", "seed": 3, "x": float("inf"), "model": {"name": "dyson", "l": [1, 2.5]},
           "sweep": [{"lr": [0.1]}, {"batch_size": [4]}]}
    back = tomllib.loads(toml(doc))
    assert back["name"] == 'a"b' and back["x"] == math.inf and back["model"]["l"] == [1, 2.5]
    assert back["sweep"] == [{"lr": [0.1]}, {"batch_size": [4]}]
