"""Reference laws and statistics of dysonbm.analysis.rmt against sampled random matrices.

Tolerances: a KS distance of n i.i.d. samples exceeds 1.63/sqrt(n) with probability
1% and 1.95/sqrt(n) with probability 0.1% (Kolmogorov distribution), so "p > 1e-3"
is a 0.1% false-alarm test; estimates are compared within 5 standard errors
(false alarm ~6e-7 for a Gaussian estimator). All seeds are fixed.
"""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from dysonbm.analysis import rmt

SURMISES = (1, 2, 4)


def goe(rng, r, n, v=1.0):
    """r real symmetric n x n matrices, off-diagonal variance v, diagonal 2v."""
    a = rng.normal(scale=math.sqrt(v), size=(r, n, n))
    return (a + np.swapaxes(a, -1, -2)) / math.sqrt(2.0)


def gue(rng, r, n, v=1.0):
    """Complex Hermitian, each real component of an off-diagonal entry variance v, diagonal 2v."""
    z = rng.normal(scale=math.sqrt(v), size=(r, n, n)) + 1j * rng.normal(scale=math.sqrt(v), size=(r, n, n))
    return (z + np.conj(np.swapaxes(z, -1, -2))) / math.sqrt(2.0)


def gse2(rng, r, v=1.0):
    """2x2 quaternion self-dual Hermitian matrices as 4x4 complex Hermitian ones.

    [[a, q], [q*, b]] with a, b real of variance 2v and the four real components of
    the quaternion q of variance v; q = z + w j is the 2x2 block [[z, w], [-w*, z*]].
    The eigenvalues come in Kramers-degenerate pairs; the spacing
    sqrt((a - b)^2 + 4|q|^2) has density ~ S^4 exp(-S^2/(8v)), the beta=4 law.
    """
    a, b = rng.normal(scale=math.sqrt(2 * v), size=(2, r))
    c = rng.normal(scale=math.sqrt(v), size=(4, r))
    z, w = c[0] + 1j * c[1], c[2] + 1j * c[3]
    q = np.stack([np.stack([z, w], -1), np.stack([-np.conj(w), np.conj(z)], -1)], -2)
    h = np.zeros((r, 4, 4), complex)
    h[:, :2, :2] = a[:, None, None] * np.eye(2)
    h[:, 2:, 2:] = b[:, None, None] * np.eye(2)
    h[:, :2, 2:] = q
    h[:, 2:, :2] = np.conj(np.swapaxes(q, -1, -2))
    return h


# --------------------------------------------------------------------- the laws
LAW_CASES = [
    ("surmise1", (), 0.0, np.inf),
    ("surmise2", (), 0.0, np.inf),
    ("surmise4", (), 0.0, np.inf),
    ("poisson", (), 0.0, np.inf),
    ("semicircle", (1.7, 0.4), 0.4 - 1.7, 0.4 + 1.7),
    ("marchenko_pastur", (1.3, 0.25), *rmt.mp_edges(1.3, 0.25)),
    ("marchenko_pastur", (0.8, 1.0), *rmt.mp_edges(0.8, 1.0)),
    ("two_level", (0.3, 0.7), -np.inf, np.inf),
]


@pytest.mark.parametrize("name,params,lo,hi", LAW_CASES)
def test_density_normalised_and_cdf_is_its_integral(name, params, lo, hi):
    pdf, cdf = rmt.LAWS[name]
    total = integrate.quad(lambda x: pdf(x, *params), lo, hi, limit=200)[0]
    assert abs(total - 1.0) < 1e-6
    a = lo if np.isfinite(lo) else -6.0 + params[0]
    b = hi if np.isfinite(hi) else (16.0 if lo == 0 else 6.0 + params[0])
    for x in np.linspace(a, b, 9)[1:-1]:
        start = lo if np.isfinite(lo) else -np.inf
        ref = integrate.quad(lambda t: pdf(t, *params), start, x, limit=200)[0]
        assert abs(cdf(x, *params) - ref) < 1e-6, (name, x)
    # monotone, 0 below and 1 above the support
    xs = np.linspace(a - 1, b + 1, 401)
    f = cdf(xs, *params)
    assert np.all(np.diff(f) >= -1e-15) and f[0] < 1e-6 and f[-1] > 1 - 1e-6


@pytest.mark.parametrize("beta", SURMISES)
def test_surmise_has_unit_mean(beta):
    mean = integrate.quad(lambda s: s * rmt.wigner_surmise(s, beta), 0, np.inf)[0]
    assert abs(mean - 1.0) < 1e-8


def test_closed_forms():
    s = np.linspace(0, 3, 7)
    assert np.allclose(rmt.wigner_surmise(s, 1), np.pi / 2 * s * np.exp(-np.pi * s**2 / 4))
    assert np.allclose(rmt.wigner_surmise(s, 2), 32 / np.pi**2 * s**2 * np.exp(-4 * s**2 / np.pi))
    assert np.allclose(rmt.wigner_surmise(s, 4),
                       2**18 / (3**6 * np.pi**3) * s**4 * np.exp(-64 * s**2 / (9 * np.pi)))
    assert np.allclose(rmt.erf(s), [math.erf(t) for t in s], atol=1e-15)
    assert np.isclose(rmt.semicircle_radius(10, 0.5, 2.0, beta=2), math.sqrt(10.0))
    assert np.allclose(rmt.mp_edges(2.0, 0.25), (0.5, 4.5))
    # MP with c > 1 carries an atom 1 - 1/c at zero
    assert np.isclose(rmt.marchenko_pastur_cdf(1e-12, 1.0, 4.0), 0.75)
    # second moment of the two-level law: var = tau^2 (centre) + <S^2>/4 = 3 tau^2
    sigma = 0.7
    second = integrate.quad(lambda x: x * x * rmt.two_level_pdf(x, 0.0, sigma), -np.inf, np.inf)[0]
    assert np.isclose(second, 1.5 * sigma**2)  # sigma^2 = 2 tau^2


# ----------------------------------------------------------- 2x2 spacing laws
@pytest.mark.parametrize("beta", SURMISES)
def test_2x2_spacings_follow_their_surmise(beta):
    rng = np.random.default_rng(100 + beta)
    r = 20000
    if beta == 1:
        ev = np.linalg.eigvalsh(goe(rng, r, 2, 0.3))
    elif beta == 2:
        ev = np.linalg.eigvalsh(gue(rng, r, 2, 0.3))
    else:
        e4 = np.linalg.eigvalsh(gse2(rng, r, 0.3))
        assert np.allclose(e4[:, 0], e4[:, 1]) and np.allclose(e4[:, 2], e4[:, 3])  # Kramers pairs
        ev = e4[:, ::2]
    s = rmt.normalized_spacings(ev)
    assert s.shape == (r, 1) and abs(s.mean() - 1) < 1e-12
    # Normalising by the sample mean fits one parameter, which only lowers D.
    assert rmt.ks_test(s, f"surmise{beta}")[1] > 1e-3
    for other in SURMISES:
        if other != beta:
            assert rmt.ks_test(s, f"surmise{other}")[1] < 1e-6
    assert rmt.ks_test(s, "poisson")[1] < 1e-6


# ---------------------------------------------------------- large-N spectra
def test_wishart_is_marchenko_pastur():
    rng = np.random.default_rng(7)
    m, n, r, sigma2 = 400, 100, 40, 1.7
    w = rng.normal(scale=math.sqrt(sigma2 / m), size=(r, m, n))
    ev = np.linalg.eigvalsh(np.swapaxes(w, -1, -2) @ w)
    c = n / m
    # Eigenvalues of one matrix are far more rigid than i.i.d. draws, so counting
    # every level as independent (n_eff = r n) is conservative for the noise; the
    # finite-N bias of the density is O(1/n) = 0.01, below 1.63/sqrt(4000) = 0.026.
    n_eff = ev.size
    d = rmt.ks_statistic(ev, "marchenko_pastur", sigma2, c)
    assert d < 1.63 / math.sqrt(n_eff)
    assert rmt.ks_test(ev, "marchenko_pastur", sigma2, c)[1] > 1e-3
    # a wrong ratio or scale is rejected
    assert rmt.ks_test(ev, "marchenko_pastur", sigma2, 0.35)[1] < 1e-6
    assert rmt.ks_test(ev, "marchenko_pastur", 1.1 * sigma2, c)[1] < 1e-6
    # Extreme eigenvalues sit at the edges up to Tracy-Widom fluctuations:
    # x_max = x+ + s+ TW1, x_min = x- - s- TW1 with (Johnstone) scales
    # s± = sigma2/m (sqrt m ± sqrt n)(1/sqrt n ± 1/sqrt m)^{1/3} (1.8% of x+, 3.7% of x-).
    # The median of TW1 is -1.27 and that of 40 draws has error ~0.25, so the
    # medians must lie 1.27 +- 1.2 scales inside the edges (within 5% / 10%).
    lo, hi = rmt.mp_edges(sigma2, c)
    sm, sn = math.sqrt(m), math.sqrt(n)
    s_hi = sigma2 / m * (sm + sn) * (1 / sn + 1 / sm) ** (1 / 3)
    s_lo = sigma2 / m * (sm - sn) * (1 / sn - 1 / sm) ** (1 / 3)
    assert abs((np.median(ev[:, -1]) - hi) / s_hi + 1.27) < 1.2
    assert abs((np.median(ev[:, 0]) - lo) / s_lo - 1.27) < 1.2
    assert abs(np.median(ev[:, -1]) / hi - 1) < 0.05 and abs(np.median(ev[:, 0]) / lo - 1) < 0.10
    # unfolding with the MP counting function gives unit mean spacing in the bulk
    u = rmt.unfold(ev, method="marchenko_pastur", edge=10, sigma2=sigma2, c=c)
    assert abs(np.diff(u, axis=-1).mean() - 1) < 0.02


def test_goe_is_semicircle():
    rng = np.random.default_rng(11)
    n, r, v = 200, 50, 0.5
    ev = np.linalg.eigvalsh(goe(rng, r, n, v))
    radius = 2 * math.sqrt(n * v)  # plain GOE; sqrt(2 beta N D/gamma) is the DBM's
    # same n_eff argument as for Wishart: 1.63/sqrt(10000) = 0.016
    assert rmt.ks_statistic(ev, "semicircle", radius) < 1.63 / math.sqrt(ev.size)
    assert rmt.ks_test(ev, "semicircle", radius)[1] > 1e-3
    assert rmt.ks_test(ev, "semicircle", 1.1 * radius)[1] < 1e-6
    assert rmt.ks_test(ev, "semicircle", math.sqrt(n * v))[1] < 1e-6


def test_goe_unfolded_spacings_and_ratio():
    rng = np.random.default_rng(12)
    n, r = 200, 25
    ev = np.linalg.eigvalsh(goe(rng, r, n, 1.0))
    u = rmt.unfold(ev, degree=9, edge=0.1)
    assert u.shape == (r, n - 40)
    s = np.diff(u, axis=-1).ravel()
    assert abs(s.mean() - 1) < 0.01
    # The surmise differs from the exact large-N GOE law by D ~ 0.007 (measured with
    # 8e4 spacings), far below the KS resolution 1.95/sqrt(4000) = 0.03 used here.
    assert rmt.ks_test(s, "surmise1")[1] > 1e-3
    assert rmt.ks_test(s, "surmise2")[1] < 1e-6
    assert rmt.ks_test(s, "poisson")[1] < 1e-6
    # semicircle unfolding (radius from the moments) agrees
    s_sc = np.diff(rmt.unfold(ev, method="semicircle", edge=0.1), axis=-1).ravel()
    assert abs(s_sc.mean() - 1) < 0.01 and rmt.ks_test(s_sc, "surmise1")[1] > 1e-3
    # <r>: error of the mean of per-replica means (replicas are independent)
    mr = rmt.mean_ratio(ev)
    assert abs(mr.value - rmt.MEAN_R[1]) < 5 * mr.stderr
    assert abs(mr.value - rmt.MEAN_R[2]) > 5 * mr.stderr
    assert abs(mr.value - rmt.MEAN_R["poisson"]) > 5 * mr.stderr


def test_gue_ratio():
    rng = np.random.default_rng(13)
    ev = np.linalg.eigvalsh(gue(rng, 25, 200))
    mr = rmt.mean_ratio(ev)
    assert abs(mr.value - rmt.MEAN_R[2]) < 5 * mr.stderr
    assert abs(mr.value - rmt.MEAN_R[1]) > 5 * mr.stderr


def test_poisson_levels():
    rng = np.random.default_rng(14)
    lv = np.sort(rng.uniform(size=(40, 500)), axis=-1)
    s = rmt.normalized_spacings(lv)
    assert rmt.ks_test(s, "poisson")[1] > 1e-3
    assert rmt.ks_test(s, "surmise1")[1] < 1e-6
    # spacings of uniform points on [0,1] are exactly Poisson after unfolding
    su = np.diff(rmt.unfold(lv, degree=3), axis=-1).ravel()
    assert abs(su.mean() - 1) < 0.01 and rmt.ks_test(su, "poisson")[1] > 1e-3
    mr = rmt.mean_ratio(lv)
    assert abs(mr.value - rmt.MEAN_R["poisson"]) < 5 * mr.stderr
    assert abs(mr.value - (2 * math.log(2) - 1)) < 5 * mr.stderr
    assert abs(mr.value - rmt.MEAN_R[1]) > 5 * mr.stderr


def test_spacing_helpers():
    lv = np.array([[3.0, 0.0, 1.0, 1.5], [0.0, 2.0, 4.0, 5.0]])
    assert np.allclose(rmt.spacings(lv), [[1.0, 0.5, 1.5], [2.0, 2.0, 1.0]])
    assert np.allclose(rmt.spacing_ratios(lv), [[0.5, 1 / 3], [1.0, 0.5]])
    assert np.allclose(rmt.normalized_spacings(lv).mean(), 1.0)
    assert np.allclose(rmt.normalized_spacings(lv, per_spectrum=True).mean(axis=-1), 1.0)
    assert np.allclose(rmt.spacings(lv.T, axis=0), rmt.spacings(lv).T)


# ---------------------------------------------------------------- two-level fit
def test_two_level_fit_recovers_sigma():
    rng = np.random.default_rng(21)
    tau, x0, r = 0.3, 1.5, 20000
    pairs = np.linalg.eigvalsh(goe(rng, r, 2, tau**2) + x0 * np.eye(2))
    fit = rmt.fit_two_level(pairs)
    sigma = math.sqrt(2) * tau
    assert abs(fit.sigma - sigma) < 5 * fit.sigma_err
    assert abs(fit.x0 - x0) < 5 * fit.x0_err
    # jackknife errors match the 1/sqrt(R) scale: sigma_err / sigma ~ 0.6/sqrt(R)
    assert 0.2 < fit.sigma_err / sigma * math.sqrt(r) < 2.0
    est = rmt.fit_two_level_sigma(pairs)
    assert est.value == fit.sigma and est.stderr == fit.sigma_err
    # the same width from the spacing, <S> = sqrt(pi) sigma
    ms = rmt.pair_spacing(pairs)
    assert abs(ms.value - math.sqrt(math.pi) * sigma) < 5 * ms.stderr
    diff = ms.value - math.sqrt(math.pi) * fit.sigma
    assert abs(diff) < 5 * math.hypot(ms.stderr, math.sqrt(math.pi) * fit.sigma_err)
    # a Gaussian width of the pooled levels is sqrt(3/2) sigma, not sigma: a wrong
    # law would be caught by the same tolerance
    g = rmt.gaussian_sigma(pairs - x0)
    assert abs(g.value - sigma) > 5 * g.stderr
    assert abs(g.value - math.sqrt(1.5) * sigma) < 5 * g.stderr
    # the fitted law describes the pooled levels
    assert rmt.ks_test(pairs, "two_level", fit.x0, fit.sigma)[1] > 1e-3


def test_gaussian_sigma_and_resampling():
    rng = np.random.default_rng(22)
    x = rng.normal(2.0, 0.5, size=4000)
    g = rmt.gaussian_sigma(x)
    assert abs(g.value - 0.5) < 5 * g.stderr and np.isclose(g.stderr, 0.5 / math.sqrt(2 * 3999), rtol=0.05)
    # delete-one jackknife of the mean is exactly std/sqrt(n)
    y = x[:200]
    jk = rmt.jackknife(np.mean, y, n_blocks=y.size)
    assert np.isclose(jk.value, y.mean()) and np.isclose(jk.stderr, y.std(ddof=1) / math.sqrt(y.size))
    # block jackknife and bootstrap agree with it to their own precision (~20%, ~5%)
    assert np.isclose(rmt.jackknife(np.mean, y, n_blocks=20).stderr, jk.stderr, rtol=0.5)
    bs = rmt.bootstrap(np.mean, y, seed=3, n=1000)
    assert np.isclose(bs.stderr, jk.stderr, rtol=0.15)
    # vector-valued statistics are handled elementwise
    jv = rmt.jackknife(lambda a: a.mean(axis=0), np.stack([y, 2 * y], 1), n_blocks=y.size)
    assert np.allclose(jv.stderr, [jk.stderr, 2 * jk.stderr])


# --------------------------------------------------------------- KS machinery
def test_ks_pvalues_calibrated():
    rng = np.random.default_rng(31)
    u = rng.uniform(size=(400, 200))
    p = np.array([rmt.ks_test(row, lambda t: np.clip(t, 0, 1))[1] for row in u])
    # under the null p is uniform: P(p < 0.1) = 0.1 +- 5 sqrt(0.09/400) = 0.1 +- 0.075
    assert abs(np.mean(p < 0.1) - 0.1) < 0.075 and abs(np.mean(p) - 0.5) < 5 * math.sqrt(1 / 12 / 400)
    assert rmt.ks_test(u[0], lambda t: np.clip(t, 0, 1))[1] > 0.01
    assert rmt.ks_test(u[0] + 0.2, lambda t: np.clip(t, 0, 1))[1] < 1e-6


@pytest.mark.parametrize("n", [200, 500, 2000])
def test_ks_matches_scipy(n):
    # The corrected asymptotic p differs from scipy's exact one by up to ~0.012 at
    # n = 100 and less at larger n, so 0.01 is checked from n = 200 on.
    rng = np.random.default_rng(n)
    cdf = stats.norm.cdf
    for shift in (0.0, 0.05, 0.1):
        x = rng.normal(size=n) + shift
        d, p = rmt.ks_test(x, cdf)
        ref = stats.kstest(x, cdf)
        assert abs(d - ref.statistic) < 1e-12 and abs(p - ref.pvalue) < 0.01
    a, b = rng.normal(size=n), rng.normal(0.1, 1, size=n + 37)
    d, p = rmt.ks_2samp(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert abs(d - ref.statistic) < 1e-12 and abs(p - ref.pvalue) < 0.01
    assert np.allclose(rmt.kolmogorov_sf([0.2, 0.8, 1.18, 2.0]), stats.kstwobign.sf([0.2, 0.8, 1.18, 2.0]),
                       atol=1e-12)


def test_ks_2samp_rejects_different_laws():
    rng = np.random.default_rng(33)
    s1 = rmt.normalized_spacings(np.linalg.eigvalsh(goe(rng, 5000, 2)))
    s2 = rmt.normalized_spacings(np.linalg.eigvalsh(gue(rng, 5000, 2)))
    s1b = rmt.normalized_spacings(np.linalg.eigvalsh(goe(rng, 5000, 2)))
    assert rmt.ks_2samp(s1, s2)[1] < 1e-6
    assert rmt.ks_2samp(s1, s1b)[1] > 1e-3
