"""The `dbm` command: a one-step pipeline, and bad input refused with exit 2, nothing written."""

import numpy as np
import pytest

from dysonbm import cli, io
from tests.conftest import GOOD


def test_run_show_pipeline(write_config, tmp_path, capsys):
    out = tmp_path / "res"
    assert cli.main(["run", str(write_config(GOOD)), "--out", str(out), "--quiet"]) == 0
    res = io.load(out)
    assert res["eigs"].shape == (1, 4, 3, 2)
    assert res["test_loss"].shape == (1, 4, 3)
    assert res.manifest["config"]["name"] == "tiny"
    assert {"jax", "numpy", "dysonbm"} <= set(res.manifest["versions"])
    np.testing.assert_array_equal(res.steps, [0, 10, 20])
    # the hyperparameters are stored once, exactly as configured, per grid point
    assert res.hp("lr").tolist() == [0.1] and res.hp("batch_size").tolist() == [4]
    assert not [name for name in res.names() if name.startswith("hp_")]
    capsys.readouterr()
    assert cli.main(["show", str(out)]) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "test_loss" in table
    # the table's numbers are the arrays': medians of the final losses, mean extreme levels
    head, cols, row = table.strip().splitlines()
    assert "1 points x 4 replicas, 20 steps, 3 snapshots" in head
    shown = dict(zip(cols.split(), row.split()))
    assert (shown["lr"], shown["batch_size"], shown["replicas"], shown["diverged"]) == ("0.1", "4", "4", "0%")
    for name in ("test_loss", "train_loss"):
        assert float(shown[name]) == pytest.approx(float(np.median(res[name][0, :, -1])), rel=1e-3)
    final = res["eigs"][0, :, -1]
    assert float(shown["eigs_min"]) == pytest.approx(float(final.min(axis=-1).mean()), rel=1e-3)
    assert float(shown["eigs_max"]) == pytest.approx(float(final.max(axis=-1).mean()), rel=1e-3)
    # an existing directory is refused without --overwrite, accepted with it, and the rerun
    # gives the same numbers bit for bit
    assert cli.main(["run", str(write_config(GOOD)), "--out", str(out), "--quiet"]) == 2
    assert cli.main(["run", str(write_config(GOOD)), "--out", str(out), "--quiet", "--overwrite"]) == 0
    again = io.load(out)
    for name in res.names():
        np.testing.assert_array_equal(again[name], res[name], err_msg=name)


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


def test_sweep_overrides_build_one_product_block(write_config, tmp_path, capsys):
    from dysonbm import config

    quick = config.load("multilayer_quick",
                        config.parse_set_args(["sweep.lr=[4.0]", "sweep.init_std=[0.25]"]))
    assert [(p["lr"], p["init_std"]) for p in config.grid_points(quick)] == [(4.0, 0.25)]
    # one key: the file's single block keeps its other keys, the key is replaced, not added twice
    one = config.apply_overrides({"sweep": [{"lr": [0.1, 0.2], "init_std": [1, 2, 3]}]}, {"sweep.lr": [0.5]})
    assert one["sweep"] == [{"lr": [0.5], "init_std": [1, 2, 3]}]
    # several file blocks: the overrides' block replaces them
    two = config.apply_overrides({"sweep": [{"lr": [0.1]}, {"batch_size": [4]}]},
                                 {"sweep.lr": [0.3], "sweep.batch_size": [8, 16]})
    assert two["sweep"] == [{"lr": [0.3], "batch_size": [8, 16]}]
    # the same through the command (the summary line prints the grid it ran) and from Python
    out = tmp_path / "res"
    args = ["run", str(write_config(GOOD)), "--out", str(out), "--quiet",
            "--set", "sweep.lr=[0.05, 0.2]", "--set", "sweep.batch_size=[2]"]
    assert cli.main(args) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "grid lr=[0.05, 0.2] x batch_size=[2]: 2 points x 4 replicas" in head, head
    res = io.load(out)
    assert res.hp("lr").tolist() == [0.05, 0.2] and res.hp("batch_size").tolist() == [2, 2]
    with pytest.raises(KeyError, match="'lr_typo' is not a hyperparameter"):
        res.hp("lr_typo")
    import dysonbm

    api = dysonbm.run(config.load(write_config(GOOD)), sweep__lr=[0.5], sweep__batch_size=[16])
    assert [(p["lr"], p["batch_size"]) for p in api.points] == [(0.5, 16)]


def test_reproduce_reruns_or_resumes_only_its_own_directory(tmp_path, monkeypatch, capsys):
    from dysonbm.reproduce import sgd_langevin as rep

    calls = []

    def fake_run(out, quick, progress, resume=False):
        calls.append((out, quick, resume))
        (out / "report.md").write_text("report")
        return out / "report.md"

    monkeypatch.setattr(rep, "run", fake_run)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "report.md").write_text("old report")
    base = ["reproduce", "sgd-langevin", "--quick", "--out", str(tmp_path / "res"), "--quiet"]
    assert cli.main(base) == 2  # exists: neither flag
    assert cli.main([*base, "--resume"]) == 0 and calls[-1][2] is True
    assert cli.main([*base, "--overwrite"]) == 0 and calls[-1][2] is False
    assert len(calls) == 2

    def interrupted(out, quick, progress, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(rep, "run", interrupted)
    capsys.readouterr()
    assert cli.main([*base, "--overwrite"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"dbm reproduce sgd-langevin --quick --out {tmp_path / 'res'} --resume --quiet")


# ----------------------------------------------------------------------------- presets
def test_every_preset_loads_by_name_and_is_listed(capsys):
    from dysonbm import config, presets

    names = presets.names()
    assert {"ts_quick", "ts_linear_scaling", "rbm_quick", "phase_quick", "dyson_goe"} <= set(names)
    for name in names:
        cfg = config.load(name)  # every preset is a valid config
        assert cfg.name == name
        # what a manifest records loads again, as the same config
        assert config.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict(), name
        assert presets.summary(name), f"{name}: no summary line"
    assert cli.main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == names
    assert all(presets.summary(n) in line for n, line in zip(names, listed))
    assert cli.main(["configs", "ts_quick"]) == 0
    assert capsys.readouterr().out == presets.path("ts_quick").read_text(encoding="utf-8")


def test_the_quick_reproductions_configs_are_valid():
    """The presets with the overrides of `dbm reproduce --quick` (run only by CI's wheel check)."""
    from dysonbm import config, presets
    from dysonbm.reproduce import linear_scaling, sgd_langevin

    for name, over in (("ts_linear_scaling", linear_scaling.TS_QUICK), ("rbm_quick", linear_scaling.RBM_QUICK),
                       ("ts_langevin", sgd_langevin.SGD_QUICK)):
        cfg = config.load(presets.path(name), {k.replace("__", "."): v for k, v in over.items()})
        assert cfg.name == name


def test_preset_by_name_from_any_directory_and_a_local_file_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ts_quick", "--dry-run"]) == 0
    assert "grid:" in capsys.readouterr().out
    assert sorted(tmp_path.iterdir()) == []  # a dry run writes nothing
    # a file in the current directory is read, not the preset of the same name
    (tmp_path / "ts_quick").write_text(GOOD)
    from dysonbm import config

    assert config.load("ts_quick").name == "tiny"


def test_unknown_preset_and_version(capsys):
    assert cli.main(["run", "no_such_preset"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_preset" in err and "ts_quick" in err
    assert cli.main(["configs", "no_such_preset"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    from dysonbm import __version__

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"dbm (dysonbm) {__version__}"
