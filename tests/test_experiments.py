"""Every script in experiments/ uses only names the public API has and presets the package ships
(checked for all, fast), and runs at its small default size finding what its figure shows (the
two cheapest here; the sweeps, 25–45 s each on two loaded cores, under `make test-slow`)."""

import ast
import math
import runpy
from pathlib import Path

import numpy as np
import pytest

import dysonbm as dbm
from dysonbm import presets

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results directories a script may write land here
    main = runpy.run_path(str(EXPERIMENTS / f"{name}.py"))["main"]
    out = tmp_path / f"{name}.png"
    value = main(["--out", str(out)])
    assert out.stat().st_size > 10_000
    return value


def test_every_script_is_tested():
    assert {p.stem for p in EXPERIMENTS.glob("*.py")} == set(CHECKS)


def _semicircle(ks):
    # 64 replicas × 32 levels: KS distance of the pooled levels, far from any other shape
    assert ks < 0.05


def _wigner(distances):
    # 256 replicas × 10 correlated snapshots per panel: the surmise within a few per cent
    assert max(distances) < 0.05


def _collapse(fit):
    assert abs(fit.slope - fit.theory) < 5 * fit.slope_err


def _rbm(distance):
    # the levels flow from the narrow init towards their fixed points
    assert np.all(np.isfinite(distance)) and distance[-1] < 0.5 * distance[0]


def _phases(majority):
    assert set(majority) <= {"ordered", "paramagnetic", "glassy", "divergent", "unresolved"}
    assert len(majority) == 9 and len(set(majority)) > 1


def _langevin(comparisons):
    for c in comparisons:
        assert abs(c.ratio - c.expected_ratio) < 5 * c.ratio_err and math.isfinite(c.D)


CHECKS = {"dbm_semicircle": _semicircle, "wigner_surmise_panels": _wigner, "linear_scaling_collapse": _collapse,
          "rbm_eigenvalue_flow": _rbm, "phase_map": _phases, "sgd_vs_langevin": _langevin}


SWEEPS = {"linear_scaling_collapse", "rbm_eigenvalue_flow", "phase_map", "sgd_vs_langevin"}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_experiment_uses_the_public_api_and_shipped_presets(name):
    tree = ast.parse((EXPERIMENTS / f"{name}.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names
                if (getattr(n, "module", None) or a.name).startswith("dysonbm")}
    assert imported == {"dysonbm"}, imported  # `import dysonbm as dbm`, nothing below it
    for node in ast.walk(tree):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.insert(0, node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "dbm" and chain:
            obj = dbm
            for attr in chain:
                obj = getattr(obj, attr)  # AttributeError: the script uses a name the package lost
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "run" and node.args:
            presets.path(node.args[0].value)  # a preset the package ships


@pytest.mark.parametrize("name", sorted(set(CHECKS) - SWEEPS))
def test_experiment(name, tmp_path, monkeypatch):
    CHECKS[name](run(name, tmp_path, monkeypatch))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_experiment_sweep(name, tmp_path, monkeypatch):
    CHECKS[name](run(name, tmp_path, monkeypatch))
