r"""Spectral diagnostics of any weight matrix (SCIENCE.md §4), on plain numpy arrays.

For an ``n × m`` matrix ``W`` (``n ≥ m``; a wide matrix is transposed) the levels are the
eigenvalues of ``X = WᵀW / n``. With i.i.d. entries of variance ``σ²`` they follow
Marchenko–Pastur with ``c = m/n`` and edges ``σ²(1 ± √c)²``.

* :func:`mp_fit`: ``σ²`` (and optionally ``c``) from the central quantiles of the spectrum,
  which outliers and heavy tails barely move; the bulk edges; the fraction of levels inside
  them (with the Tracy–Widom margin); the KS distance of the spectrum to the fitted law.
* :func:`outliers`: levels above ``x₊`` plus a Tracy–Widom margin ``∝ n^{−2/3}``.
* :func:`tail_exponent`: ``ρ(λ) ∝ λ^{−a}`` above ``λ_min`` by maximum likelihood, ``λ_min``
  minimising the KS distance (Clauset, Shalizi & Newman 2009), with ``(a − 1)/√n_tail``.
* :func:`unfold`: the smoothed counting function (adaptive kernel or polynomial) so that the
  mean spacing is 1; :func:`spacing_stats`: KS distances of the unfolded spacings to the
  β = 1, 2 surmises and Poisson; :func:`spacing_ratio`: ``⟨r⟩`` (no unfolding) with error.
* :func:`level_diffusion`: over a sequence of checkpoints, the variance of the level
  increments per step, ``Var dλ_i ≈ 2D dt``, per level and overall, and the effective
  temperature with the linear-scaling prediction ``T = lr/|B|``.

The reference laws (surmise and MP CDFs, KS statistic, jackknife) are :mod:`dysonbm.analysis.rmt`'s.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from dysonbm.analysis import rmt
from dysonbm.sde.conversions import temperature

__all__ = [
    "MPFit", "TailFit", "SpacingStats", "Diffusion",
    "levels_of", "mp_fit", "mp_quantile", "tw_scale", "outliers", "tail_exponent", "unfold",
    "spacing_ratio", "spacing_stats", "level_diffusion", "MEAN_R",
]

MEAN_R = rmt.MEAN_R

#: TW₁ 99.9 % quantile: an edge level of a pure-noise matrix exceeds x₊ + 3.27 s_TW once in 1000.
TW1_Q999 = 3.27


class MPFit(NamedTuple):
    sigma2: float
    sigma2_err: float
    c: float
    edge_lo: float
    edge_hi: float
    explained: float  # fraction of the levels inside [x₋ − margin, x₊ + margin]
    ks: float  # KS distance of all levels to the fitted law
    n: int
    m: int


class TailFit(NamedTuple):
    alpha: float
    alpha_err: float
    xmin: float
    n_tail: int
    ks: float


class SpacingStats(NamedTuple):
    r: float
    r_err: float
    ks_goe: float
    ks_gue: float
    ks_poisson: float
    n_spacings: int


class Diffusion(NamedTuple):
    D: float  # overall, per unit of ``dt``
    D_err: float
    per_level: np.ndarray  # (N,)
    per_level_err: np.ndarray  # (N,)
    temperature: float | None  # D in the time τ = lr · step (needs lr)
    temperature_err: float | None
    T_pred: float | None  # lr/|B|
    noise_var: float | None  # temperature / T_pred: constant across runs if linear scaling holds


# ----------------------------------------------------------------------------- levels
def levels_of(w) -> tuple[np.ndarray, int, int]:
    """Ascending eigenvalues of ``X = WᵀW/n`` and ``(n, m)``, ``n ≥ m`` (wide ``W`` transposed).

    Through the ``m × m`` Gram matrix (a matmul and a symmetric eigensolve), several times
    faster than an SVD at 4096²; the levels lose only relative precision ~1e-16·x₊.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {w.shape}")
    if w.shape[0] < w.shape[1]:
        w = w.T
    n, m = w.shape
    x = np.linalg.eigvalsh(w.T @ w / n)
    return np.maximum(x, 0.0), n, m


# ------------------------------------------------------------------------ MP fitting
def mp_quantile(p, c: float, sigma2: float = 1.0, grid: int = 4097):
    """Quantiles of Marchenko–Pastur (``c ≤ 1``) by inverting :func:`rmt.marchenko_pastur_cdf`
    on ``x = σ²(1 + c) − 2σ²√c cos θ``, where the CDF is smooth in θ even at a hard edge."""
    theta = np.linspace(0.0, math.pi, grid)
    x = (1.0 + c) - 2.0 * math.sqrt(c) * np.cos(theta)
    cdf = rmt.marchenko_pastur_cdf(x, 1.0, c)
    cdf = np.maximum.accumulate(cdf)
    return sigma2 * np.interp(np.asarray(p, dtype=float), cdf, x)


def _central_probs(m: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(m)
    p = (k + 0.5) / m
    keep = (p >= lo) & (p <= hi)
    return k[keep], p[keep]


def _fit_sigma2(x, c, idx, p):
    q1 = mp_quantile(p, c)
    s2 = float(np.dot(x[idx], q1) / np.dot(q1, q1))
    resid = float(np.sum((x[idx] - s2 * q1) ** 2))
    return s2, resid


def tw_scale(n: int, m: int, sigma2: float = 1.0) -> float:
    """Tracy–Widom scale of the top level of ``X = WᵀW/n`` (Johnstone 2001):
    ``σ² (√(n−1) + √m)(1/√(n−1) + 1/√m)^{1/3} / n ≈ σ² n^{−2/3}(1 + √c)(1 + 1/√c)^{1/3}``."""
    a, b = math.sqrt(max(n - 1, 1)), math.sqrt(m)
    return sigma2 * (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0) / n


def mp_fit(levels, n: int, c: float | None = None, fit_c: bool = False,
           central: tuple[float, float] = (0.1, 0.9)) -> MPFit:
    """Marchenko–Pastur fit of the levels of ``X = WᵀW/n`` (``m = len(levels)``).

    ``σ²`` is the least-squares match of the empirical quantiles in ``central`` to the MP
    quantiles (linear in ``σ²``), so a few outliers or a tail do not drag the bulk. ``c``
    defaults to the aspect ratio ``m/n``; ``fit_c`` fits it as well (golden section).
    The error of ``σ²`` adds in quadrature the entry sampling error ``σ² √(2/(nm))`` and the
    resolution of ``m`` rigid levels, about one mean spacing (``σ²/m``).
    """
    x = np.sort(np.asarray(levels, dtype=float))
    m = x.size
    if m < 2:
        raise ValueError(f"need at least 2 levels, got {m}")
    c0 = m / n if c is None else float(c)
    if not 0 < c0 <= 1:
        raise ValueError(f"c must be in (0, 1], got {c0}")
    idx, p = _central_probs(m, *central)
    if idx.size < 2:
        idx, p = np.arange(m), (np.arange(m) + 0.5) / m
    if fit_c:
        lo, hi = 1e-4, 1.0
        g = (math.sqrt(5) - 1) / 2
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa, fb = _fit_sigma2(x, a, idx, p)[1], _fit_sigma2(x, b, idx, p)[1]
        for _ in range(50):
            if fa < fb:
                hi, b, fb = b, a, fa
                a = hi - g * (hi - lo)
                fa = _fit_sigma2(x, a, idx, p)[1]
            else:
                lo, a, fa = a, b, fb
                b = lo + g * (hi - lo)
                fb = _fit_sigma2(x, b, idx, p)[1]
        c0 = 0.5 * (lo + hi)
    s2, _ = _fit_sigma2(x, c0, idx, p)
    if not s2 > 0:
        raise ValueError("no bulk to fit: the central levels are all zero")
    err = s2 * math.sqrt(2.0 / (n * m) + 1.0 / m**2)
    lo_e, hi_e = (float(v) for v in rmt.mp_edges(s2, c0))
    margin = TW1_Q999 * tw_scale(n, m, s2)
    inside = (x >= lo_e - margin) & (x <= hi_e + margin)
    ks = rmt.ks_statistic(x, rmt.marchenko_pastur_cdf, s2, c0)
    return MPFit(s2, err, c0, lo_e, hi_e, float(inside.mean()), ks, int(n), int(m))


def outliers(levels, n: int, fit: MPFit | None = None, z: float = TW1_Q999) -> np.ndarray:
    """Levels above the MP edge ``x₊ + z s_TW + 3 δx₊`` (descending).

    ``s_TW``: :func:`tw_scale`; ``δx₊ = δσ² (1 + √c)²`` carries the error of the fitted ``σ²``
    into the edge, so that a pure-noise matrix has none at the 10⁻³ level.
    """
    x = np.asarray(levels, dtype=float)
    fit = fit or mp_fit(x, n)
    thr = fit.edge_hi + z * tw_scale(n, fit.m, fit.sigma2) + 3.0 * fit.sigma2_err * (1 + math.sqrt(fit.c)) ** 2
    return np.sort(x[x > thr])[::-1]


# --------------------------------------------------------------------------- tails
def tail_exponent(x, xmin: float | None = None, min_tail: int = 20, max_candidates: int = 500) -> TailFit:
    """Power law ``ρ(x) ∝ x^{−a}`` for ``x ≥ x_min``: ``â = 1 + n / Σ ln(x_i/x_min)``,
    ``σ_â = (â − 1)/√n`` (continuous MLE). Without ``xmin``, ``x_min`` is the candidate (one of
    at most ``max_candidates`` sample values leaving ≥ ``min_tail`` points above) whose fit has
    the smallest KS distance to the tail (Clauset, Shalizi & Newman 2009)."""
    v = np.sort(np.asarray(x, dtype=float).ravel())
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < max(min_tail, 2):
        raise ValueError(f"need at least {max(min_tail, 2)} positive values, got {v.size}")
    logv = np.log(v)
    suffix = np.cumsum(logv[::-1])[::-1]  # Σ_{j≥k} ln v_j

    def fit_at(k):
        nt = v.size - k
        denom = suffix[k] - nt * logv[k]
        alpha = 1.0 + nt / denom if denom > 0 else np.inf
        return alpha, nt

    def ks_at(k, alpha):
        tail = v[k:]
        nt = tail.size
        model = 1.0 - (tail / v[k]) ** (1.0 - alpha)
        i = np.arange(1, nt + 1)
        return float(max(np.max(i / nt - model), np.max(model - (i - 1) / nt)))

    if xmin is not None:
        k = int(np.searchsorted(v, xmin, side="left"))
        alpha, nt = fit_at(k)
        return TailFit(float(alpha), float((alpha - 1) / math.sqrt(nt)), float(v[k]), int(nt), ks_at(k, alpha))
    last = v.size - min_tail
    cand = np.unique(np.linspace(0, last, min(max_candidates, last + 1)).astype(int))
    best = None
    for k in cand:
        if k > 0 and v[k] == v[k - 1]:
            continue
        alpha, nt = fit_at(k)
        if not np.isfinite(alpha):
            continue
        d = ks_at(k, alpha)
        if best is None or d < best[0]:
            best = (d, k, alpha, nt)
    if best is None:
        raise ValueError("no tail: all candidate x_min give a degenerate fit")
    d, k, alpha, nt = best
    return TailFit(float(alpha), float((alpha - 1) / math.sqrt(nt)), float(v[k]), int(nt), d)


# ----------------------------------------------------------------------- unfolding
def _logistic_cdf(z):
    # the logistic kernel (variance matched to a unit Gaussian): smooth, and exp is cheap
    return 0.5 * (1.0 + np.tanh(0.5 * 1.702 * z))


def unfold(levels, method: str = "kernel", neighbours: int | None = None, degree: int = 9,
           edge: float = 0.05) -> np.ndarray:
    """``e_i = N̄(λ_i)``: the levels of one spectrum mapped by a smooth fit of its counting
    function, so that the mean spacing is 1 (for a batch of spectra see :func:`rmt.unfold`).

    ``"kernel"``: ``N̄(x) = Σ_j K((x − λ_j)/h_j)``, a logistic kernel CDF whose bandwidth ``h_j``
    is the half-span of ``neighbours`` levels on each side of ``λ_j`` (default ``√m/2``,
    at least 8): adaptive, so it follows the density where it varies (MP hard edge, tails)
    yet averages over many spacings. ``"poly"``: :func:`rmt.unfold` (least-squares polynomial
    of ``degree`` fitted to the staircase). ``edge`` (a fraction, or a count if ≥ 1) levels are
    dropped at each end, where no smooth fit holds. Returns the kept unfolded levels.
    """
    x = np.sort(np.asarray(levels, dtype=float).ravel())
    m = x.size
    k_edge = int(round(edge * m)) if edge < 1 else int(edge)
    if m - 2 * k_edge < 3:
        raise ValueError(f"{m} levels: too few to unfold")
    if method == "poly":
        return rmt.unfold(x, method="poly", degree=degree, edge=k_edge)
    if method != "kernel":
        raise ValueError(f"unknown unfolding method {method!r}")
    k = neighbours or max(8, int(math.sqrt(m) / 2))
    i = np.arange(m)
    span = x[np.minimum(i + k, m - 1)] - x[np.maximum(i - k, 0)]
    width = span / (np.minimum(i + k, m - 1) - np.maximum(i - k, 0))  # local mean spacing
    h = np.maximum(k * width, np.finfo(float).tiny)
    kept = x[k_edge:m - k_edge]
    out = np.empty(kept.size)
    step = max(1, 2_000_000 // m)  # bound the (chunk × m) kernel matrix
    for a in range(0, kept.size, step):
        z = (kept[a:a + step, None] - x[None, :]) / h[None, :]
        out[a:a + step] = _logistic_cdf(z).sum(axis=1)
    return out


# -------------------------------------------------------------------- local statistics
def spacing_ratio(levels, n_blocks: int = 20) -> rmt.Estimate:
    """``⟨r⟩``, ``r_i = min(S_i, S_{i+1})/max(S_i, S_{i+1})`` (no unfolding), with a block
    jackknife error: neighbouring ratios share a spacing, so ``std/√n`` would be wrong.
    A batch ``(R, N)`` of independent spectra: :func:`rmt.mean_ratio` (error over spectra)."""
    lv = np.asarray(levels, dtype=float)
    if lv.ndim > 1 and lv.reshape(-1, lv.shape[-1]).shape[0] > 1:
        return rmt.mean_ratio(lv)
    r = rmt.spacing_ratios(np.sort(lv.ravel()))
    r = r[np.isfinite(r)]
    if r.size < 2:
        raise ValueError(f"need at least 4 distinct levels for a ratio error, got {r.size + 2}")
    return rmt.jackknife(np.mean, r, n_blocks=min(n_blocks, r.size))


def spacing_stats(levels, method: str = "kernel", edge: float = 0.05, **kw) -> SpacingStats:
    """⟨r⟩ and the KS distances of the unfolded, mean-one spacings to the β = 1, 2 surmises
    and to Poisson (:data:`rmt.LAWS`)."""
    e = unfold(levels, method=method, edge=edge, **kw)
    s = np.diff(e)
    if not s.mean() > 0:
        raise ValueError("degenerate levels: no spacing to normalise")
    s = s / s.mean()
    r = spacing_ratio(levels)
    return SpacingStats(float(r.value), float(r.stderr),
                        rmt.ks_statistic(s, "surmise1"), rmt.ks_statistic(s, "surmise2"),
                        rmt.ks_statistic(s, "poisson"), int(s.size))


# --------------------------------------------------------------------- level flow
def level_diffusion(levels, dt=1.0, chiral: bool = False, lr: float | None = None,
                    batch_size: float | None = None, extrapolate: bool = True,
                    n_blocks: int = 20) -> Diffusion:
    """Diffusion constant of the level motion over a sequence of checkpoints.

    ``levels``: ``(S, N)`` (checkpoints in order) or ``(R, S, N)`` (independent runs), each
    row the ordered levels; ``dt``: time between checkpoints (a scalar, or ``(S − 1,)``),
    in steps by default. DBM levels (SCIENCE.md §2) have ``Var dλ_i = 2D dt``; with
    ``chiral`` the levels are singular values, whose noise is ``√D dB`` (``Var = D dt``).
    Each level's mean rate over the run is removed first (the drift of training is mostly a
    trend). The fluctuating restoring force (confinement, repulsion) biases the variance of an
    increment over ``Δ`` by the relative ``Δ⟨∂F_i/∂λ_i⟩/2 < 0`` (stationary gradient drift),
    and ``⟨1/gap²⟩`` of the repulsion grows like ``log(1/Δ)`` at β = 1. With ``extrapolate``
    (equal ``dt``, ``S ≥ 4``) the estimate is the Richardson extrapolation to lag 0,
    ``D = 2 D(Δ) − D(2Δ)``, which removes the linear part only. Measured on the stationary
    DBM (N = 32, β = 1), with ``s̄`` the bulk spacing: ``D Δ = 0.01 s̄²`` gives −3.8 % raw,
    −2.6 % extrapolated; ``0.05 s̄²`` −12 % and −6.6 %. So checkpoints must be close on the
    scale of the level spacing. Errors: block jackknife over the checkpoint axis
    (increments of neighbouring checkpoints and of neighbouring levels are correlated).
    Overall ``D``: the mean of the per-level ``D_i``.
    Given ``lr``, the time is ``τ = lr·step`` and the effective temperature is ``D`` in it
    (the Coulomb gas is ``∝ exp(−ΣU/D)``); ``batch_size`` adds ``T = lr/|B|`` and the ratio
    ``noise_var = D_τ/T`` (the per-sample noise variance: the same for all runs of a model
    where the linear scaling rule holds, see :func:`dysonbm.sde.diffusion_from_noise`).
    """
    lv = np.asarray(levels, dtype=float)
    if lv.ndim == 2:
        lv = lv[None]
    if lv.ndim != 3 or lv.shape[1] < 3:
        raise ValueError(f"need levels of shape (S, N) or (R, S, N) with S >= 3, got {np.shape(levels)}")
    lv = np.sort(lv, axis=-1)
    n_s = lv.shape[1]
    dt = np.broadcast_to(np.asarray(dt, dtype=float), (n_s - 1,))
    if np.any(~np.isfinite(dt)) or np.any(dt <= 0):
        raise ValueError("dt must be positive")
    t = np.concatenate([[0.0], np.cumsum(dt)])
    rate = (lv[:, -1] - lv[:, 0]) / t[-1]  # (R, N): each level's trend
    factor = 1.0 if chiral else 2.0
    use2 = extrapolate and n_s >= 4 and np.allclose(dt, dt[0])

    def squares(lag):
        d = lv[:, lag:] - lv[:, :-lag]  # (R, S-lag, N)
        span = (t[lag:] - t[:-lag])[None, :, None]
        return np.moveaxis((d - rate[:, None, :] * span) ** 2 / (factor * span), 1, 0)  # (S-lag, R, N)

    q1 = squares(1)
    if use2:
        q = np.stack([q1[:-1], squares(2)], axis=-1)  # aligned by start checkpoint

        def est(qs):
            per = 2.0 * qs[..., 0].mean(axis=(0, 1)) - qs[..., 1].mean(axis=(0, 1))
            return np.append(per, per.mean())
    else:
        q = q1

        def est(qs):
            per = qs.mean(axis=(0, 1))
            return np.append(per, per.mean())

    jk = rmt.jackknife(est, q, n_blocks=min(n_blocks, q.shape[0]))
    value, err = np.asarray(jk.value), np.asarray(jk.stderr)
    big_d, d_err = float(value[-1]), float(err[-1])
    temp = temp_err = t_pred = noise = None
    if lr is not None:
        temp, temp_err = big_d / lr, d_err / lr
        if batch_size is not None:
            t_pred = temperature(lr, batch_size)
            noise = temp / t_pred
    return Diffusion(big_d, d_err, value[:-1], err[:-1], temp, temp_err, t_pred, noise)
