"""Exact stationary law of the teacher–student update with fresh data every step
(dysonbm.models.teacher_student, SCIENCE.md §3.1).

The Monte Carlo check integrates E ← E − α (E C_B − A ā) directly in numpy, with no use of
the recursion, so it tests the fourth moments and the solve independently. Its standard
errors come from the spread of per-replica means (replicas are independent).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from dysonbm.analysis import scaling
from dysonbm.models.teacher_student import (
    gaussian_mean_norm,
    second_moment_map,
    stationary_covariance,
    stationary_mean_spacing,
    stationary_offdiag_var,
    stationary_tau2,
)

A = 0.1


@pytest.mark.parametrize("lr, batch, ratio", [(0.1, 16, 0.997), (0.1, 4, 0.987), (0.5, 16, 0.980), (0.8, 16, 0.960)])
def test_offdiag_variance_below_leading_order(lr, batch, ratio):
    assert stationary_offdiag_var(lr, batch, A) / stationary_tau2(lr, batch, A) == pytest.approx(ratio, abs=1e-3)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("lr, batch", [(0.1, 4), (0.8, 16), (1.5, 32)])
def test_solve_matches_isotropic_closed_form(n, lr, batch):
    """Σ = a δ_ik δ_jl + b δ_il δ_jk + c δ_ij δ_kl with a, b, c solved by hand (module docstring)."""
    g, h, q = (1 - lr) ** 2, lr**2 / batch, lr**2 * A**2 / batch
    den = (1 - g - h) * (1 - g + h)
    a = q * (1 - g) / ((1 - g - h) * (1 - g - (n + 1) * h))
    b, c = q * (1 - g) / den, q * h / den
    d = np.eye(n)
    want = (a * np.einsum("ik,jl->ijkl", d, d) + b * np.einsum("il,jk->ijkl", d, d)
            + c * np.einsum("ij,kl->ijkl", d, d)).reshape(n * n, n * n)
    np.testing.assert_allclose(stationary_covariance(lr, batch, A, n), want, rtol=1e-10, atol=1e-14)
    eps = lr / (batch * (2 - lr))
    assert stationary_offdiag_var(lr, batch, A, n) == pytest.approx(
        stationary_tau2(lr, batch, A, n) * (1 - n * eps / 2) / (1 - eps**2), rel=1e-10)
    # the stability test uses ρ(T) in closed form
    t, _ = second_moment_map(lr, batch, A, n)
    assert max(abs(np.linalg.eigvals(t))) == pytest.approx((1 - lr) ** 2 + (n + 1) * lr**2 / batch, rel=1e-10)


def test_no_stationary_state_raises():
    with pytest.raises(ValueError, match=r"lr = 2.5, batch_size = 16"):
        stationary_covariance(2.5, 16, A)
    edge = 2 / (1 + 3 / 16)  # where τ²'s denominator vanishes
    with pytest.raises(ValueError):
        stationary_offdiag_var(edge * 1.001, 16, A)
    assert stationary_offdiag_var(edge * 0.999, 16, A) > 0


def test_gaussian_mean_norm():
    tau = 0.037
    assert abs(gaussian_mean_norm(4 * tau**2 * np.eye(2)) - math.sqrt(2 * math.pi) * tau) < 1e-10
    # anisotropic and correlated: Gauss–Legendre over the angle, E|z| = sqrt(π/2) ⟨sqrt(θᵀ Λ θ)⟩_θ
    rot = np.array([[math.cos(0.4), -math.sin(0.4)], [math.sin(0.4), math.cos(0.4)]])
    for lam in ((1.0, 0.3), (2.0, 0.02), (0.5, 0.0)):
        cov = rot @ np.diag(lam) @ rot.T
        x, w = np.polynomial.legendre.leggauss(400)
        th = (x + 1) * math.pi / 4  # [0, π/2]: a quarter period of the integrand
        mean_r = np.sum(w * np.sqrt(lam[0] * np.cos(th) ** 2 + lam[1] * np.sin(th) ** 2)) / 2
        assert gaussian_mean_norm(cov) == pytest.approx(math.sqrt(math.pi / 2) * mean_r, rel=1e-10)


def simulate(lr, batch, replicas=20000, burn=30, every=8, samples=5, seed=0):
    """(R, samples, 4) snapshots of vec E from the update itself, started at E = 0."""
    rng = np.random.default_rng(seed)
    e = np.zeros((replicas, 2, 2))
    out = []
    for step in range(burn + every * (samples - 1) + 1):
        x = rng.standard_normal((replicas, batch, 2))
        c = np.einsum("rbi,rbj->rij", x, x) / batch
        # mean of |B| GOE matrices (off-diagonal variance 1, diagonal 2) is GOE with variance / |B|
        g = rng.standard_normal((replicas, 2, 2))
        a = (g + np.swapaxes(g, -1, -2)) / math.sqrt(2.0 * batch)
        e = e - lr * (e @ c - A * a)
        if step >= burn and (step - burn) % every == 0:
            out.append(e.reshape(replicas, 4))
    return np.stack(out, axis=1)


def mean_and_se(per_sample):
    """Mean over replicas and snapshots, s.e. from the per-replica means."""
    per_rep = per_sample.mean(axis=1)
    return per_rep.mean(axis=0), per_rep.std(axis=0, ddof=1) / math.sqrt(per_rep.shape[0])


@pytest.mark.parametrize("lr, batch", [(0.5, 16), (0.8, 16)])
def test_monte_carlo_agrees_with_exact_law(lr, batch):
    vec = simulate(lr, batch)
    # every second moment, not only the reported ones
    prods = vec[..., :, None] * vec[..., None, :]
    m, se = mean_and_se(prods.reshape(*vec.shape[:2], 16))
    exact = stationary_covariance(lr, batch, A).ravel()
    assert np.all(np.abs(m - exact) < 5 * se), (m - exact) / se
    s12 = 0.5 * (vec[..., 1] + vec[..., 2])
    v, v_se = mean_and_se(s12**2)
    spacing = np.hypot(vec[..., 0] - vec[..., 3], 2 * s12)
    s, s_se = mean_and_se(spacing)
    assert abs(v - stationary_offdiag_var(lr, batch, A)) < 5 * v_se
    assert abs(s - stationary_mean_spacing(lr, batch, A)) < 5 * s_se
    tau2 = stationary_tau2(lr, batch, A)
    if lr == 0.8:  # the leading-order formula is resolved and rejected
        assert abs(v - tau2) > 5 * v_se
        assert abs(s - math.sqrt(2 * math.pi * tau2)) > 5 * s_se


def test_predicted_scale_is_exact_law():
    hp = dict(lr=0.8, batch_size=16, noise=A)
    deg = SimpleNamespace(points=[hp], config={"model": {"name": "teacher_student", "n": 2, "teacher_eigs": [2, 2]}})
    assert scaling.predicted_scale(deg, None, 0, 0) == pytest.approx(stationary_mean_spacing(0.8, 16, A), rel=1e-12)
    # isotropic law: the 2×2 elliptic route and sqrt(2π v) coincide
    assert stationary_mean_spacing(0.8, 16, A) == pytest.approx(
        math.sqrt(2 * math.pi * stationary_offdiag_var(0.8, 16, A)), rel=1e-12)
    three = SimpleNamespace(points=[hp], config={"model": {"name": "teacher_student", "n": 3,
                                                           "teacher_eigs": [1, 2, 2]}})
    want = math.sqrt(2 * math.pi * stationary_offdiag_var(0.8, 16, A, 3))
    assert scaling.predicted_scale(three, None, 0, 0) == pytest.approx(want, rel=1e-12)
    unstable = SimpleNamespace(points=[dict(hp, lr=2.5)], config=deg.config)
    assert math.isnan(scaling.predicted_scale(unstable, None, 0, 0))
    assert scaling.theory_slope(deg) == 1.0
