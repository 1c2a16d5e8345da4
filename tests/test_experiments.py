"""Every script in experiments/ runs at its small default size and finds what its figure shows,
so the examples of the public API cannot rot."""

import math
import runpy
from pathlib import Path

import numpy as np
import pytest

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


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_experiment(name, tmp_path, monkeypatch):
    CHECKS[name](run(name, tmp_path, monkeypatch))
