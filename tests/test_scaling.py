"""Linear-scaling analyses (dysonbm.analysis.scaling) on synthetic results and on teacher–student runs.

Statistical tolerances: for R·T Rayleigh spacings ``⟨S⟩`` has relative standard error
``sqrt(4/π − 1)/sqrt(n) ≈ 0.52/sqrt(n)``; the analysis reports its own error from the spread of
per-replica means, and the assertions allow 5 of those.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import dysonbm as dbm
from dysonbm.analysis import scaling
from dysonbm.io import Results
from dysonbm.models.teacher_student import stationary_mean_spacing, stationary_tau2


def synthetic_ts(points, replicas=300, snapshots=12, seed=0, slope=1.0, teacher=2.0):
    """Results of a TS run built by hand: each snapshot's W − W_t a fresh 2×2 GOE matrix with
    off-diagonal variance (slope² τ²), i.e. ⟨S⟩ = slope · sqrt(2π) τ exactly."""
    rng = np.random.default_rng(seed)
    eigs = np.empty((len(points), replicas, snapshots, 2))
    for p, hp in enumerate(points):
        tau = slope * math.sqrt(stationary_tau2(hp["lr"], hp["batch_size"], hp["noise"], 2))
        g = rng.normal(size=(replicas, snapshots, 2, 2)) * tau
        h = (g + np.swapaxes(g, -1, -2)) / math.sqrt(2.0)  # off-diag var τ², diag var 2τ²
        eigs[p] = np.linalg.eigvalsh(teacher * np.eye(2) + h)
    cfg = {"name": "synthetic", "replicas": replicas, "steps": 100 * (snapshots - 1),
           "model": {"name": "teacher_student", "n": 2, "teacher_eigs": [teacher, teacher]},
           "sweep": [{"lr": [p["lr"] for p in points[:3]], "batch_size": [16]},
                     {"lr": [0.1], "batch_size": [p["batch_size"] for p in points[3:]]}]}
    manifest = {"config": cfg, "points": points, "steps": list(range(0, 100 * snapshots, 100))}
    arrays = {"eigs": eigs, "diverged": np.zeros((len(points), replicas), bool)}
    axes = {"eigs": ("point", "replica", "snapshot", "level"), "diverged": ("point", "replica")}
    return Results(manifest, arrays, axes)


POINTS = [dict(lr=a, batch_size=16, init_std=0.1, noise=0.1) for a in (0.1, 0.2, 0.4)] + \
         [dict(lr=0.1, batch_size=b, init_std=0.1, noise=0.1) for b in (4, 32)]


@pytest.mark.parametrize("slope", [1.0, 1.3])
def test_synthetic_collapse_recovers_slope(slope):
    res = synthetic_ts(POINTS, slope=slope)
    an = scaling.analyse(res, start=0)
    for q in ("mean_s", "sqrtpi_sigma"):
        f = an.fits[q]
        assert abs(f.slope - slope) < 5 * f.slope_err, (q, f.slope, f.slope_err)
        assert f.slope_err < 0.02 * slope  # the test has power: a 10% error would be visible
    # blocks read from the sweep tables; per-point deviations are relative to theory (slope 1)
    assert len(an.blocks) == 2 and {s.block for s in an.stats} == {0, 1}
    dev = an.fits["mean_s"].deviation
    assert np.allclose(dev, slope - 1.0, atol=0.05)
    # (0.4, 16) and (0.1, 4) share α/|B|, but the synthetic widths follow the exact τ²
    assert [(c.point_a, c.point_b) for c in an.comparisons] == [(2, 3)]
    assert an.pooled_ks[1] > 1e-3  # GOE pairs follow the β = 1 surmise
    assert an.pooled_ks_poisson[1] < 1e-6


def test_synthetic_poisson_spacings_are_rejected():
    res = synthetic_ts(POINTS)
    rng = np.random.default_rng(1)
    # levels without repulsion: independent Gaussians, spacing density finite at 0
    res.arrays["eigs"] = np.sort(2.0 + 0.01 * rng.normal(size=res["eigs"].shape), axis=-1)
    an = scaling.analyse(res, start=0)
    assert an.pooled_ks[1] < 1e-6


def test_fit_through_origin():
    x = np.array([1.0, 2.0, 3.0])
    f = scaling.fit_through_origin(x, 2 * x, np.full(3, 0.1), theory=2.0)
    assert f.slope == pytest.approx(2.0) and f.chi2_dof == pytest.approx(0.0)
    assert f.slope_err == pytest.approx(0.1 / math.sqrt(14.0))
    assert np.allclose(f.deviation, 0) and np.allclose(f.pull, 0)


TS_ONLINE = """
name = "ts_test"
seed = 3
replicas = 256
steps = 600
snapshot_every = 50
[model]
name = "teacher_student"
n = 2
teacher_eigs = [2.0, 2.0]
noise = 0.1
[train]
init_std = 0.1
[data]
protocol = "online"
[[sweep]]
lr = [0.1]
batch_size = [16]
[[sweep]]
lr = [0.05]
batch_size = [8]
[[sweep]]
lr = [0.1]
batch_size = [8]
"""


@pytest.fixture(scope="module")
def ts_online(tmp_path_factory):
    path = tmp_path_factory.mktemp("ts") / "cfg.toml"
    path.write_text(TS_ONLINE)
    return dbm.run(path)


def test_ts_online_mean_spacing_and_surmise(ts_online):
    """⟨S⟩ = sqrt(2π) τ within 5 standard errors, spacings follow the β = 1 surmise."""
    an = scaling.analyse(ts_online, start=4)  # step ≥ 200: 20 relaxation times at α = 0.1
    for s in an.stats:
        want = stationary_mean_spacing(s.hp["lr"], s.hp["batch_size"], 0.1)
        assert s.scale == pytest.approx(want)
        assert abs(s.mean_s - want) < 5 * s.mean_s_err, (s.hp, s.mean_s, want, s.mean_s_err)
        assert s.mean_s_err < 0.03 * want
        assert abs(s.sqrtpi_sigma - want) < 5 * s.sqrtpi_sigma_err
        assert s.ks_p > 1e-3
        assert s.ks_poisson_p < 1e-6


def test_ts_equal_temperature_spectra_agree(ts_online):
    """(α, |B|) and (α/2, |B|/2) give statistically equal pair spacings; halving only |B| does not."""
    an = scaling.analyse(ts_online, start=4)
    (same,) = an.comparisons
    assert {same.point_a, same.point_b} == {0, 1}
    assert same.ks_p > 1e-3
    # negative control with the same machinery: (0.1, 16) vs (0.1, 8), α/|B| doubled
    spec = an.spectrum
    a, b = (scaling.pair_levels(ts_online, spec, p, 0, 4) for p in (0, 2))
    sa, sb = an.stats[0], an.stats[2]
    _, p = scaling.ks_2samp_neff(a[..., 1] - a[..., 0], b[..., 1] - b[..., 0], sa.n_eff, sb.n_eff)
    assert p < 1e-6
