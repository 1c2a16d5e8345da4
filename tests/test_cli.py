"""The `dbm` command: a one-step pipeline, and bad input refused with exit 2, nothing written."""

import pytest

from dysonbm import cli, io

GOOD = """
name = "tiny"
seed = 0
replicas = 4
steps = 20
snapshot_every = 10
[model]
name = "teacher_student"
[train]
lr = 0.1
batch_size = 4
[data]
protocol = "fixed"
n_data = 64
"""


def test_run_show_pipeline(write_config, tmp_path, capsys):
    out = tmp_path / "res"
    assert cli.main(["run", str(write_config(GOOD)), "--out", str(out), "--quiet"]) == 0
    res = io.load(out)
    assert res["eigs"].shape == (1, 4, 3, 2)
    assert res["test_loss"].shape == (1, 4, 3)
    assert res.manifest["config"]["name"] == "tiny"
    assert {"jax", "numpy", "dysonbm"} <= set(res.manifest["versions"])
    capsys.readouterr()
    assert cli.main(["show", str(out)]) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "test_loss" in table
    # an existing directory is refused without --overwrite, accepted with it
    assert cli.main(["run", str(write_config(GOOD)), "--out", str(out), "--quiet"]) == 2
    assert cli.main(["run", str(write_config(GOOD)), "--out", str(out), "--quiet", "--overwrite"]) == 0


BAD = {
    "unknown top-level key": (GOOD + "\ncolour = 1\n", [], "colour"),
    "unknown section key": (GOOD.replace("[train]", "[train]\nlrr = 0.1"), [], "train.lrr"),
    "unknown model setting": (GOOD.replace('name = "teacher_student"', 'name = "teacher_student"\nwidth = 3'), [], "model.width"),
    "unknown model": (GOOD.replace("teacher_student", "perceptron"), [], "perceptron"),
    "negative lr": (GOOD, ["train.lr=-0.1"], "train.lr"),
    "zero batch": (GOOD, ["train.batch_size=0"], "train.batch_size"),
    "zero width": (GOOD, ["train.init_std=0"], "train.init_std"),
    "zero steps": (GOOD, ["steps=0"], "steps"),
    "negative sweep lr": (GOOD + "\n[[sweep]]\nlr = [0.1, -1.0]\n", [], "sweep.lr"),
    "batch larger than data": (GOOD, ["train.batch_size=128"], "train.batch_size"),
    "malformed toml": (GOOD.replace("replicas = 4", "replicas = = 4"), [], "malformed"),
    "non-numeric --set": (GOOD, ["train.lr=fast"], "train.lr"),
    "--set without =": (GOOD, ["train.lr"], "--set"),
    "unknown protocol": (GOOD, ['data.protocol="streaming"'], "data.protocol"),
    "snapshot not dividing steps": (GOOD, ["snapshot_every=7"], "snapshot_every"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_and_writes_nothing(case, write_config, tmp_path, capsys):
    text, sets, field = BAD[case]
    out = tmp_path / "never"
    args = ["run", str(write_config(text)), "--out", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dbm: error:") and field in err[0], err
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.toml" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_show_refuses_a_non_results_directory(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path)]) == 2
    assert "manifest" in capsys.readouterr().err
