"""The level SDE integrator and the cross-check helpers of `dysonbm.analysis.level_sde`.

Statistical tests use fixed keys and tolerances of 5 standard errors of the estimator.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dysonbm.analysis import level_sde as pl
from dysonbm.models import multilayer
from dysonbm.models.multilayer import Multilayer

from conftest import enable_x64

KEY = jax.random.key(20250214)


def dbm_coefficients(n_rep, n, c, gamma, centre):
    """Uniform couplings Ṽ_ij = c (i ≠ j), Ṽ_ii = 2c and drift −γ (x − centre): with D = T c this
    is the β = 1 Dyson Brownian motion dx_i = [−γ(x_i − centre) + D Σ_j 1/(x_i − x_j)] dτ +
    sqrt(2D) dB_i (SCIENCE.md §2), whose levels about ``centre`` form the GOE Coulomb gas."""
    pair = c * (jnp.ones((n, n)) + jnp.eye(n))
    return pl.coefficients(jnp.full((n_rep, n), gamma * centre), jnp.broadcast_to(pair, (n_rep, n, n)), stiffness=gamma)


def second_moment(tau, m0, D, gamma, n):
    """E Σ_i (x_i − centre)² at time τ for the β = 1 DBM above, exactly: the generator gives
    d/dτ m = −2γ m + D n(n + 1), so m relaxes to D n(n+1)/(2γ) at the rate 2γ. At large n
    this is n R²/4 with the semicircle radius R = sqrt(2βnD/γ)."""
    eq = D * n * (n + 1) / (2 * gamma)
    return eq + (m0 - eq) * np.exp(-2 * gamma * tau)


@pytest.mark.parametrize("tau", [0.4, 4.0])
def test_uniform_couplings_reproduce_the_dyson_second_moment(tau):
    n, R = 12, 1500
    T, c, gamma, centre = 2.0, 0.5, 1.0, 40.0
    D = T * c
    x0 = centre + np.linspace(-2.0, 2.0, n)  # wider than the equilibrium spread at τ = 0.4
    coef = dbm_coefficients(R, n, c, gamma, centre)
    # a budget that never binds: the step is always the controlled one
    x, info = pl.integrate(jax.random.split(KEY, R), jnp.broadcast_to(jnp.asarray(x0, jnp.float32), (R, n)), coef,
                           jnp.full(R, T), jnp.full(R, tau), courant=0.1, max_steps=200_000)
    x = np.asarray(x, dtype=float)
    assert np.all(np.diff(x, axis=1) <= 0) and np.all(np.isfinite(x))
    # the accuracy claim is for controlled steps: the budget may only bind in rare triple clusters
    assert np.sum(info["forced"]) <= 1e-3 * np.sum(info["steps"])
    y = x - centre
    s2 = np.sum(y * y, axis=1)
    exact = second_moment(tau, np.sum((x0 - centre) ** 2), D, gamma, n)
    se = s2.std(ddof=1) / np.sqrt(R)
    assert abs(s2.mean() - exact) < 5 * se, (s2.mean(), exact, se)
    # the centre of mass is an Ornstein–Uhlenbeck process: mean 0, variance n D (1 − e^{−2γτ})/γ
    com = y.sum(axis=1)
    var = n * D * (1 - np.exp(-2 * gamma * tau)) / gamma
    assert abs(com.mean()) < 5 * np.sqrt(var / R)


def test_the_moment_check_can_fail():
    """The same estimator sees a 3 % error in the coupling: the test above is not vacuous."""
    n, R, tau = 12, 1500, 4.0
    T, c, gamma, centre = 2.0, 0.5, 1.0, 40.0
    coef = dbm_coefficients(R, n, c * 1.03, gamma, centre)
    x0 = jnp.broadcast_to(jnp.asarray(centre + np.linspace(-2.0, 2.0, n), jnp.float32), (R, n))
    x, _ = pl.integrate(jax.random.split(KEY, R), x0, coef, jnp.full(R, T), jnp.full(R, tau), courant=0.1,
                        max_steps=200_000)
    s2 = np.sum((np.asarray(x, dtype=float) - centre) ** 2, axis=1)
    exact = second_moment(tau, np.sum(np.linspace(-2.0, 2.0, n) ** 2), T * c, gamma, n)
    assert abs(s2.mean() - exact) > 5 * s2.std(ddof=1) / np.sqrt(R)


def test_isolated_pair_gap_grows_by_the_exact_mean_at_any_step():
    """Two free levels: E g² grows by T(Ṽ_11 + Ṽ_22 + 4Ṽ_12) τ exactly (the pair SDE's mean),
    even when the whole interval is one sub-step, and the pair never crosses."""
    R, T, tau = 4000, 1.0, 5.0
    pair = np.array([[0.3, 0.2], [0.2, 0.5]])
    coef = pl.coefficients(jnp.zeros((R, 2)), jnp.broadcast_to(jnp.asarray(pair, jnp.float32), (R, 2, 2)))
    x0 = jnp.broadcast_to(jnp.asarray([100.0, 99.9]), (R, 2))
    x, info = pl.integrate(jax.random.split(KEY, R), x0, coef, jnp.full(R, T), jnp.full(R, tau), max_steps=1)
    assert np.all(np.asarray(info["steps"]) == 1)
    g2 = np.asarray(x[:, 0] - x[:, 1], dtype=float) ** 2
    exact = 0.1**2 + T * (pair[0, 0] + pair[1, 1] + 4 * pair[0, 1]) * tau
    assert abs(g2.mean() - exact) < 5 * g2.std(ddof=1) / np.sqrt(R)
    assert np.all(np.asarray(x[:, 0] > x[:, 1]))


def test_ordered_finite_and_nonnegative_at_large_steps():
    """A strong, uneven Coulomb gas squeezed by drifts against x = 0, on a tiny step budget:
    every sub-step is forced far beyond the control, yet the levels stay ordered, ≥ 0, finite."""
    R, n = 64, 16
    k1, k2, k3 = jax.random.split(KEY, 3)
    a = jax.random.uniform(k1, (R, n, n), minval=0.0, maxval=5.0)
    pair = a + jnp.swapaxes(a, 1, 2)
    drift = -jax.random.uniform(k2, (R, n), minval=0.0, maxval=50.0)  # every level pushed to 0
    x0 = jnp.sort(jax.random.uniform(k3, (R, n), maxval=1e-3), axis=1)  # nearly degenerate, any order
    x, info = pl.integrate(jax.random.split(KEY, R), x0, pl.coefficients(drift, pair), jnp.full(R, 10.0),
                           jnp.full(R, 1e3), max_steps=8)
    x = np.asarray(x)
    assert np.all(np.isfinite(x))
    assert np.all(x >= 0)
    assert np.all(np.diff(x, axis=1) <= 0)
    assert np.all(np.asarray(info["forced"]) > 0)
    # plain Euler–Maruyama with the same step crosses and produces nonsense: the control matters
    h = 1e3 / 8
    v = jax.vmap(pl.level_velocity, in_axes=(0, 0, None))(jnp.sort(x0, axis=1)[:, ::-1], pl.coefficients(drift, pair), 10.0)
    euler = np.asarray(jnp.sort(x0, axis=1)[:, ::-1] + h * v)
    assert np.any(np.diff(euler, axis=1) > 0) or np.any(euler < 0) or not np.all(np.isfinite(euler))


def test_stiffness_is_integrated_exactly():
    """No noise, no coupling: x(τ) = x* + (x0 − x*) e^{−γτ} for drift γ(x* − x), for γτ ≫ 1 too."""
    R, n = 3, 4
    gamma = jnp.asarray([0.5, 2.0, 50.0, 0.0], jnp.float32)
    target = jnp.asarray([40.0, 30.0, 20.0, 10.0])
    coef = pl.coefficients(jnp.broadcast_to(gamma * target, (R, n)), jnp.zeros((R, n, n)), stiffness=jnp.broadcast_to(gamma, (R, n)))
    x0 = jnp.broadcast_to(jnp.asarray([45.0, 35.0, 25.0, 12.0]), (R, n))
    x, _ = pl.integrate(jax.random.split(KEY, R), x0, coef, jnp.ones(R), jnp.full(R, 3.0))
    exact = target + (x0[0] - target) * jnp.exp(-gamma * 3.0)
    np.testing.assert_allclose(np.asarray(x[0]), np.asarray(exact), rtol=1e-5)


def test_level_terms_match_finite_differences_and_direct_formula():
    with enable_x64():
        model = Multilayer(level_sde=True)
        problem = model.problem(jax.random.key(0))
        test = jax.vmap(lambda k: model.sample(k, problem))(jax.random.split(jax.random.key(2), 64))
        w = model.init(jax.random.key(3), problem, {"init_std": 1.0})[0]
        observe = jax.jit(lambda v: model.observables(v, w, problem, test, {}))
        out = observe(w)
        x = np.asarray(out["gram"])
        uu, ss, vt = np.linalg.svd(np.asarray(w), full_matrices=False)
        for i in (0, 7, 15):  # singular index (descending); stored level j (ascending)
            j = len(ss) - 1 - i
            d = np.outer(uu[:, i], vt[i]) * 1e-5 * ss[i]
            hi, lo = (observe(w + sgn * d) for sgn in (1, -1))
            slope = (hi["level_drift"][j] - lo["level_drift"][j]) / (hi["gram"][j] - lo["gram"][j])
            np.testing.assert_allclose(out["level_stiffness"][j], -slope, rtol=1e-5, atol=1e-10)
        g = np.asarray(multilayer.per_sample_grads_from_features(w, problem["Z"], test["phi0"], test["y"]))
        U = np.linalg.eigh(np.asarray(w @ w.T))[1]
        ito = np.einsum("ai,nal->nil", U, g).var(axis=0).sum(axis=-1)
        np.testing.assert_allclose(out["level_ito"], ito, rtol=1e-8, atol=1e-14)
        assert np.all(np.diff(x) >= 0)


def test_regime_rule():
    z = {"u": 0.0, "d": 0.0, "top": 0.0}
    assert pl.regime({"u": 0.01, "d": -0.02, "top": 0.05}) == "frozen"
    assert pl.regime({"u": 0.5, "d": -0.2, "top": 0.4}, z) == "convergence"
    assert pl.regime({"u": 1.5, "d": 1.4, "top": 1.5}) == "growth"
    # a sign within two standard errors decides nothing
    assert pl.regime({"u": 1.5, "d": 0.3, "top": 1.5}, {"u": 0.1, "d": 0.2, "top": 0.1}) == "undetermined"
    assert pl.regime({"u": np.nan, "d": 1.0, "top": 1.0}) == "undetermined"


def test_log_changes():
    teacher = np.array([3.0, 1.0, 0.5])
    a = np.array([[2.0, 1.0, 0.0]])
    b = np.array([[5.0, 1.5, 0.0]])
    ch = pl.log_changes(a, b, teacher)
    np.testing.assert_allclose(ch["u"], np.log(2.5))
    np.testing.assert_allclose(ch["top"], np.log(2.5))
    np.testing.assert_allclose(ch["d"], np.log(2.0))  # max |x − x*|: 1 (level 1) → 2 (level 1)
