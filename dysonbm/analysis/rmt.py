r"""Reference random-matrix laws and spectral statistics (numpy only).

Every law takes numpy arrays and broadcasts elementwise; every statistic takes
an array of spectra whose last axis (or ``axis``) holds the levels of one
spectrum and whose other axes index replicas.

Laws (pdf ``p`` and cdf ``P``):

* Wigner surmise, spacing ``s = S/<S>`` of a 2x2 ensemble with Dyson index
  ``beta``: ``p(s) = a_b s^b exp(-b_b s^2)`` with
  ``b_b = [Gamma((b+2)/2) / Gamma((b+1)/2)]^2`` and
  ``a_b = 2 b_b^((b+1)/2) / Gamma((b+1)/2)``, i.e.
  ``(pi/2) s e^{-pi s^2/4}``, ``(32/pi^2) s^2 e^{-4 s^2/pi}``,
  ``(2^18/(3^6 pi^3)) s^4 e^{-64 s^2/(9 pi)}`` for beta = 1, 2, 4;
  ``P(s)`` is the regularised lower incomplete gamma ``P((b+1)/2, b_b s^2)``.
* Poisson spacing: ``p(s) = e^{-s}``.
* Wigner semicircle: ``p(x) = 2 sqrt(R^2 - x^2) / (pi R^2)``; the stationary
  Coulomb gas of ``U = gamma x^2/2`` has ``R = sqrt(2 beta N D / gamma)``.
* Marchenko-Pastur, eigenvalues of ``W^T W`` with ``W`` of size M x N, i.i.d.
  entries of variance ``sigma2/M``, ``c = N/M``:
  ``p(x) = sqrt((x+ - x)(x - x-)) / (2 pi sigma2 c x)``,
  ``x± = sigma2 (1 ± sqrt c)^2`` (for ``c > 1`` an extra atom ``1 - 1/c`` at 0).
* Two-level density: both eigenvalues of a 2x2 GOE matrix (off-diagonal variance
  ``tau^2``, diagonal ``2 tau^2``) centred at ``x0``, pooled, ``sigma = sqrt2 tau``,
  ``y = x - x0``, ``u = y/sigma``:
  ``p(x) = e^{-u^2/2} / (4 sqrt(pi) sigma) [2 e^{-u^2/2} + sqrt(2 pi) u erf(u/sqrt2)]``,
  ``P(x) = (1 + erf u)/2 - e^{-u^2/2} erf(u/sqrt2) / (2 sqrt2)``;
  the mean spacing of the pair is ``<S> = sqrt(pi) sigma``.

Mean ratio of consecutive spacings ``r = min(S_i, S_{i+1}) / max(S_i, S_{i+1})``
(large N): see :data:`MEAN_R`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "Estimate", "TwoLevelFit", "Law", "LAWS", "MEAN_R", "erf",
    "wigner_surmise", "wigner_surmise_cdf", "poisson_spacing", "poisson_spacing_cdf",
    "semicircle_pdf", "semicircle_cdf", "semicircle_radius",
    "marchenko_pastur_pdf", "marchenko_pastur_cdf", "mp_edges",
    "two_level_pdf", "two_level_cdf",
    "spacings", "normalized_spacings", "unfold", "spacing_ratios", "mean_ratio",
    "fit_two_level", "fit_two_level_sigma", "gaussian_sigma", "pair_spacing",
    "jackknife", "bootstrap",
    "kolmogorov_sf", "ks_statistic", "ks_test", "ks_2samp",
]

MEAN_R = {1: 0.5307, 2: 0.5996, 4: 0.6744, "poisson": 0.3863}
"""Large-N mean spacing ratio <r> for GOE, GUE, GSE and Poisson (2 ln 2 - 1)."""


class Estimate(NamedTuple):
    """A value with its standard error."""

    value: float
    stderr: float


class TwoLevelFit(NamedTuple):
    """Maximum-likelihood fit of the two-level density with standard errors."""

    sigma: float
    sigma_err: float
    x0: float
    x0_err: float


_erf_ufunc = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """Error function ``erf(x) = 2/sqrt(pi) int_0^x e^{-t^2} dt`` (elementwise, exact to double)."""
    x = np.asarray(x, dtype=float)
    return np.asarray(_erf_ufunc(x), dtype=float)[()]


def _f(x):
    return np.asarray(x, dtype=float)


# --------------------------------------------------------------------------- surmise
def _surmise_consts(beta: int) -> tuple[float, float]:
    """``(a_b, b_b)`` of ``p(s) = a_b s^b exp(-b_b s^2)``: unit norm and unit mean."""
    if int(beta) != beta or beta < 0:
        raise ValueError(f"beta must be a non-negative integer, got {beta!r}")
    g1 = math.gamma((beta + 1) / 2)
    b = (math.gamma((beta + 2) / 2) / g1) ** 2
    a = 2.0 * b ** ((beta + 1) / 2) / g1
    return a, b


def _lower_gamma_p(k2: int, x):
    """Regularised lower incomplete gamma ``P(k2/2, x)`` for integer ``k2 >= 1``.

    Integer shape n: ``1 - e^{-x} sum_{j<n} x^j/j!``; half-integer n + 1/2:
    ``erf(sqrt x) - e^{-x} sum_{j<n} x^{j+1/2} / Gamma(j + 3/2)``.
    """
    x = np.maximum(_f(x), 0.0)
    ex = np.exp(-x)
    if k2 % 2 == 0:
        out, term = np.ones_like(x), np.ones_like(x)
        acc = np.zeros_like(x)
        for j in range(k2 // 2):
            if j:
                term = term * x / j
            acc = acc + term
        return out - ex * acc
    acc = np.zeros_like(x)
    sx = np.sqrt(x)
    for j in range(k2 // 2):
        acc = acc + sx * x**j / math.gamma(j + 1.5)
    return erf(sx) - ex * acc


def wigner_surmise(s, beta: int = 1):
    """Wigner surmise ``p(s) = a_b s^b exp(-b_b s^2)`` (unit mean); 0 for ``s < 0``.

    beta=1: ``(pi/2) s e^{-pi s^2/4}``; 2: ``(32/pi^2) s^2 e^{-4s^2/pi}``;
    4: ``(2^18/(3^6 pi^3)) s^4 e^{-64 s^2/(9 pi)}``.
    """
    a, b = _surmise_consts(beta)
    s = _f(s)
    sp = np.maximum(s, 0.0)
    return np.where(s < 0, 0.0, a * sp**beta * np.exp(-b * sp * sp))[()]


def wigner_surmise_cdf(s, beta: int = 1):
    """CDF of the surmise, ``P((b+1)/2, b_b s^2)``; beta=1: ``1 - e^{-pi s^2/4}``,
    beta=2: ``erf(2s/sqrt(pi)) - (4/pi) s e^{-4s^2/pi}``."""
    _, b = _surmise_consts(beta)
    s = np.maximum(_f(s), 0.0)
    return np.asarray(_lower_gamma_p(beta + 1, b * s * s))[()]


def poisson_spacing(s):
    """Poisson (uncorrelated levels) spacing density ``p(s) = e^{-s}`` for ``s >= 0``."""
    s = _f(s)
    return np.where(s < 0, 0.0, np.exp(-np.maximum(s, 0.0)))[()]


def poisson_spacing_cdf(s):
    """``P(s) = 1 - e^{-s}`` for ``s >= 0``."""
    return (-np.expm1(-np.maximum(_f(s), 0.0)))[()]


# ------------------------------------------------------------------------ semicircle
def semicircle_radius(n, d, gamma, beta=1):
    """Radius of the stationary DBM in ``U = gamma x^2/2``: ``R = sqrt(2 beta n d / gamma)``.

    (A plain GOE matrix with off-diagonal variance ``v`` has ``R = 2 sqrt(n v)``.)
    """
    return np.sqrt(2.0 * _f(beta) * _f(n) * _f(d) / _f(gamma))[()]


def semicircle_pdf(x, radius, center=0.0):
    """``p(x) = 2 sqrt(R^2 - y^2) / (pi R^2)``, ``y = x - center``, zero for ``|y| > R``."""
    r = _f(radius)
    y = _f(x) - center
    return (2.0 * np.sqrt(np.maximum(r * r - y * y, 0.0)) / (np.pi * r * r))[()]


def semicircle_cdf(x, radius, center=0.0):
    """``P(x) = 1/2 + (t sqrt(1 - t^2) + arcsin t) / pi``, ``t = clip((x - center)/R, -1, 1)``."""
    t = np.clip((_f(x) - center) / _f(radius), -1.0, 1.0)
    return (0.5 + (t * np.sqrt(1.0 - t * t) + np.arcsin(t)) / np.pi)[()]


# ------------------------------------------------------------------ Marchenko-Pastur
def mp_edges(sigma2, c):
    """Marchenko-Pastur edges ``(x-, x+) = sigma2 (1 ∓ sqrt c)^2``."""
    sigma2, sc = _f(sigma2), np.sqrt(_f(c))
    return (sigma2 * (1.0 - sc) ** 2)[()], (sigma2 * (1.0 + sc) ** 2)[()]


def marchenko_pastur_pdf(x, sigma2, c):
    """``p(x) = sqrt((x+ - x)(x - x-)) / (2 pi sigma2 c x)`` on ``[x-, x+]``, else 0.

    For ``c > 1`` this is the continuous part (mass ``1/c``); the atom
    ``1 - 1/c`` at ``x = 0`` is in :func:`marchenko_pastur_cdf` only.
    """
    x, sigma2, c = _f(x), _f(sigma2), _f(c)
    lo, hi = mp_edges(sigma2, c)
    inside = (x > lo) & (x < hi)
    xs = np.where(inside, x, 0.5 * (lo + hi))
    val = np.sqrt(np.maximum((hi - xs) * (xs - lo), 0.0)) / (2.0 * np.pi * sigma2 * c * xs)
    return np.where(inside, val, 0.0)[()]


def marchenko_pastur_cdf(x, sigma2, c):
    """Closed-form CDF of :func:`marchenko_pastur_pdf`.

    With ``x = m - r cos(theta)``, ``m = sigma2 (1 + c)``, ``r = 2 sigma2 sqrt c``,
    ``a, b = x-, x+``:
    ``P = [m theta + r sin theta - 2 sqrt(ab) atan2(sqrt b sin(theta/2), sqrt a cos(theta/2))]
    / (2 pi sigma2 c) + max(0, 1 - 1/c) [x >= 0]``.
    """
    x, sigma2, c = _f(x), _f(sigma2), _f(c)
    a, b = mp_edges(sigma2, c)
    m, r = sigma2 * (1.0 + c), 2.0 * sigma2 * np.sqrt(c)
    cos_t = np.clip((m - x) / r, -1.0, 1.0)
    theta = np.arccos(cos_t)
    sq_ab = sigma2 * np.abs(1.0 - c)
    arc = np.arctan2(np.sqrt(b) * np.sin(theta / 2), np.sqrt(a) * np.cos(theta / 2))
    cont = (m * theta + r * np.sin(theta) - 2.0 * sq_ab * arc) / (2.0 * np.pi * sigma2 * c)
    atom = np.where(x >= 0, np.maximum(0.0, 1.0 - 1.0 / c), 0.0)
    return np.clip(cont + atom, 0.0, 1.0)[()]


# ------------------------------------------------------------------- two-level law
_SQ2PI = math.sqrt(2.0 * math.pi)
_LOG4SQPI = math.log(4.0 * math.sqrt(math.pi))


def _two_level_h(u):
    """``h(u) = 2 e^{-u^2/2} + sqrt(2 pi) u erf(u/sqrt2) > 0``; ``p = e^{-u^2/2} h / (4 sqrt(pi) sigma)``."""
    e = erf(u / math.sqrt(2.0))
    return 2.0 * np.exp(-0.5 * u * u) + _SQ2PI * u * e, e


def two_level_pdf(x, x0=0.0, sigma=1.0):
    """Pooled eigenvalue density of a 2x2 GOE (``sigma = sqrt2 tau``), ``u = (x - x0)/sigma``:
    ``p = e^{-u^2/2} [2 e^{-u^2/2} + sqrt(2 pi) u erf(u/sqrt2)] / (4 sqrt(pi) sigma)``."""
    sigma = _f(sigma)
    u = (_f(x) - x0) / sigma
    h, _ = _two_level_h(u)
    return (np.exp(-0.5 * u * u) * h / (4.0 * math.sqrt(math.pi) * sigma))[()]


def two_level_cdf(x, x0=0.0, sigma=1.0):
    """``P = (1 + erf u)/2 - e^{-u^2/2} erf(u/sqrt2) / (2 sqrt2)``, ``u = (x - x0)/sigma``."""
    u = (_f(x) - x0) / _f(sigma)
    return (0.5 * (1.0 + erf(u))
            - np.exp(-0.5 * u * u) * erf(u / math.sqrt(2.0)) / (2.0 * math.sqrt(2.0)))[()]


# ------------------------------------------------------------------------- registry
class Law(NamedTuple):
    """A named law: ``pdf(x, *params)`` and ``cdf(x, *params)``."""

    pdf: Callable
    cdf: Callable


def _beta_law(beta: int) -> Law:
    def pdf(s):
        return wigner_surmise(s, beta)

    def cdf(s):
        return wigner_surmise_cdf(s, beta)

    pdf.__name__, cdf.__name__ = f"surmise{beta}_pdf", f"surmise{beta}_cdf"
    return Law(pdf, cdf)


LAWS: dict[str, Law] = {
    "surmise1": _beta_law(1),
    "surmise2": _beta_law(2),
    "surmise4": _beta_law(4),
    "poisson": Law(poisson_spacing, poisson_spacing_cdf),
    "semicircle": Law(semicircle_pdf, semicircle_cdf),          # params: radius, center=0
    "marchenko_pastur": Law(marchenko_pastur_pdf, marchenko_pastur_cdf),  # sigma2, c
    "two_level": Law(two_level_pdf, two_level_cdf),              # x0, sigma
}


def _get_cdf(cdf) -> Callable:
    if isinstance(cdf, str):
        return LAWS[cdf].cdf
    return cdf


# ----------------------------------------------------------------------- statistics
def spacings(levels, axis: int = -1):
    """Nearest-neighbour spacings ``S_i = lambda_{i+1} - lambda_i`` of the sorted levels along ``axis``."""
    return np.diff(np.sort(_f(levels), axis=axis), axis=axis)


def normalized_spacings(levels, axis: int = -1, per_spectrum: bool = False):
    """Spacings divided by their mean, ``s = S/<S>``.

    The mean is over all spectra (pooled, e.g. one spacing per 2x2 replica) unless
    ``per_spectrum``. Use :func:`unfold` first when the density of levels varies.
    """
    s = spacings(levels, axis=axis)
    mean = s.mean(axis=axis, keepdims=True) if per_spectrum else s.mean()
    return s / mean


def _edge_count(n: int, edge) -> int:
    k = int(round(edge * n)) if isinstance(edge, float) and edge < 1 else int(edge)
    if 2 * k >= n:
        raise ValueError(f"dropping {k} levels at each edge leaves nothing of {n}")
    return k


def unfold(levels, method: str = "poly", degree: int = 9, edge=0, cdf=None, **params):
    """Map the levels to unit mean spacing, ``e_i = N_smooth(lambda_i)``.

    ``N_smooth`` is a smooth fit of the counting function per spectrum:

    * ``"poly"``: least-squares polynomial of ``degree`` fitted to the empirical
      staircase pooled over replicas, ``N(x) = #{levels <= x} / R``;
    * ``"semicircle"``: ``n * semicircle_cdf(x, radius, center)``; missing
      ``radius``/``center`` are estimated from the pooled moments (``R = 2 std``);
    * ``"marchenko_pastur"``: ``n * marchenko_pastur_cdf(x, sigma2, c)``; missing
      parameters from the moments (mean ``sigma2``, variance ``sigma2^2 c``);
    * ``"cdf"``: ``n * cdf(x, **params)`` for a user-supplied callable.

    ``levels`` has shape ``(..., n)`` (last axis = one spectrum). ``edge`` levels
    (an int, or a fraction of ``n`` if a float < 1) are dropped at each end of every
    sorted spectrum, where smooth fits are poor. Returns shape ``(..., n - 2 edge)``.
    """
    lv = np.sort(_f(levels), axis=-1)
    n = lv.shape[-1]
    flat = lv.reshape(-1, n)
    n_rep = flat.shape[0]
    if method == "poly":
        pooled = np.sort(flat, axis=None)
        stair = (np.arange(pooled.size) + 0.5) / n_rep
        poly = np.polynomial.Polynomial.fit(pooled, stair, degree)
        out = poly(lv)
    elif method == "semicircle":
        center = params.get("center", flat.mean())
        radius = params.get("radius", 2.0 * flat.std())
        out = n * semicircle_cdf(lv, radius, center)
    elif method == "marchenko_pastur":
        mean, var = flat.mean(), flat.var()
        sigma2 = params.get("sigma2", mean)
        c = params.get("c", var / mean**2)
        out = n * marchenko_pastur_cdf(lv, sigma2, c)
    elif method == "cdf":
        if cdf is None:
            raise ValueError("method='cdf' needs cdf=callable")
        out = n * _f(_get_cdf(cdf)(lv, **params))
    else:
        raise ValueError(f"unknown unfolding method {method!r}")
    k = _edge_count(n, edge)
    return np.asarray(out[..., k:n - k])


def spacing_ratios(levels, axis: int = -1):
    """``r_i = min(S_i, S_{i+1}) / max(S_i, S_{i+1})`` of consecutive spacings (no unfolding needed).

    A pair of zero spacings gives NaN.
    """
    s = np.moveaxis(spacings(levels, axis=axis), axis, -1)
    a, b = s[..., :-1], s[..., 1:]
    hi = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.minimum(a, b) / hi
    return np.moveaxis(r, -1, axis)


def mean_ratio(levels, axis: int = -1) -> Estimate:
    """Mean spacing ratio ``<r>`` with standard error.

    Ratios inside one spectrum are correlated, so for a batch of spectra the error
    is that of the mean of the per-spectrum means (replicas are independent); for a
    single spectrum it is the naive ``std / sqrt(n)``.
    """
    r = np.moveaxis(spacing_ratios(levels, axis=axis), axis, -1)
    if r.ndim == 1 or r.reshape(-1, r.shape[-1]).shape[0] == 1:
        r = r.ravel()
        r = r[np.isfinite(r)]
        return Estimate(float(r.mean()), float(r.std(ddof=1) / math.sqrt(r.size)))
    per = np.nanmean(r.reshape(-1, r.shape[-1]), axis=-1)
    return Estimate(float(per.mean()), float(per.std(ddof=1) / math.sqrt(per.size)))


# ---------------------------------------------------------------------- resampling
def _blocks(n: int, n_blocks: int) -> list[np.ndarray]:
    return np.array_split(np.arange(n), min(n_blocks, n))


def jackknife(fn: Callable, samples, n_blocks: int = 20) -> Estimate:
    """Delete-one-block jackknife over the first axis of ``samples``.

    ``theta_b = fn(samples without block b)``, ``B`` blocks,
    ``stderr^2 = (B - 1)/B sum_b (theta_b - mean theta)^2``; ``value = fn(samples)``.
    ``fn`` may return an array (errors are elementwise). ``n_blocks >= n`` is the
    classic delete-one jackknife.
    """
    x = np.asarray(samples)
    n = x.shape[0]
    blocks = _blocks(n, n_blocks)
    nb = len(blocks)
    if nb < 2:
        raise ValueError("jackknife needs at least 2 samples")
    full = np.asarray(fn(x), dtype=float)
    mask = np.ones(n, dtype=bool)
    thetas = []
    for idx in blocks:
        mask[idx] = False
        thetas.append(np.asarray(fn(x[mask]), dtype=float))
        mask[idx] = True
    th = np.stack(thetas)
    err = np.sqrt((nb - 1) / nb * ((th - th.mean(axis=0)) ** 2).sum(axis=0))
    return Estimate(full[()], err[()])


def bootstrap(fn: Callable, samples, seed=0, n: int = 1000) -> Estimate:
    """Bootstrap standard error: std of ``fn`` over ``n`` resamples (with replacement)
    of the first axis of ``samples``; ``value = fn(samples)``. ``seed``: int or Generator."""
    x = np.asarray(samples)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    m = x.shape[0]
    th = np.stack([np.asarray(fn(x[rng.integers(0, m, m)]), dtype=float) for _ in range(n)])
    return Estimate(np.asarray(fn(x), dtype=float)[()], th.std(axis=0, ddof=1)[()])


# ----------------------------------------------------------------------------- fits
def gaussian_sigma(samples) -> Estimate:
    """Sample standard deviation (ddof=1) with its Gaussian standard error ``s / sqrt(2(n-1))``."""
    x = _f(samples).ravel()
    s = x.std(ddof=1)
    return Estimate(float(s), float(s / math.sqrt(2.0 * (x.size - 1))))


def pair_spacing(pairs) -> Estimate:
    """Mean pair spacing ``<S> = mean |x_2 - x_1|`` over replicas (rows of shape ``(..., 2)``)
    with standard error ``std(S) / sqrt(R)``."""
    p = _f(pairs)
    if p.shape[-1] != 2:
        raise ValueError(f"pairs must have a last axis of size 2, got {p.shape}")
    s = np.abs(p[..., 1] - p[..., 0]).ravel()
    return Estimate(float(s.mean()), float(s.std(ddof=1) / math.sqrt(s.size)))


def _two_level_derivs(x, x0, logs):
    """Log-likelihood of the two-level law and its gradient/Hessian in ``(x0, log sigma)``.

    With ``u = (x - x0)/sigma`` and ``g = log f`` of the standard density
    ``f(u) = e^{-u^2/2} h(u) / (4 sqrt pi)``:
    ``f'/f = [-2u e^{-u^2/2} + sqrt(2pi)(1 - u^2) E]/h``,
    ``f''/f = [2u^2 e^{-u^2/2} + sqrt(2pi)(u^3 - 3u) E]/h``, ``E = erf(u/sqrt2)``.
    """
    sigma = math.exp(logs)
    u = (x - x0) / sigma
    h, e = _two_level_h(u)
    gu = np.exp(-0.5 * u * u)
    g1 = (-2.0 * u * gu + _SQ2PI * (1.0 - u * u) * e) / h
    g2 = (2.0 * u * u * gu + _SQ2PI * (u**3 - 3.0 * u) * e) / h - g1 * g1
    n = x.size
    ll = float(np.sum(-0.5 * u * u + np.log(h)) - n * (_LOG4SQPI + logs))
    grad = np.array([-g1.sum() / sigma, -(u * g1).sum() - n])
    hxx = g2.sum() / sigma**2
    hxs = (g1 + u * g2).sum() / sigma
    hss = (u * g1 + u * u * g2).sum()
    return ll, grad, np.array([[hxx, hxs], [hxs, hss]])


def _two_level_mle(x, x0=None, logs=None, tol=1e-10, max_iter=100):
    """Newton ascent with step halving on ``(x0, log sigma)``; moment start
    (``var = 3 tau^2 = 1.5 sigma^2``)."""
    x = _f(x).ravel()
    theta = np.array([x.mean() if x0 is None else x0,
                      0.5 * math.log(x.var() / 1.5) if logs is None else logs])
    ll, g, hess = _two_level_derivs(x, *theta)
    for _ in range(max_iter):
        try:
            w = np.linalg.eigvalsh(hess)
            step = -np.linalg.solve(hess, g) if np.all(w < 0) else None
        except np.linalg.LinAlgError:
            step = None
        if step is None:  # not locally concave: scaled gradient ascent
            step = g / (np.abs(np.diag(hess)) + 1e-12 * x.size)
        t = 1.0
        for _ in range(60):
            cand = theta + t * step
            ll_c, g_c, h_c = _two_level_derivs(x, *cand)
            if ll_c >= ll - 1e-12 * abs(ll):
                break
            t *= 0.5
        else:
            break
        done = np.max(np.abs(cand - theta)) < tol * (1.0 + np.max(np.abs(theta)))
        theta, ll, g, hess = cand, ll_c, g_c, h_c
        if done:
            break
    return theta


def fit_two_level(pairs, n_blocks: int = 20) -> TwoLevelFit:
    """Maximum-likelihood ``(sigma, x0)`` of :func:`two_level_pdf` on the pooled
    eigenvalues of ``pairs`` (shape ``(R, 2)``, one degenerate pair per replica).

    The two levels of a pair are correlated, so the errors are the jackknife over
    ``n_blocks`` blocks of replicas (whole pairs), not the Fisher information.
    """
    p = _f(pairs)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"pairs must have shape (R, 2), got {p.shape}")
    x0, logs = _two_level_mle(p)

    def est(q):
        t = _two_level_mle(q, x0, logs)  # warm start from the full-sample fit
        return np.array([math.exp(t[1]), t[0]])

    jk = jackknife(est, p, n_blocks=n_blocks)
    return TwoLevelFit(float(math.exp(logs)), float(jk.stderr[0]), float(x0), float(jk.stderr[1]))


def fit_two_level_sigma(pairs, n_blocks: int = 20) -> Estimate:
    """Two-level width ``sigma`` (``= sqrt2 tau``) with jackknife standard error; see :func:`fit_two_level`."""
    f = fit_two_level(pairs, n_blocks=n_blocks)
    return Estimate(f.sigma, f.sigma_err)


# ----------------------------------------------------------------- Kolmogorov-Smirnov
def kolmogorov_sf(lam):
    """Asymptotic Kolmogorov survival function
    ``Q(lam) = 2 sum_{j>=1} (-1)^{j-1} e^{-2 j^2 lam^2}``
    (for ``lam < 1.18`` the equivalent fast series
    ``1 - sqrt(2 pi)/lam sum_{j>=1} e^{-(2j-1)^2 pi^2 / (8 lam^2)}``)."""
    scalar = np.ndim(lam) == 0
    lam = np.atleast_1d(_f(lam))
    j = np.arange(1, 21, dtype=float)[:, None]
    small = lam < 1.18
    ls = np.where(small & (lam > 0), lam, 1.0)
    q_small = 1.0 - _SQ2PI / ls * np.exp(-((2 * j - 1) ** 2) * np.pi**2 / (8 * ls * ls)).sum(0)
    q_small = np.where(lam > 0, q_small, 1.0)
    lb = np.where(small, 1.18, lam)
    q_big = 2.0 * (((-1.0) ** (j - 1)) * np.exp(-2.0 * j * j * lb * lb)).sum(0)
    q = np.clip(np.where(small, q_small, q_big), 0.0, 1.0)
    return q[0] if scalar else q


def ks_statistic(samples, cdf, *args, **kwargs) -> float:
    """One-sample KS distance ``D = sup_x |F_n(x) - F(x)|`` of ``samples`` (flattened)
    against ``cdf`` (a callable or a :data:`LAWS` name; ``args`` go to it)."""
    x = np.sort(_f(samples).ravel())
    n = x.size
    f = _f(_get_cdf(cdf)(x, *args, **kwargs))
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def _ks_p(d, n_eff):
    sq = math.sqrt(n_eff)
    return float(kolmogorov_sf((sq + 0.12 + 0.11 / sq) * d))


def ks_test(samples, cdf, *args, **kwargs) -> tuple[float, float]:
    """One-sample KS test: ``(D, p)`` with ``p = Q((sqrt n + 0.12 + 0.11/sqrt n) D)``."""
    d = ks_statistic(samples, cdf, *args, **kwargs)
    return d, _ks_p(d, _f(samples).size)


def ks_2samp(a, b) -> tuple[float, float]:
    """Two-sample KS test: ``D = sup |F_a - F_b|``, ``p`` as in :func:`ks_test` with
    ``n_eff = n_a n_b / (n_a + n_b)``."""
    a, b = np.sort(_f(a).ravel()), np.sort(_f(b).ravel())
    both = np.concatenate([a, b])
    fa = np.searchsorted(a, both, side="right") / a.size
    fb = np.searchsorted(b, both, side="right") / b.size
    d = float(np.max(np.abs(fa - fb)))
    return d, _ks_p(d, a.size * b.size / (a.size + b.size))
