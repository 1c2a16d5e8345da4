"""Gaussian RBM trained by the engine (SCIENCE.md §3.2): fixed points of σ_h² ξ².

Target: free field on a periodic chain of 6 sites with m² = 1, κ = 1, 2, 2, 4, 4, 5; with
μ² = 3.5 the modes κ = 1 and the pair κ = 2 are learnt (σ_h² ξ² = μ² − κ = 2.5, 1.5, 1.5) and
κ = 4, 4, 5 are cut off (σ_h² ξ² → 0). Tolerances come from the SGD fluctuation scale
``δ = sqrt((α/|B|)(μ² − κ))`` of the linear-scaling rule: each level's stationary mean sits
within ``2δ`` of its fixed point (the pair's levels split by ``⟨S⟩/2 ~ δ/2``, the centre shifts
by ``O(α/|B|)``), while a wrong fixed point would miss by ``O(1)``.
"""

from __future__ import annotations

import math

import numpy as np

import dysonbm as dbm
from dysonbm.models.gaussian_rbm import fixed_points, lattice_eigenvalues

CFG = """
name = "rbm_test"
seed = 1
replicas = 48
steps = 1200
snapshot_every = 120
[model]
name = "gaussian_rbm"
n_visible = 6
n_hidden = {n_hidden}
mu2 = 3.5
m2 = 1.0
sigma_h = 1.0
gibbs_steps = 3
data_term = "exact"
[train]
lr = 0.05
batch_size = 16
init_std = 0.1
[run]
segment_snapshots = 10
"""

LR, BS, MU2 = 0.05, 16, 3.5


def _run(tmp_path, n_hidden):
    path = tmp_path / f"rbm{n_hidden}.toml"
    path.write_text(CFG.format(n_hidden=n_hidden))
    return dbm.run(path)


def _stationary(res):
    assert not res.diverged.any()
    xi2 = res["xi2"][0][:, len(res.steps) // 2:, ::-1]  # (R, T, N_h), descending like fixed_points
    return xi2.reshape(-1, xi2.shape[-1])


def test_levels_converge_to_mu2_minus_kappa_or_zero(tmp_path):
    kappa = lattice_eigenvalues(6, 1.0)
    target = fixed_points(kappa, MU2, 1.0, 6)
    assert np.allclose(target, [2.5, 1.5, 1.5, 0, 0, 0])
    x = _stationary(_run(tmp_path, 6))
    mean = x.mean(axis=0)
    for j, t in enumerate(target):
        if t > 0:
            delta = math.sqrt(LR / BS * t)
            assert abs(mean[j] - t) < 2 * delta, (j, mean[j], t, delta)
        else:
            # cut-off modes: σ_h² ξ² → 0, far below the smallest learnt level
            assert mean[j] < 0.05 * 1.5, (j, mean[j])
    # the pair is split by the noise (level repulsion), not degenerate
    s = x[:, 1] - x[:, 2]
    assert np.all(s > 0) and s.mean() > 0.1 * math.sqrt(LR / BS * 1.5)


def test_fewer_hidden_units_learn_only_the_softest_modes(tmp_path):
    x = _stationary(_run(tmp_path, 2))
    target = fixed_points(lattice_eigenvalues(6, 1.0), MU2, 1.0, 2)
    assert np.allclose(target, [2.5, 1.5])
    mean = x.mean(axis=0)
    for j, t in enumerate(target):
        assert abs(mean[j] - t) < 2 * math.sqrt(LR / BS * t), (j, mean[j], t)
