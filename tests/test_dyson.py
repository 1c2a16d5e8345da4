"""Physics checks of `dysonbm.sde`: eigenvalue SDEs against exact laws and matrix space.

Statistical tests use fixed keys and tolerances derived from the estimator's standard
error (5σ) or KS tests with Bonferroni-corrected thresholds. Heavy checks are marked slow.
Tests share process configurations (and replica counts) so that compiled programs are
reused: `simulate` compiles once per (process, replicas, snapshots).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from dysonbm import sde as dy
from dysonbm.sde import bonds
from conftest import enable_x64

KEY = jax.random.key(20240611)
R_CMP = 3000  # replicas of the level-by-level comparisons
R_REF = 12000  # draws of the exact references they are compared with


# --------------------------------------------------------------------------------------
# local reference laws (kept here so these tests do not depend on dysonbm.analysis.rmt)
# --------------------------------------------------------------------------------------
def semicircle_cdf(x, radius):
    x = np.clip(np.asarray(x, dtype=float), -radius, radius)
    return 0.5 + (x * np.sqrt(radius**2 - x**2) + radius**2 * np.arcsin(x / radius)) / (np.pi * radius**2)


def surmise_cdf(s, beta):
    """CDF of the Wigner surmise p(s) ∝ s^β exp(−a s²) (mean 1)."""
    s = np.asarray(s, dtype=float)
    a = {1: np.pi / 4, 2: 4 / np.pi, 4: 64 / (9 * np.pi)}[beta]
    return special.gammainc((beta + 1) / 2, a * s * s)


def mp_cdf(x, sigma2, c, n_grid=20001):
    """Marchenko–Pastur CDF (c < 1), integrated in θ with x = x₋ + Δ(1 − cos θ)/2."""
    lo, hi = sigma2 * (1 - np.sqrt(c)) ** 2, sigma2 * (1 + np.sqrt(c)) ** 2
    th = np.linspace(0.0, np.pi, n_grid)
    xs = lo + 0.5 * (hi - lo) * (1 - np.cos(th))
    dens = (0.5 * (hi - lo)) ** 2 * np.sin(th) ** 2 / (2 * np.pi * sigma2 * c * xs)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(th))])
    return np.interp(np.asarray(x, dtype=float), xs, cum / cum[-1], left=0.0, right=1.0)


def mean_ratio(levels):
    """⟨r⟩, r = min(S_i, S_{i+1})/max(…) over consecutive spacings of each spectrum."""
    g = np.diff(levels, axis=-1)
    return float(np.mean(np.minimum(g[..., 1:], g[..., :-1]) / np.maximum(g[..., 1:], g[..., :-1])))


def bulk_spacings(levels, radius):
    """Spacings of the middle half of each spectrum, unfolded with the semicircle, mean 1."""
    n = levels.shape[-1]
    u = n * semicircle_cdf(levels, radius)
    s = np.diff(u[..., n // 4 : 3 * n // 4], axis=-1).ravel()
    return s / s.mean()


def run(process, hp, n_replicas, n_steps, save_every=None, key=KEY):
    out = dy.simulate(process, hp, key, n_replicas, n_steps, save_every or n_steps)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def hermite(n, beta, scale, count, seed):
    keys = jax.random.split(jax.random.key(seed), count)
    return np.asarray(jax.vmap(lambda k: dy.sample_hermite(k, n, beta, scale))(keys), dtype=np.float64)


def laguerre(m, n, beta, scale2, count, seed):
    keys = jax.random.split(jax.random.key(seed), count)
    return np.asarray(jax.vmap(lambda k: dy.sample_laguerre(k, m, n, beta, scale2))(keys), dtype=np.float64)


def assert_ordered(out):
    assert np.isfinite(out["levels"]).all()
    assert np.isfinite(out["min_gap"]).all() and out["min_gap"].min() > 0


def levelwise_ks(a, b, alpha=1e-3):
    """Two-sample KS on each ordered level; the smallest p must pass Bonferroni at ``alpha``
    (family-wise: with fixed keys a test should fail by chance far less often than 1 %)."""
    n = a.shape[-1]
    p = np.array([stats.ks_2samp(a[:, i], b[:, i]).pvalue for i in range(n)])
    assert p.min() > alpha / n, f"level {p.argmin()} differs: p = {p.min():.2e} (threshold {alpha / n:.1e})"
    return p


DBM8 = dy.DysonBM(8, start="zero")  # U = γλ²/2, from the degenerate start
DBM64 = dy.DysonBM(64, start="zero")
WISHART = {(8, 8): dy.WishartProcess(8, 8), (12, 8): dy.WishartProcess(12, 8)}


# --------------------------------------------------------------------------------------
# diffusion of the free levels
# --------------------------------------------------------------------------------------
def test_free_levels_diffuse_with_2Dt():
    """Free DBM, N = 2: the centre of mass (λ1+λ2)/2 is a free Brownian motion (the repulsion
    cancels in the sum), variance 2Dt/N = Dt; and E Σλ² = Σλ0² + (2β + 4) D t exactly
    (d Σλ² = 2Σλ dλ + 4D dt, Σ_i λ_i Σ_j 1/(λ_i − λ_j) = 1), which the scheme keeps exactly
    for a pair. R is sized so that 5 standard errors of the variance are < 1 %."""
    n, D, dt, steps = 2, 0.7, 0.1, 2
    t = dt * steps
    R = 2**19
    rel_se = math.sqrt(2.0 / (R - 1))
    assert 5 * rel_se < 0.01
    p = dy.DysonBM(n, potential="free", start="given", initial_levels=(-0.3, 0.3))
    lv = run(p, {"D": D, "dt": dt}, R, steps)["levels"][:, -1]
    var = lv.mean(axis=1).var(ddof=1)
    assert abs(var / (2 * D * t / n) - 1) < 5 * rel_se
    m = (lv**2).sum(axis=1)
    assert abs(m.mean() - (0.18 + (2 * 1.0 + 4) * D * t)) < 5 * m.std() / math.sqrt(R)


# --------------------------------------------------------------------------------------
# stationary law: semicircle, surmise, ratio
# --------------------------------------------------------------------------------------
def test_stationary_semicircle_and_surmise_n64():
    """N = 64, β = 1, U = γλ²/2, from the degenerate start, at the recommended dt: levels stay
    ordered, the pooled density is the semicircle of radius sqrt(2βND/γ), bulk spacings
    follow the β = 1 surmise and ⟨r⟩ the GOE value."""
    n, D, gamma, beta = 64, 1.3, 0.8, 1.0
    per_unit = round(1.0 / dy.recommended_dt(n, D, gamma, beta))
    out = run(DBM64, {"D": D, "gamma": gamma, "dt": 1.0 / per_unit}, 96, 6 * per_unit, per_unit)
    assert_ordered(out)
    lv = out["levels"][:, 3:]  # t = 4, 5, 6 (γt ≥ 3.2): stationary
    radius = math.sqrt(2 * beta * n * D / gamma)
    # finite-N (N = 64) deviation of the exact law from the semicircle: 0.0034 in KS distance
    assert stats.kstest(lv.ravel(), lambda x: semicircle_cdf(x, radius)).statistic < 0.01
    # a radius off by 5 % fails
    assert stats.kstest(lv.ravel(), lambda x: semicircle_cdf(x, 1.05 * radius)).statistic > 0.01
    s = bulk_spacings(lv, radius)
    ds = stats.kstest(s, lambda x: surmise_cdf(x, 1)).statistic
    assert ds < 0.02, ds  # surmise vs exact GOE at N = 64: 0.009
    assert stats.kstest(s, lambda x: surmise_cdf(x, 2)).statistic > 0.05
    r = mean_ratio(lv[..., n // 4 : 3 * n // 4])
    assert abs(r - 0.5307) < 0.012, r  # 5σ for 288 spectra of 32 bulk levels


def test_stationary_matches_exact_coulomb_gas():
    """N = 16, β = 1.5 (a non-classical β): each ordered level of the scheme, started from
    the stationary law and run for 4 relaxation times (γt = 2), agrees with exact draws of the
    Coulomb gas (Dumitriu–Edelman β-Hermite); E Σλ² = DN(β(N−1) + 2)/(2γ)."""
    n, beta = 16, 1.5
    per_unit = round(1 / dy.recommended_dt(n, beta=beta))
    out = run(dy.DysonBM(n, start="semicircle"), {"beta": beta, "dt": 1 / per_unit}, R_CMP, 2 * per_unit)
    assert_ordered(out)
    sim = out["levels"][:, -1]
    levelwise_ks(sim, hermite(n, beta, 1.0, R_REF, 7))
    m_inf = n * (beta * (n - 1) + 2) / 2
    m = (sim**2).sum(axis=1)
    assert abs(m.mean() / m_inf - 1) < 5 * m.std() / math.sqrt(len(m)) / m_inf + 0.005


# --------------------------------------------------------------------------------------
# eigenvalue space vs matrix space
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [1, 2, 4])
def test_eigenvalue_sde_matches_matrix_sde(beta):
    """N = 8 from H = 0 (U = γλ²/2): the exact matrix OU process has, at t, the β-Hermite law
    of scale² = D(1 − e^{−2γt})/γ, and relaxes to E Σλ² = DN(β(N−1)+2)/(2γ) (radius
    sqrt(2βND/γ)); each ordered level of the eigenvalue scheme agrees with it (KS)."""
    n, D, gamma, t = 8, 0.5, 2.0, 0.5
    hp = {"D": D, "gamma": gamma}
    mat = run(dy.MatrixDBM(n, beta=beta), {**hp, "dt": t}, R_REF, 1, key=jax.random.key(5))["levels"][:, -1]
    levelwise_ks(mat, hermite(n, beta, math.sqrt(D * -math.expm1(-2 * gamma * t) / gamma), R_REF, 3))
    stat = run(dy.MatrixDBM(n, beta=beta), {**hp, "dt": 5.0}, R_REF, 1, key=jax.random.key(6))["levels"][:, -1]
    m = (stat**2).sum(axis=1)
    assert abs(m.mean() - D * n * (beta * (n - 1) + 2) / (2 * gamma)) < 5 * m.std() / math.sqrt(R_REF)
    eig = run(DBM8, {**hp, "beta": float(beta), "dt": t / 200}, R_CMP, 200)
    assert_ordered(eig)
    levelwise_ks(eig["levels"][:, -1], mat)


@pytest.mark.slow
def test_eigenvalue_sde_matches_matrix_sde_n64():
    n, R = 64, 2000
    hp = {"D": 1.0, "gamma": 1.0}
    eig = run(DBM64, {**hp, "dt": 1 / 400}, R, 400)
    assert_ordered(eig)
    mat = run(dy.MatrixDBM(n, beta=1), {**hp, "dt": 1.0}, R, 1, key=jax.random.key(5))
    levelwise_ks(eig["levels"][:, -1], mat["levels"][:, -1])


# --------------------------------------------------------------------------------------
# Wishart process
# --------------------------------------------------------------------------------------
def test_wishart_from_zero_is_marchenko_pastur():
    """W = 0 at t = 0, entries of variance D t at t: the pooled spectrum of X = WᵀW is
    Marchenko–Pastur with σ² = M D t, c = N/M, and agrees with exact draws."""
    m, n, D, t = 128, 64, 0.5, 2.0
    out = run(dy.WishartProcess(m, n), {"D": D, "dt": t / 150}, 48, 150)
    assert_ordered(out)
    x = out["levels"][:, -1]
    sigma2, c = m * D * t, n / m
    assert stats.kstest(x.ravel(), lambda v: mp_cdf(v, sigma2, c)).statistic < 0.01
    assert stats.kstest(x.ravel(), lambda v: mp_cdf(v, 1.05 * sigma2, c)).statistic > 0.01
    assert stats.ks_2samp(x.ravel(), laguerre(m, n, 1.0, D * t, 48, 9).ravel()).pvalue > 1e-3


@pytest.mark.parametrize("m,n,beta", [(8, 8, 1), (12, 8, 2)])
def test_wishart_matches_matrix_wishart(m, n, beta):
    """Eigenvalue scheme (in singular values) vs the exact matrix Brownian motion and exact
    β-Laguerre draws, level by level; (8, 8) is the square case, where the smallest singular
    value reflects at 0; β = 2 checks the β-generalised drift β D [M + Σ (x_i+x_j)/(x_i−x_j)]."""
    t = 1.0
    out = run(WISHART[m, n], {"beta": float(beta), "dt": t / 200}, R_CMP, 200)
    assert np.isfinite(out["levels"]).all() and out["levels"].min() >= 0 and out["min_gap"].min() > 0
    mat = run(dy.MatrixWishart(m, n, beta=beta), {"dt": t}, R_REF, 1, key=jax.random.key(4))["levels"][:, -1]
    levelwise_ks(out["levels"][:, -1], mat)
    levelwise_ks(mat, laguerre(m, n, float(beta), t, R_REF, 2))
    tr = out["levels"][:, -1].sum(axis=1)  # E tr X = β M N D t
    assert abs(tr.mean() - beta * m * n * t) < 5 * tr.std() / math.sqrt(R_CMP) + 0.005 * beta * m * n * t


def test_wishart_quadratic_stationary():
    """U = γx²/2 (W decays at rate γ/2): the stationary law is that of W with entries of
    variance D/γ, for the scheme and for the exact matrix process."""
    m, n, gamma = 6, 4, 2.0
    out = run(dy.WishartProcess(m, n, potential="quadratic"), {"gamma": gamma, "dt": 0.02}, R_CMP, 150)
    ref = laguerre(m, n, 1.0, 1.0 / gamma, R_REF, 8)
    levelwise_ks(out["levels"][:, -1], ref)
    mat = run(dy.MatrixWishart(m, n, start="stationary", gamma=gamma), {"dt": 0.5}, R_REF, 1, key=jax.random.key(6))
    levelwise_ks(mat["levels"][:, -1], ref)


# --------------------------------------------------------------------------------------
# weak order
# --------------------------------------------------------------------------------------
def test_weak_order_one():
    """E Σλ²(T) is known exactly (dm/dt = −2γm + βDN(N−1) + 2DN); its error at fixed T
    halves with dt: fitted order within [0.75, 1.35], the finest error resolved (> 5σ).
    N = 8 levels started 4× denser than stationary, so the repulsion dominates the error."""
    n, beta, T, R = 8, 1.0, 0.5, 2**15
    lv0 = tuple(np.linspace(-1.5, 1.5, n))
    m0, m_inf = sum(v * v for v in lv0), n * (beta * (n - 1) + 2) / 2
    exact = m_inf + (m0 - m_inf) * math.exp(-2 * T)
    p = dy.DysonBM(n, start="given", initial_levels=lv0)
    dts, errs, ses = [], [], []
    for steps in (4, 8, 16):
        m = (run(p, {"beta": beta, "dt": T / steps}, R, steps, key=jax.random.key(steps))["levels"][:, -1] ** 2).sum(axis=1)
        dts.append(T / steps)
        errs.append(m.mean() - exact)
        ses.append(m.std() / math.sqrt(R))
    errs, ses = np.array(errs), np.array(ses)
    assert np.all(errs > 5 * ses), (errs, ses)
    order = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 0.75 < order < 1.35, (order, errs)


# --------------------------------------------------------------------------------------
# stability
# --------------------------------------------------------------------------------------
def test_plain_euler_fails_where_split_holds():
    """At N = 64 and 5× the recommended dt, plain Euler–Maruyama lets levels cross and blow up
    (NaN) while the split scheme keeps them ordered with ⟨Σλ²⟩ within 3 %; from W = 0 the
    Wishart Euler step is 0/0 at once."""
    n, steps = 64, 6 * 50
    dt = 1 / 50  # 5.2 × recommended_dt(64)
    bad = run(DBM64.replace(scheme="euler"), {"dt": dt}, 96, steps, 50)
    broken = ~np.isfinite(bad["levels"]).all(axis=(1, 2)) | ~(np.nan_to_num(bad["min_gap"], nan=-1.0) > 0).all(axis=1)
    assert broken.mean() > 0.5
    good = run(DBM64, {"dt": dt}, 96, steps, 50)
    assert_ordered(good)
    m = (good["levels"][:, 3:] ** 2).sum(axis=-1)
    assert abs(m.mean() / (n * (n - 1 + 2) / 2) - 1) < 0.03
    assert np.isnan(run(WISHART[8, 8].replace(scheme="euler"), {"dt": 0.01}, 2, 1)["levels"]).any()


def test_huge_step_stays_ordered_and_finite():
    """Levels stay strictly ordered and finite for any dt, here 100× the recommended one."""
    out = run(DBM64, {"dt": 100 * dy.recommended_dt(64)}, 96, 6 * 4, 4)
    assert_ordered(out)
    assert (out["substeps"] > 1).any()  # the step control cut the steps
    out = run(WISHART[8, 8], {"dt": 10.0}, R_CMP, 10)
    assert_ordered(out)


def test_squeezed_bond_below_float_resolution():
    """A near-zero coupling between two strong ones, far from the origin: the neighbours
    squeeze the weak bond to below the float32 resolution of the positions. The Newton solve
    must stop within a few iterations (not run to max_iter) and either converge or say it did
    not; a converged solution is one Newton step of a few ulps from the exact prox (its
    residual, c/g at a gap of a few ulps, is not small: the gap is not representable), and
    the repulsion step stays ordered and moves no mean."""
    gaps = jnp.asarray([0.08, 0.1, 7e-5, 0.1, 0.08], jnp.float32)
    b = 11.6 + jnp.concatenate([jnp.zeros(1), jnp.cumsum(gaps)])
    c = bonds.Couplings(jnp.asarray([3e-4, 3e-4, 4e-9, 3e-4, 3e-4], jnp.float32))
    m, iters, converged = bonds._prox(b, c, jnp.float32(3e-3), 50)
    assert int(iters) < 10
    resolution = 16 * float(jnp.finfo(jnp.float32).eps) * 12.0
    if bool(converged):
        grad, q, w = bonds._barrier_terms(m, c)
        newton_step = bonds._solve_mmatrix(1.0 + q, w, grad + m - b)
        assert float(jnp.max(jnp.abs(newton_step))) < resolution
    mean = bonds.Couplings(jnp.full(5, 3e-4, jnp.float32))
    y, _ = bonds._repel(b, c, mean, jnp.float32(3e-3), 50)
    assert bool(jnp.all(jnp.diff(y) > 0)) and bool(jnp.all(jnp.isfinite(y)))
    assert abs(float(jnp.mean(y) - jnp.mean(b))) < resolution  # the repulsion moves no mean


# --------------------------------------------------------------------------------------
# potentials
# --------------------------------------------------------------------------------------
def test_custom_potential_equals_named_quartic():
    """A callable U(λ, hp) (forces by jax.grad) and the named quartic with γ = 0 give the same
    path; a one-argument U(λ) is accepted."""
    named = dy.DysonBM(6, potential="quartic", start="given", initial_levels=tuple(np.linspace(-1, 1, 6)))
    custom = named.replace(potential=lambda lam, hp: 0.25 * hp["g"] * lam**4)
    hp = {"gamma": 0.0, "g": 1.0, "dt": 0.01}
    a = run(named, hp, 4, 50)["levels"]
    b = run(custom, hp, 4, 50)["levels"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    one_arg = dy.get_potential(lambda lam: 0.25 * lam**4)
    lam = jnp.linspace(-2.0, 2.0, 5)
    np.testing.assert_allclose(one_arg.force(lam, {}), -(lam**3), rtol=1e-6)


def test_quartic_stationary_moment():
    """N = 2, U = λ⁴/4, D = 1, β = 1: ⟨λ²⟩ of P ∝ |λ1 − λ2| e^{−U(λ1) − U(λ2)} by quadrature."""
    x = np.linspace(-4, 4, 801)
    X, Y = np.meshgrid(x, x)
    w = np.abs(X - Y) * np.exp(-(X**4 + Y**4) / 4)
    exact = float((w * X**2).sum() / w.sum())
    p = dy.DysonBM(2, potential="quartic", start="zero")
    out = run(p, {"gamma": 0.0, "g": 1.0, "dt": 0.01}, R_CMP, 800, 100)
    lam2 = (out["levels"][:, 3:] ** 2).mean(axis=-1)  # t ≥ 4
    se = lam2.mean(axis=1).std() / math.sqrt(lam2.shape[0])
    assert abs(lam2.mean() - exact) < 5 * se + 0.01 * exact, (lam2.mean(), exact, se)


# --------------------------------------------------------------------------------------
# interface, dtypes, helpers
# --------------------------------------------------------------------------------------
def test_single_replica_protocol_and_per_replica_hp():
    p = DBM8
    hash(p)  # static: usable as a jit static argument
    hp = {k: jnp.asarray(v) for k, v in p.defaults().items()}
    state = p.init(jax.random.key(0), hp)
    step = jax.jit(p.step)
    state = step(state, jax.random.key(1), {**hp, "D": jnp.asarray(2.0)})  # traced values: no recompile
    state = step(state, jax.random.key(2), {**hp, "D": jnp.asarray(3.0)})
    assert step._cache_size() == 1
    obs = p.observe(state, hp)
    assert obs["levels"].shape == (8,) and obs["min_gap"].shape == () and obs["min_gap"] > 0
    # per-replica parameters: E Σλ² scales with D/γ (and dt, β vary per replica as well)
    D = np.where(np.arange(R_CMP) % 2 == 0, 1.0, 4.0)
    out = run(p, {"D": D, "beta": 1.0, "dt": np.where(D == 1.0, 0.02, 0.01)}, R_CMP, 200)
    m = (out["levels"][:, -1] ** 2).sum(-1)
    ratio = m[1::2].mean() / m[0::2].mean()
    assert abs(ratio - 4.0) < 0.2, ratio


def test_float64():
    with enable_x64():
        p = dy.DysonBM(16, start="semicircle")
        out = dy.simulate(p, {"dt": dy.recommended_dt(16)}, KEY, 64, 50, 25)
        assert out["levels"].dtype == jnp.float64
        lv = np.asarray(out["levels"])
        assert np.isfinite(lv).all() and (np.diff(lv, axis=-1) > 0).all()
        x = np.asarray(dy.simulate(dy.WishartProcess(8, 8), {"dt": 0.01}, KEY, 8, 20)["levels"])
        assert x.dtype == np.float64 and np.isfinite(x).all()


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: dy.DysonBM(8, beta=0.0), "beta"),
        (lambda: dy.DysonBM(8, beta=-1.0), "beta"),
        (lambda: dy.DysonBM(8, D=-0.1), "D"),
        (lambda: dy.DysonBM(8, dt=0.0), "dt"),
        (lambda: dy.DysonBM(1), "n"),
        (lambda: dy.DysonBM(8, potential=lambda lam, hp: jnp.stack([lam, lam])), "potential"),
        (lambda: dy.DysonBM(8, potential=lambda lam, hp: lam[0] ** 2), "potential"),
        (lambda: dy.DysonBM(8, potential="sextic"), "potential"),
        (lambda: dy.DysonBM(8, start="given", initial_levels=(0.0, 1.0)), "initial_levels"),
        (lambda: dy.DysonBM(8, potential="free", start="semicircle"), "start"),
        (lambda: dy.DysonBM(8, scheme="rk4"), "scheme"),
        (lambda: dy.WishartProcess(4, 8), "m"),
        (lambda: dy.WishartProcess(8, 8, beta=0.5), "beta"),
        (lambda: dy.MatrixDBM(4, beta=3), "beta"),
    ],
)
def test_bad_parameters_raise(make, field):
    with pytest.raises(ValueError) as err:
        make()
    msg = str(err.value)
    assert field in msg and "\n" not in msg


def test_validate_hp_arrays_and_simulate():
    p = dy.DysonBM(8)
    p.validate({"beta": np.array([1.0, 2.0]), "dt": 0.1})
    with pytest.raises(ValueError, match=r"beta must be > 0, got beta=-2\.0"):
        p.validate({"beta": np.array([1.0, -2.0])})
    with pytest.raises(ValueError, match="D must be >= 0"):
        dy.simulate(p, {"D": -1.0}, KEY, 2, 1)
    with pytest.raises(ValueError, match="dt must be > 0"):
        dy.simulate(p, {"dt": np.array([0.1, 0.0])}, KEY, 2, 1)


def test_sgd_helpers():
    assert dy.temperature(0.1, 16) == pytest.approx(0.1 / 16)
    lr, bs, var = 0.1, 16, 0.01
    assert dy.diffusion_from_noise(lr, bs, var) == pytest.approx(lr * var / bs)
    assert dy.diffusion_from_noise(lr, bs, var, symmetric_part=True) == pytest.approx(lr * var / (2 * bs))
    # teacher–student (SCIENCE.md §3.1): drift rate 1, so the stationary off-diagonal
    # variance D/2 is τ² = αA²/(|B|(2 − α(1 + (N+1)/|B|))) to leading order in α
    alpha, A2, B, N = 1e-4, 0.01, 16, 2
    tau2 = alpha * A2 / (B * (2 - alpha * (1 + (N + 1) / B)))
    assert dy.diffusion_from_noise(alpha, B, A2) / 2 == pytest.approx(tau2, rel=1e-3)


# --------------------------------------------------------------------------------------
# slow: other β, large N
# --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("beta, r_ref", [(2, 0.5996), (4, 0.6744)])
def test_beta_2_4_n128(beta, r_ref):
    n = 128
    k = round(1 / dy.recommended_dt(n, beta=beta))
    out = run(dy.DysonBM(n, start="zero"), {"beta": float(beta), "dt": 1 / k}, 64, 6 * k, k)
    assert_ordered(out)
    lv = out["levels"][:, 3:]
    radius = math.sqrt(2 * beta * n)
    assert stats.kstest(lv.ravel(), lambda x: semicircle_cdf(x, radius)).statistic < 0.01
    assert stats.kstest(bulk_spacings(lv, radius), lambda x: surmise_cdf(x, beta)).statistic < 0.02
    assert abs(mean_ratio(lv[..., n // 4 : 3 * n // 4]) - r_ref) < 0.01


@pytest.mark.slow
def test_n1024_long_run():
    """N = 1024, β = 1, 10⁴ steps at the recommended dt (γt = 2.4 from the stationary law):
    ordered, finite, KS < 0.01 against the semicircle, and ⟨Σλ²⟩ = k = N + N(N−1)/2 (exactly
    χ²_k-distributed in the stationary law) within the documented bias (0.4 %) plus 3
    standard errors of the correlated snapshots (relaxation rate 2γ)."""
    n, replicas, every = 1024, 4, 1000
    dt = dy.recommended_dt(n)
    out = run(dy.DysonBM(n, start="semicircle"), {"dt": dt}, replicas, 10_000, every)
    assert_ordered(out)
    d = stats.kstest(out["levels"][:, 2:].ravel(), lambda x: semicircle_cdf(x, math.sqrt(2 * n))).statistic
    assert d < 0.01, d
    k = n + n * (n - 1) / 2
    s2 = (out["levels"] ** 2).sum(axis=-1) / k
    rho = math.exp(-2 * every * dt)
    n_eff = s2.size * (1 - rho) / (1 + rho)
    assert abs(s2.mean() - 1) < 0.004 + 3 * math.sqrt(2 / k / n_eff), s2.mean()


def _far_field_by_rule(b, y, w, rho=0.25):
    """Σ_{|i−j|≥2} w_ij/(b_i − b_j) in float64, the rule of `dysonbm.sde.numerics._far_sum`:
    a pair two apart at no less than rho × its distance in y, pairs coincident in y left out."""
    n = len(b)
    out = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if abs(i - j) < 2 or y[i] == y[j]:
                continue
            d = b[i] - b[j]
            if abs(i - j) == 2:
                d = np.sign(i - j) * max(abs(d), rho * abs(y[i] - y[j]))
            out[i] += w[i, j] / d
    return out


def test_the_far_field_floors_pairs_two_apart_and_sums_the_rest_as_they_are():
    """`far_field` against the rule written out pair by pair: random levels with no floor
    acting, a cluster of four squeezed by the noise (its pairs two apart floored, its outer
    pair, three apart, not), the degenerate reference (no far field), and per-pair weights."""
    from dysonbm.sde.split import far_field

    rng = np.random.default_rng(7)
    n = 12
    with enable_x64():
        y = np.sort(rng.normal(size=n)) * 3.0
        squeezed = y.copy()
        squeezed[3:7] = 0.5 * (y[3] + y[6]) + np.array([-1.5, -0.5, 0.5, 1.5]) * 0.01 * (y[6] - y[3])  # levels 3–6
        w = rng.uniform(0.5, 2.0, size=(n, n))
        w = w + w.T
        for b in (y, squeezed):
            for kappa, weights in ((1.7, np.full((n, n), 1.7)), (None, w)):
                far = jnp.asarray(kappa if kappa is not None else weights)
                got = np.asarray(far_field(jnp.asarray(b), jnp.asarray(y), far, False))
                np.testing.assert_allclose(got, _far_field_by_rule(b, y, weights), rtol=1e-12)
        zeros = np.zeros(n)
        got = far_field(jnp.asarray(np.sort(rng.normal(size=n)) * 1e-3), jnp.asarray(zeros), jnp.asarray(1.0), False)
        np.testing.assert_array_equal(np.asarray(got), np.zeros(n))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 33])
def test_the_resort_sorts_nearly_sorted_and_shuffled_levels(n):
    """`_resort` (odd–even transposition until ordered) gives `np.sort`'s result, vmapped over
    replicas, for levels moved by noise and for levels in random order (up to N passes)."""
    from dysonbm.sde.numerics import _resort

    rng = np.random.default_rng(n)
    y = np.sort(rng.normal(size=(64, n)), axis=1)
    noisy = y + 0.5 * rng.normal(size=y.shape) * (np.mean(np.diff(y, axis=1)) if n > 1 else 1.0)
    shuffled = rng.permuted(y, axis=1)
    for levels in (noisy, shuffled):
        levels = levels.astype(np.float32)
        out = np.asarray(jax.vmap(_resort)(jnp.asarray(levels)))
        np.testing.assert_array_equal(out, np.sort(levels, axis=1))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 64, 65])
def test_the_tridiagonal_solvers_match_a_dense_solve(n):
    """`bonds._thomas` (one end, and `_thomas_two_ended`) and `bonds._cyclic_reduction` solve the Newton systems'
    M-matrix A_ii = s_i + w_{i−1} + w_i, A_{i,i±1} = −w_i like `np.linalg.solve`, also with
    bonds 10⁶ times the excess (nearly coincident levels) and bonds of 0 (float64)."""
    rng = np.random.default_rng(n)
    for scale in (1.0, 1e6):
        s = rng.uniform(0.5, 2.0, n)
        w = scale * rng.uniform(0.0, 1.0, n - 1) * (rng.random(n - 1) < 0.8)
        r = rng.normal(size=n)
        a = np.diag(s + np.r_[0.0, w] + np.r_[w, 0.0]) - np.diag(w, 1) - np.diag(w, -1)
        exact = np.linalg.solve(a, r)
        with enable_x64():
            for solve in (bonds._thomas, bonds._thomas_two_ended, bonds._cyclic_reduction):
                x = np.asarray(solve(jnp.asarray(s), jnp.asarray(w), jnp.asarray(r)))
                np.testing.assert_allclose(x, exact, rtol=0, atol=1e-9 * np.max(np.abs(exact)))


@pytest.mark.parametrize("make", [lambda: dy.DysonBM(8, max_newton=0), lambda: dy.WishartProcess(6, 4, max_newton=0),
                                  lambda: dy.LevelSDE(8, control=dy.Control(max_newton=0))])
def test_a_newton_budget_below_one_is_refused(make):
    with pytest.raises(ValueError, match="max_newton must be >= 1, got .*max_newton=0"):
        make()
