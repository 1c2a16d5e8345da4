"""Every kind of bad input to `dbm run/show/plot/merge/reproduce`, file-system fault and
corrupt store: exit status 2, ONE line on stderr naming what is wrong, and the file tree
exactly as it was (no file written, changed or removed, no temporary left behind)."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dysonbm import cli
from tests.conftest import GOOD


ONLINE = GOOD.replace('protocol = "fixed"\nn_data = 64', 'protocol = "online"')

DYSON = """
name = "levels"
replicas = 4
steps = 20
snapshot_every = 10
[model]
name = "dyson"
n = 4
potential = "quadratic"
start = "zero"
gamma = 1.0
dt = 0.01
"""

RBM = """
name = "rbm"
replicas = 4
steps = 20
snapshot_every = 10
[model]
name = "gaussian_rbm"
n_visible = 2
n_hidden = 2
mu2 = 9.0
[train]
lr = 0.01
batch_size = 4
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A results directory of GOOD, written by dbm, copied into each test that needs one."""
    where = tmp_path_factory.mktemp("stored")
    (where / "cfg.toml").write_text(GOOD)
    assert cli.main(["run", str(where / "cfg.toml"), "--out", str(where / "res"), "--quiet"]) == 0
    return where / "res"


class Workspace:
    """A folder to run one case in (also the working directory): a config, a results
    directory of dbm's, a user's folder of notes, a plain file, a read-only folder."""

    def __init__(self, root: Path, stored: Path):
        self.root = root
        self._stored = stored

    def cfg(self, text: str = GOOD, name: str = "cfg.toml") -> str:
        (self.root / name).write_text(text)
        return name

    def results(self, name: str = "res") -> str:
        shutil.copytree(self._stored, self.root / name)
        return name

    def corrupt(self, manifest=None, array=None, value=None) -> str:
        """A copy of the results with its manifest replaced or edited, or one array replaced."""
        name = self.results("bad")
        file = self.root / name / "manifest.json"
        if callable(manifest):
            m = json.loads(file.read_text())
            manifest(m)
            file.write_text(json.dumps(m))
        elif manifest is not None:
            file.write_text(manifest)
        if array is not None:
            target = self.root / name / "arrays" / f"{array}.npy"
            if value is None:
                target.unlink()
            elif isinstance(value, bytes):
                target.write_bytes(value)
            else:
                np.save(target, value)
        return name

    def notes(self, name: str = "notes") -> str:
        (self.root / name).mkdir()
        (self.root / name / "notes.txt").write_text("a week of lab notes\n")
        return name

    def file(self, name: str = "afile") -> str:
        (self.root / name).write_text("not a folder\n")
        return name

    def read_only(self) -> str:
        """A folder nothing can be created in: chmod where that binds (not as root), else a
        read-only system folder."""
        ro = self.root / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            probe = ro / "probe"
            probe.mkdir()
        except OSError:
            return "ro"
        probe.rmdir()
        ro.chmod(0o755)
        ro.rmdir()
        for candidate in ("/sys", "/proc/sys"):
            try:
                (Path(candidate) / "dbm-probe").mkdir()
            except OSError:
                return candidate
            (Path(candidate) / "dbm-probe").rmdir()
        pytest.skip("no folder here refuses writes")


def _seeded_checkpoint(ws: Workspace) -> str:
    (ws.root / "ck" / "checkpoint").mkdir(parents=True)
    (ws.root / "ck" / "checkpoint" / "position.npz").write_bytes(b"not a zip file")
    return "ck"


def _inside_results(ws: Workspace) -> list:
    """A results directory as the working directory: `--out .` there cannot be replaced."""
    ws.results()
    os.chdir(ws.root / "res")
    return ["run", str(ws.root / ws.cfg()), "--out", ".", "--overwrite", "--quiet"]


def run(cfg_text=GOOD, *sets, extra=(), out=True):
    """A `dbm run` case: config text, --set items and other arguments (``--out never``
    unless the arguments name one, a dry run, or ``out=False``: the default results/<name>)."""

    def build(ws):
        argv = ["run", ws.cfg(cfg_text), "--quiet"]
        for item in sets:
            argv += ["--set", item]
        argv += list(extra(ws) if callable(extra) else extra)
        if out and "--out" not in argv and "--dry-run" not in argv:
            argv += ["--out", "never"]
        return argv

    return build


# id: (argv builder, text the one line must contain)
CASES = {
    # the config file
    "missing config": (lambda ws: ["run", "nope.toml", "--out", "o"], "nope.toml"),
    "config is a folder": (lambda ws: ["run", ws.notes(), "--out", "o"], "config"),
    "config not UTF-8": (lambda ws: (ws.root.joinpath("c.toml").write_bytes(b'name = "\xff"\n'),
                                     ["run", "c.toml", "--out", "o"])[1], "UTF-8"),
    "malformed toml": (run(GOOD.replace("replicas = 4", "replicas = = 4")), "malformed"),
    "empty config": (run(""), "model.name"),
    "unknown top-level key": (run(GOOD.replace("seed = 0", "colour = 1\nseed = 0")), "colour"),
    "unknown top-level key by --set": (run(GOOD, "colour=1"), "colour"),
    "unknown section key": (run(GOOD.replace("[train]", "[train]\nlrr = 0.1")), "train.lrr"),
    "section not a table": (run(GOOD, "train=5"), "train"),
    "unknown model": (run(GOOD.replace("teacher_student", "perceptron")), "perceptron"),
    "unknown model setting": (run(GOOD, "model.width=3"), "model.width"),
    "model setting of the wrong type": (run(GOOD, 'model.n="many"'), "model.n"),
    "name escapes results/": (run(GOOD.replace('name = "tiny"', 'name = "../escaped"'), out=False), "name"),
    "name with a separator": (run(GOOD, 'name="a/b"'), "name"),
    "empty name": (run(GOOD, 'name=""'), "name"),
    # seeds: the key keeps 32 bits
    "seed 2**32": (run(GOOD, "seed=4294967296"), "seed"),
    "seed 1e17": (run(GOOD, "seed=100000000000000000"), "seed"),
    "seed -1": (run(GOOD, "seed=-1"), "seed"),
    "seed not an integer": (run(GOOD, "seed=1.5"), "seed"),
    "seed a string": (run(GOOD, "seed=abc"), "seed"),
    # sizes
    "zero replicas": (run(GOOD, "replicas=0"), "replicas"),
    "replicas a bool": (run(GOOD, "replicas=true"), "replicas"),
    "replicas 1e12": (run(GOOD, "replicas=1e12"), "replicas"),
    "replicas 1e12 dry-run": (run(GOOD, "replicas=1e12", extra=["--dry-run"]), "replicas"),
    "replicas 1e9 dry-run": (run(GOOD, "replicas=1e9", extra=["--dry-run"]), "replicas"),
    "replicas 1e9": (run(GOOD, "replicas=1e9"), "replicas"),
    "snapshots beyond memory": (run(GOOD, "steps=2e9", "snapshot_every=1", extra=["--dry-run"]), "snapshot_every"),
    "steps 1e10 every step": (run(GOOD, "steps=1e10", "snapshot_every=1", extra=["--dry-run"]), "steps"),
    "zero steps": (run(GOOD, "steps=0"), "steps"),
    "snapshot not dividing steps": (run(GOOD, "snapshot_every=7"), "snapshot_every"),
    "zero snapshot_every": (run(GOOD, "snapshot_every=0"), "snapshot_every"),
    "batch of 2e9 samples": (run(ONLINE, "sweep.batch_size=[2e9]"), "batch_size"),
    "batch of 2e9 samples dry-run": (run(ONLINE, "sweep.batch_size=[2e9]", extra=["--dry-run"]), "batch_size"),
    "batch beyond int32": (run(ONLINE, "train.batch_size=1e10"), "train.batch_size"),
    # [train]
    "negative lr": (run(GOOD, "train.lr=-0.1"), "train.lr"),
    "lr not a number": (run(GOOD, "train.lr=fast"), "train.lr"),
    "lr infinite": (run(GOOD, "train.lr=inf"), "train.lr"),
    "lr nan": (run(GOOD, "train.lr=nan"), "train.lr"),
    "zero batch": (run(GOOD, "train.batch_size=0"), "train.batch_size"),
    "fractional batch": (run(GOOD, "train.batch_size=1.5"), "train.batch_size"),
    "batch larger than data": (run(GOOD, "train.batch_size=128"), "train.batch_size"),
    "zero width": (run(GOOD, "train.init_std=0"), "train.init_std"),
    "unknown optimizer": (run(GOOD, 'train.optimizer="rmsprop"'), "train.optimizer"),
    "momentum 5": (run(GOOD, 'train.optimizer="momentum"', "train.momentum=5"), "train.momentum"),
    "momentum 1": (run(GOOD, 'train.optimizer="momentum"', "train.momentum=1"), "train.momentum"),
    "negative momentum": (run(GOOD, "train.momentum=-0.1"), "train.momentum"),
    "b1 1.5": (run(GOOD, 'train.optimizer="adam"', "train.b1=1.5"), "train.b1"),
    "b2 1": (run(GOOD, 'train.optimizer="adam"', "train.b2=1"), "train.b2"),
    "eps 0": (run(GOOD, 'train.optimizer="adam"', "train.eps=0"), "train.eps"),
    "negative eps": (run(GOOD, "train.eps=-1e-8"), "train.eps"),
    "nesterov not a bool": (run(GOOD, 'train.nesterov="yes"'), "train.nesterov"),
    # [data], [divergence], [run]
    "unknown protocol": (run(GOOD, 'data.protocol="streaming"'), "data.protocol"),
    "fixed data without a size": (run(GOOD, "data.n_data=0"), "data.batches_per_epoch"),
    "two dataset sizes": (run(GOOD, "data.batches_per_epoch=4"), "data.n_data"),
    "negative n_data": (run(ONLINE, "data.n_data=-1"), "data.n_data"),
    "zero test set": (run(GOOD, "data.n_test=0"), "data.n_test"),
    "zero max_loss": (run(GOOD, "divergence.max_loss=0"), "divergence.max_loss"),
    "negative chunk_size": (run(GOOD, "run.chunk_size=-1"), "run.chunk_size"),
    "zero unroll": (run(GOOD, "run.unroll=0"), "run.unroll"),
    "dtype float16": (run(GOOD, 'run.dtype="float16"'), "run.dtype"),
    "more devices than there are": (run(GOOD, "run.devices=99"), "run.devices"),
    # sweeps
    "empty [[sweep]] table": (run(GOOD + "\n[[sweep]]\n"), "sweep"),
    "empty sweep list": (run(GOOD + "\n[[sweep]]\nlr = []\n"), "sweep.lr"),
    "negative sweep lr": (run(GOOD + "\n[[sweep]]\nlr = [0.1, -1.0]\n"), "sweep.lr"),
    "unknown sweep key": (run(GOOD + "\n[[sweep]]\ncolour = [1]\n"), "sweep.colour"),
    "sweep not a table": (run(GOOD, "sweep=5"), "sweep"),
    "--set sweep too deep": (run(GOOD, "sweep.lr.x=[1]"), "sweep.lr.x"),
    "--set negative sweep lr": (run(GOOD, "sweep.lr=[0.1, -1]"), "sweep.lr"),
    "--set sweep of a non-hyperparameter": (run(GOOD, "sweep.steps=[1, 2]"), "sweep.steps"),
    # --set itself
    "--set without =": (run(GOOD, "train.lr"), "--set"),
    "--set into a number": (run(GOOD, "train.lr.x=1"), "train.lr.x"),
    "--set into the model name": (run(GOOD, "model.name.x=1"), "model.name.x"),
    "--set with an empty key": (run(GOOD, "=5"), "--set"),
    "--set with an empty part": (run(GOOD, "train..lr=5"), "--set"),
    # SDE parameters
    "dyson gamma -1": (run(DYSON, "model.gamma=-1"), "gamma"),
    "dyson gamma -1 semicircle": (run(DYSON, "model.gamma=-1", 'model.start="semicircle"'), "gamma"),
    "dyson swept gamma -1": (run(DYSON, "sweep.gamma=[1, -1]"), "gamma"),
    "dyson quartic g -1": (run(DYSON, 'model.potential="quartic"', "model.g=-1"), "g"),
    "dyson beta 0": (run(DYSON, "model.beta=0"), "beta"),
    "dyson negative D": (run(DYSON, "model.D=-1"), "D"),
    "dyson dt 0": (run(DYSON, "model.dt=0"), "dt"),
    "dyson one level": (run(DYSON, "model.n=1"), "n"),
    "dyson unknown potential": (run(DYSON, 'model.potential="sextic"'), "potential"),
    # settings a run would not read: refused, not ignored
    "rbm init width as a model setting": (run(RBM, "model.init_std=0.5"), "model.init_std = 0.5"),
    "rbm chains": (run(RBM, "model.chains=8"), "model.chains = 8"),
    "rbm m2 with a kernel matrix": (run(RBM, "model.kernel=[[2.0, 0.0], [0.0, 3.0]]", "model.m2=1.5"),
                                    "model.m2 = 1.5"),
    "rbm data protocol": (run(RBM, 'data.protocol="online"'), "data.protocol = 'online'"),
    "rbm dataset size": (run(RBM, 'data.protocol="fixed"', "data.batches_per_epoch=4"), "data.protocol = 'fixed'"),
    "online dataset size": (run(ONLINE, "data.batches_per_epoch=4"), "data.batches_per_epoch = 4"),
    "online n_data": (run(ONLINE, "data.n_data=64"), "data.n_data = 64"),
    "online reshuffle": (run(ONLINE, "data.reshuffle=true"), "data.reshuffle = True"),
    "momentum of plain sgd": (run(GOOD, "train.momentum=0.5"), "train.momentum = 0.5"),
    "nesterov of adam": (run(GOOD, 'train.optimizer="adam"', "train.nesterov=true"), "train.nesterov = True"),
    "adam b1 of momentum": (run(GOOD, 'train.optimizer="momentum"', "train.b1=0.8"), "train.b1 = 0.8"),
    "sgd eps": (run(GOOD, "train.eps=1e-6"), "train.eps = 1e-06"),
    "dyson learning rate": (run(DYSON, "train.lr=0.1"), "train.lr = 0.1"),
    "dyson test set": (run(DYSON, "data.n_test=8"), "data.n_test = 8"),
    "dyson recorded weights": (run(DYSON, "record.weights=true"), "record.weights = True"),
    "dyson divergence bound": (run(DYSON, "divergence.max_weight=10"), "divergence.max_weight = 10"),
    "dyson swept lr": (run(DYSON, "sweep.lr=[0.1, 0.2]"), "sweep.lr"),
    "dyson swept init width": (run(DYSON + "\n[[sweep]]\ninit_std = [1.0, 2.0]\n"), "sweep.init_std"),
    # command-line flags
    "no config": (lambda ws: ["run"], "config"),
    "unknown command": (lambda ws: ["bogus"], "bogus"),
    "devices not a number": (run(GOOD, extra=["--devices", "abc"]), "--devices"),
    "zero devices": (run(GOOD, extra=["--devices", "0"]), "--devices"),
    "zero chunk size": (run(GOOD, extra=["--chunk-size", "0"]), "--chunk-size"),
    "shard past the end": (run(GOOD, extra=["--shard", "3/2"]), "--shard"),
    "shard not I/N": (run(GOOD, extra=["--shard", "x"]), "--shard"),
    "more shards than replicas": (run(GOOD, extra=["--shard", "0/9"]), "--shard"),
    "coordinator alone": (run(GOOD, extra=["--coordinator", "h:1"]), "--coordinator"),
    "process id past the processes": (run(GOOD, extra=["--coordinator", "h:1", "--num-processes", "2",
                                                        "--process-id", "5"]), "--process-id"),
    "shard in a multi-process job": (run(GOOD, extra=["--coordinator", "h:1", "--num-processes", "2",
                                                       "--process-id", "0", "--shard", "0/2"]), "--shard"),
    "resume and overwrite": (run(GOOD, extra=["--resume", "--overwrite"]), "--resume"),
    # --out of dbm run
    "existing results": (run(GOOD, extra=lambda ws: ["--out", ws.results()]), "exists"),
    "overwrite a user's folder": (run(GOOD, extra=lambda ws: ["--out", ws.notes(), "--overwrite"]), "notes.txt"),
    "resume a user's folder": (run(GOOD, extra=lambda ws: ["--out", ws.notes(), "--resume"]), "notes.txt"),
    "overwrite results holding notes": (
        run(GOOD, extra=lambda ws: (ws.results(), (ws.root / "res" / "notes.txt").write_text("mine"),
                                    ["--out", "res", "--overwrite"])[2]), "notes.txt"),
    "overwrite the current directory": (_inside_results, "current directory"),
    "out under a file": (run(GOOD, extra=lambda ws: ["--out", ws.file() + "/sub"]), "not a directory"),
    "out is a file": (run(GOOD, extra=lambda ws: ["--out", ws.file(), "--overwrite"]), "not a directory"),
    "out read-only": (run(GOOD, extra=lambda ws: ["--out", ws.read_only() + "/sub"]), "cannot write"),
    "resume complete results of another config": (
        run(GOOD, "seed=5", extra=lambda ws: ["--out", ws.results(), "--resume"]), "another config"),
    "resume a corrupt checkpoint": (run(GOOD, extra=lambda ws: ["--out", _seeded_checkpoint(ws), "--resume"]),
                                    "unreadable"),
    # dbm show / plot: not a store, or a corrupt one
    "show a missing folder": (lambda ws: ["show", "nowhere"], "manifest"),
    "show a user's folder": (lambda ws: ["show", ws.notes()], "manifest"),
    "show manifest {}": (lambda ws: ["show", ws.corrupt("{}")], "manifest.json"),
    "show manifest []": (lambda ws: ["show", ws.corrupt("[]")], "manifest.json"),
    "show manifest not JSON": (lambda ws: ["show", ws.corrupt("{oops")], "manifest.json"),
    "show manifest without points": (lambda ws: ["show", ws.corrupt(lambda m: m.pop("points"))], "points"),
    "show manifest with an escaping array name": (
        lambda ws: ["show", ws.corrupt(lambda m: m["axes"].update({"../../x": ["point"]}))], "array name"),
    "show array of the wrong shape": (lambda ws: ["show", ws.corrupt(array="eigs", value=np.zeros((3, 3)))],
                                      "eigs.npy"),
    "show array missing": (lambda ws: ["show", ws.corrupt(array="test_loss")], "test_loss.npy"),
    "show array not an array": (lambda ws: ["show", ws.corrupt(array="test_loss", value=b"junk")], "test_loss.npy"),
    "show diverged of the wrong axes": (
        lambda ws: ["show", ws.corrupt(lambda m: m["axes"].update({"diverged": ["replica"]}))], "diverged"),
    "plot manifest {}": (lambda ws: ["plot", ws.corrupt("{}")], "manifest.json"),
    "plot manifest []": (lambda ws: ["plot", ws.corrupt("[]")], "manifest.json"),
    "plot array of the wrong shape": (lambda ws: ["plot", ws.corrupt(array="eigs", value=np.zeros(3))], "eigs.npy"),
    "plot out under a file": (lambda ws: ["plot", ws.results(), "--out", ws.file() + "/figs"], "not a directory"),
    "plot out read-only": (lambda ws: ["plot", ws.results(), "--out", ws.read_only() + "/figs"], "cannot write"),
    # dbm merge
    "merge a store that is not a shard": (lambda ws: ["merge", ws.results(), "--out", "m"], "not a shard"),
    "merge a corrupt store": (lambda ws: ["merge", ws.corrupt("[]"), "--out", "m"], "manifest.json"),
    "merge into existing results": (lambda ws: ["merge", ws.results(), "--out", ws.results("other")], "exists"),
    "merge over a file": (lambda ws: ["merge", ws.results(), "--out", ws.file(), "--overwrite"], "not a directory"),
    "merge over a user's folder": (lambda ws: ["merge", ws.results(), "--out", ws.notes(), "--overwrite"],
                                   "notes.txt"),
    "merge under a file": (lambda ws: ["merge", ws.results(), "--out", ws.file() + "/m"], "not a directory"),
    "merge out read-only": (lambda ws: ["merge", ws.results(), "--out", ws.read_only() + "/m"], "cannot write"),
    # dbm reproduce
    "reproduce unknown name": (lambda ws: ["reproduce", "nope"], "nope"),
    "reproduce into existing results": (lambda ws: ["reproduce", "sgd-langevin", "--quick", "--out", ws.results()],
                                        "exists"),
    "reproduce over a run's results": (
        lambda ws: ["reproduce", "sgd-langevin", "--quick", "--out", ws.results(), "--overwrite"], "not replacing"),
    "reproduce resume a user's folder": (
        lambda ws: ["reproduce", "phase-diagram", "--quick", "--out", ws.notes(), "--resume"], "notes.txt"),
    "reproduce a run store that is not dbm's": (
        lambda ws: (ws.root.joinpath("rep").mkdir(), ws.notes("rep/sgd"),
                    ["reproduce", "sgd-langevin", "--quick", "--out", "rep", "--overwrite"])[2], "sgd"),
    "reproduce out is a file": (lambda ws: ["reproduce", "sgd-langevin", "--out", ws.file()], "not a directory"),
    "reproduce under a file": (lambda ws: ["reproduce", "sgd-langevin", "--out", ws.file() + "/r"],
                               "not a directory"),
    "reproduce out read-only": (lambda ws: ["reproduce", "sgd-langevin", "--out", ws.read_only() + "/r"],
                                "cannot write"),
    "reproduce resume and overwrite": (lambda ws: ["reproduce", "sgd-langevin", "--resume", "--overwrite"],
                                       "--resume"),
}


def tree(root: Path) -> dict:
    """Every path under ``root`` with its kind, mode and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
            out[p.relative_to(root).as_posix()] = (st.st_mode, digest)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, stored, tmp_path, monkeypatch, capsys):
    build, must = CASES[case]
    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    monkeypatch.chdir(ws_root)  # default outputs (results/<name>) land here, or outside it
    ws = Workspace(ws_root, stored)
    argv = build(ws)
    before = tree(tmp_path)
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    after = tree(tmp_path)
    (ws_root / "ro").exists() and (ws_root / "ro").chmod(0o755)  # let pytest clean up
    lines = err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("dbm: error:"), (argv, err)
    assert must in lines[0], (must, lines[0])
    assert after == before, sorted(set(after) ^ set(before)) or "a file changed"
