"""The weighted level SDE kernel (`dysonbm.sde.LevelSDE`, `integrate_levels`) and its identity with
`DysonBM`: one split step (`dysonbm.sde.split`) for both.

Statistical tests use fixed keys and tolerances of 5 standard errors of the estimator (KS
tests: p > 1e-3).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dysonbm import sde

from conftest import enable_x64

KEY = jax.random.key(20250214)


def dbm_coefficients(n_rep, n, c, gamma, centre):
    """Uniform couplings Ṽ_ij = c (i ≠ j), Ṽ_ii = 2c and drift −γ (x − centre): with D = T c this
    is the β = 1 Dyson Brownian motion dx_i = [−γ(x_i − centre) + D Σ_j 1/(x_i − x_j)] dτ +
    sqrt(2D) dB_i (SCIENCE.md §2), whose levels about ``centre`` form the GOE Coulomb gas."""
    pair = c * (jnp.ones((n, n)) + jnp.eye(n))
    return sde.level_coefficients(jnp.full((n_rep, n), gamma * centre), jnp.broadcast_to(pair, (n_rep, n, n)),
                                  stiffness=gamma)


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
    x, info = sde.integrate_levels(jax.random.split(KEY, R), jnp.broadcast_to(jnp.asarray(x0, jnp.float32), (R, n)),
                                   coef, jnp.full(R, T), jnp.full(R, tau), courant=0.1, max_steps=200_000)
    x = np.asarray(x, dtype=float)
    assert np.all(np.diff(x, axis=1) > 0) and np.all(np.isfinite(x))
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
    x, _ = sde.integrate_levels(jax.random.split(KEY, R), x0, coef, jnp.full(R, T), jnp.full(R, tau), courant=0.1,
                                max_steps=200_000)
    s2 = np.sum((np.asarray(x, dtype=float) - centre) ** 2, axis=1)
    exact = second_moment(tau, np.sum(np.linspace(-2.0, 2.0, n) ** 2), T * c, gamma, n)
    assert abs(s2.mean() - exact) > 5 * s2.std(ddof=1) / np.sqrt(R)


PAIR = np.array([[0.3, 0.2], [0.2, 0.5]])  # unequal noise on the two levels


def isolated_pair(random_bonds, R=4000, T=1.0, tau=5.0, g0=0.1):
    coef = sde.level_coefficients(jnp.zeros((R, 2)), jnp.broadcast_to(jnp.asarray(PAIR, jnp.float32), (R, 2, 2)))
    x0 = jnp.broadcast_to(jnp.asarray([100.0 - g0, 100.0]), (R, 2))
    x, info = sde.integrate_levels(jax.random.split(KEY, R), x0, coef, jnp.full(R, T), jnp.full(R, tau), max_steps=1,
                                   random_bonds=random_bonds)
    assert np.all(np.asarray(info["steps"]) == 1)
    assert np.all(np.asarray(x[:, 1] > x[:, 0]))
    return np.asarray(x[:, 1] - x[:, 0], dtype=float) ** 2


@pytest.mark.parametrize("random_bonds", [True, False])
def test_isolated_pair_gap_grows_by_the_exact_mean_at_any_step(random_bonds):
    """Two free levels: E g² grows by T(Ṽ_11 + Ṽ_22 + 4Ṽ_12) τ exactly (the pair SDE's mean),
    even when the whole interval is one sub-step, and the pair never crosses."""
    T, tau, g0 = 1.0, 5.0, 0.1
    g2 = isolated_pair(random_bonds, T=T, tau=tau, g0=g0)
    exact = g0**2 + T * (PAIR[0, 0] + PAIR[1, 1] + 4 * PAIR[0, 1]) * tau
    assert abs(g2.mean() - exact) < 5 * g2.std(ddof=1) / np.sqrt(g2.size)


def test_random_bonds_give_the_exact_gap_law_of_an_isolated_pair():
    """The gap g of the pair SDE is a Bessel process of dimension δ = 1 + 4Ṽ_12/(Ṽ_11 + Ṽ_22):
    g²/(sτ) is non-central χ²_δ(g0²/(sτ)), s = T(Ṽ_11 + Ṽ_22), after one sub-step of any length.
    The mean couplings have the right mean but not this law (the check can fail)."""
    T, tau, g0 = 1.0, 5.0, 0.1
    s = T * (PAIR[0, 0] + PAIR[1, 1])
    law = stats.ncx2(df=1 + 4 * T * PAIR[0, 1] / s, nc=g0**2 / (s * tau))
    assert stats.kstest(isolated_pair(True, T=T, tau=tau, g0=g0) / (s * tau), law.cdf).pvalue > 1e-3
    assert stats.kstest(isolated_pair(False, T=T, tau=tau, g0=g0) / (s * tau), law.cdf).pvalue < 1e-6


def test_ordered_finite_and_nonnegative_at_large_steps():
    """A strong, uneven Coulomb gas squeezed by drifts against x = 0, on a tiny step budget:
    every sub-step is forced far beyond the control, yet the levels stay ordered, ≥ 0, finite."""
    R, n = 64, 16
    k1, k2, k3 = jax.random.split(KEY, 3)
    a = jax.random.uniform(k1, (R, n, n), minval=0.0, maxval=5.0)
    pair = a + jnp.swapaxes(a, 1, 2)
    drift = -jax.random.uniform(k2, (R, n), minval=0.0, maxval=50.0)  # every level pushed to 0
    x0 = jax.random.uniform(k3, (R, n), maxval=1e-3)  # nearly degenerate, any order
    coef = sde.level_coefficients(drift, pair)
    x, info = sde.integrate_levels(jax.random.split(KEY, R), x0, coef, jnp.full(R, 10.0), jnp.full(R, 1e3), max_steps=8)
    x = np.asarray(x)
    assert np.all(np.isfinite(x))
    assert np.all(x >= 0)
    assert np.all(np.diff(x, axis=1) >= 0)
    assert np.all(np.asarray(info["forced"]) > 0)
    # plain Euler–Maruyama with the same step crosses and produces nonsense: the control matters
    h = 1e3 / 8
    xs = jnp.sort(x0, axis=1)
    euler = np.asarray(xs + h * jax.vmap(sde.level_velocity, in_axes=(0, 0, None))(xs, coef, 10.0))
    assert np.any(np.diff(euler, axis=1) < 0) or np.any(euler < 0) or not np.all(np.isfinite(euler))


def test_stiffness_is_integrated_exactly():
    """No noise, no coupling: x(τ) = x* + (x0 − x*) e^{−γτ} for drift γ(x* − x), for γτ ≫ 1 too."""
    R, n = 3, 4
    gamma = jnp.asarray([0.0, 50.0, 2.0, 0.5], jnp.float32)
    target = jnp.asarray([10.0, 20.0, 30.0, 40.0])
    coef = sde.level_coefficients(jnp.broadcast_to(gamma * target, (R, n)), jnp.zeros((R, n, n)),
                                  stiffness=jnp.broadcast_to(gamma, (R, n)))
    x0 = jnp.broadcast_to(jnp.asarray([12.0, 25.0, 35.0, 45.0]), (R, n))
    x, _ = sde.integrate_levels(jax.random.split(KEY, R), x0, coef, jnp.ones(R), jnp.full(R, 3.0))
    exact = target + (x0[0] - target) * jnp.exp(-gamma * 3.0)
    np.testing.assert_allclose(np.asarray(x[0]), np.asarray(exact), rtol=1e-5)


def test_uniform_weights_run_the_dyson_step():
    """`LevelSDE` with Ṽ_ij = c, Ṽ_ii = 2c, stiffness γ and DysonBM's step control (θ only, its
    budget, no reflection) is `DysonBM` with D = Tc, U = γλ²/2: one step from the same levels
    with the same keys gives the same levels and sub-steps (up to the rounding of the weighted
    far-field sum), at the recommended dt and at 300× it (sub-stepped)."""
    n, R, T, c, gamma = 24, 64, 2.0, 0.5, 1.5
    D = T * c
    dbm = sde.DysonBM(n, start="semicircle")
    lvl = sde.LevelSDE(n, control=sde.Control(theta=dbm.theta, max_substeps=dbm.max_substeps))
    keys = jax.random.split(KEY, R)
    with enable_x64():
        y0 = jax.vmap(lambda k: sde.sample_hermite(k, n, 1.0, (D / gamma) ** 0.5))(keys)
        for dt in (1.0, 300.0):
            dt = dt * sde.recommended_dt(n, D, gamma)
            hp_d = {**dbm.defaults(), "D": D, "gamma": gamma, "dt": dt}
            hp_l = {"drift": jnp.zeros(n), "pair": c * (jnp.ones((n, n)) + jnp.eye(n)), "ito": jnp.zeros(n),
                    "stiffness": jnp.full(n, gamma), "x0": jnp.zeros(n), "T": T, "dt": dt}
            zero = jnp.zeros((), jnp.int32)
            a = jax.vmap(lambda y, k: dbm.step(sde.LevelState(y, zero, zero, zero), k, hp_d))(y0, keys)
            b = jax.vmap(lambda y, k: lvl.step(sde.LevelState(y, zero, zero, zero), k, hp_l))(y0, keys)
            np.testing.assert_allclose(np.asarray(b.y), np.asarray(a.y), rtol=1e-9, atol=1e-9)
            np.testing.assert_array_equal(np.asarray(b.substeps), np.asarray(a.substeps))
            assert dt < 2 * sde.recommended_dt(n, D, gamma) or np.any(np.asarray(a.substeps) > 1)


def test_level_sde_process_through_the_driver():
    """`simulate` runs `LevelSDE` with shared (K,) coefficients and per-replica T; bad input
    raises one ValueError naming the field."""
    n, R = 6, 200
    gamma, c = 1.0, 0.5
    coef = dbm_coefficients(1, n, c, gamma, 30.0)
    hp = {**{k: v[0] for k, v in coef._asdict().items()}, "x0": 30.0 + jnp.linspace(-1, 1, n), "dt": 0.5,
          "T": jnp.linspace(1.0, 2.0, R)}
    obs = sde.simulate(sde.LevelSDE(n), hp, KEY, R, 8, save_every=4)
    lv = np.asarray(obs["levels"])
    assert lv.shape == (R, 2, n) and np.all(np.diff(lv, axis=-1) > 0)
    assert set(obs) >= {"levels", "min_gap", "substeps", "forced", "time"}
    # stationary after 4/γ: E Σ(x − centre)² = T c n(n+1)/(2γ) per replica, pooled over T
    s2 = np.sum((lv[:, -1] - 30.0) ** 2, axis=-1)
    exact = np.asarray(hp["T"]) * c * n * (n + 1) / (2 * gamma)
    z = (s2 - exact).mean() / ((s2 - exact).std(ddof=1) / np.sqrt(R))
    assert abs(z) < 5
    with pytest.raises(ValueError, match="pair"):
        sde.LevelSDE(n).validate({**hp, "pair": jnp.ones((n, n + 1))})
    with pytest.raises(ValueError, match="T must be >= 0"):
        sde.LevelSDE(n).validate({**hp, "T": -1.0})
