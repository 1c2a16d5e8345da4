"""Spectra of a transformer run (SCIENCE.md §3.5), from its results store alone.

For each recorded matrix kind (``key``, ``query``, ``value``: per layer and head X = WᵀW/d
with W the head's d × d/H block; the MLP matrices per layer) and each grid point, the levels
of all replicas, layers and heads are pooled (they share one law at init) and compared with

* Marchenko–Pastur at init: exact (σ², c) of the init (`Transformer.mp_reference`) and fitted
  (`dysonbm.analysis.spectrum.mp_fit`, c fixed and c fitted), with the KS distance to each;
* at any snapshot: the fitted bulk (σ², edges), the outliers beyond the fitted edge plus the
  Tracy–Widom margin (`spectrum.outliers`, counted per matrix), the power-law tail exponent
  (`spectrum.tail_exponent`), and the local statistics: ⟨r⟩ over the matrices
  (`spectrum.spacing_ratio`) and the unfolded spacings (ensemble unfolding per layer and head:
  a polynomial fit of the counting function pooled over replicas, `rmt.unfold`) with their KS
  distances to the β = 1 surmise and to Poisson.

The learning bar: the validation loss (bits per character) against the unigram entropy of
the corpus; a point passes when its replica-mean final validation loss is at least
``MARGIN_BITS`` below it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from dysonbm.analysis import rmt, spectrum

MARGIN_BITS = 1.0  # "well below" the unigram entropy: by at least one bit per character


class Snapshot(NamedTuple):
    """Pooled statistics of one kind's levels at one point and snapshot."""

    fit: spectrum.MPFit  # c fixed at the matrices' aspect ratio
    sigma2_err: float  # of fit.sigma2: the larger of the fit's and the spread over replicas
    outliers_per_matrix: float
    matrices_with_outliers: float  # fraction
    tail: spectrum.TailFit | None  # None when too few levels
    r: float
    r_err: float
    ks_goe: float
    ks_poisson: float
    spacings: np.ndarray  # unfolded, mean one, pooled


class InitLaw(NamedTuple):
    sigma2: float  # exact, of the init
    c: float
    n: int
    ks_exact: float
    fit: spectrum.MPFit  # c fixed
    fit_c: spectrum.MPFit  # c fitted too


def model_of(results):
    """The `Transformer` a results store was run with (its corpus is rebuilt from the config)."""
    return results.model()


def levels(results, kind: str, point: int, snapshot: int) -> np.ndarray:
    """``(matrices, m)``: the levels of every finite replica, layer (and head) at a snapshot."""
    x = np.asarray(results[f"{kind}_eigs"][point][:, snapshot], float)  # (R, L, [H,] m)
    ok = ~np.asarray(results.diverged[point], bool)
    x = x[ok]
    return x.reshape(-1, x.shape[-1])


def unfolded_spacings(x: np.ndarray, groups: int) -> np.ndarray:
    """Spacings of ``x`` (matrices, m) after unfolding each of ``groups`` interleaved groups of
    matrices (the layer × head slots) by its pooled counting function; mean one per group.

    The counting function is fitted to ``ln λ`` less each matrix's mean ``ln λ``: after training
    the replicas' spectra spread over decades with scales of their own, and a staircase pooled
    in λ itself mixes those scales into the spacings (Poisson-like where the levels are
    Wigner-like). A smooth monotone map per spectrum leaves the local statistics alone."""
    out = []
    logs = np.log(np.maximum(x, np.finfo(float).tiny))
    per = (logs - logs.mean(axis=1, keepdims=True)).reshape(-1, groups, x.shape[-1])  # (R, slots, m)
    edge = max(1, x.shape[-1] // 16)
    for g in range(groups):
        e = rmt.unfold(per[:, g], method="poly", degree=min(9, x.shape[-1] // 2), edge=edge)
        s = np.diff(e, axis=-1).ravel()
        s = s[np.isfinite(s) & (s > 0)]
        if s.size and s.mean() > 0:
            out.append(s / s.mean())
    return np.concatenate(out) if out else np.zeros(0)


def snapshot_stats(x: np.ndarray, n: int, c: float, groups: int) -> Snapshot:
    """Statistics of pooled levels ``x`` (matrices, m) of matrices with n rows (module doc)."""
    pooled = x.ravel()
    fit = spectrum.mp_fit(pooled, n, c=c)
    thr_levels = spectrum.outliers(pooled, n, fit)
    thr = thr_levels.min() if thr_levels.size else np.inf
    per_matrix = (x >= thr).sum(axis=1)
    try:
        tail = spectrum.tail_exponent(pooled)
    except ValueError:
        tail = None
    sigma2_err = max(fit.sigma2_err, replica_spread(x, n, c, groups))
    r = spectrum.spacing_ratio(x)
    s = unfolded_spacings(x, groups)
    ks_goe = rmt.ks_statistic(s, "surmise1") if s.size else float("nan")
    ks_poisson = rmt.ks_statistic(s, "poisson") if s.size else float("nan")
    return Snapshot(fit, sigma2_err, float(per_matrix.mean()), float((per_matrix > 0).mean()), tail,
                    float(r.value), float(r.stderr), ks_goe, ks_poisson, s)


def replica_spread(x: np.ndarray, n: int, c: float, groups: int) -> float:
    """Standard error of the pooled σ² from the scatter of the replicas' own fits (each over
    its ``groups`` matrices): trained replicas differ by more than the sampling of one law."""
    per = x.reshape(-1, groups * x.shape[-1])
    if per.shape[0] < 2:
        return 0.0
    s2 = np.array([spectrum.mp_fit(row, n, c=c).sigma2 for row in per])
    return float(s2.std(ddof=1) / math.sqrt(s2.size))


def init_law(x: np.ndarray, sigma2: float, c: float, n: int) -> InitLaw:
    pooled = x.ravel()
    return InitLaw(sigma2, c, n, rmt.ks_statistic(pooled, rmt.marchenko_pastur_cdf, sigma2, c),
                   spectrum.mp_fit(pooled, n, c=c), spectrum.mp_fit(pooled, n, c=c, fit_c=True))


class PointSummary(NamedTuple):
    hp: dict
    temperature: float  # lr/|B|
    init: InitLaw
    start: Snapshot
    end: Snapshot
    val_bits: float  # replica mean at the last snapshot
    val_bits_err: float
    train_bits: float
    diverged: int


class Analysis(NamedTuple):
    kind: str
    n: int
    c: float
    groups: int  # matrices per replica (layers × heads)
    points: list  # PointSummary per grid point
    unigram_bits: float
    vocab: int
    passed: bool
    equal_temperature: list  # (point a, point b, σ²_b/σ²_a, error) at equal lr/|B|


def _mean_err(v):
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return (float(v.mean()) if v.size else float("nan")), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def analyse(results, kind: str = "key") -> Analysis:
    """Per grid point: the init law, the spectra at the first and last snapshot, the losses."""
    model = model_of(results)
    groups = model.layers * (model.heads if kind in ("key", "query", "value") else 1)
    points = []
    for p, hp in enumerate(results.points):
        sigma2, c, n = model.mp_reference(kind, float(hp["init_std"]))
        x0, x1 = levels(results, kind, p, 0), levels(results, kind, p, -1)
        ok = ~np.asarray(results.diverged[p], bool)
        val = np.asarray(results["val_bits"][p][:, -1], float)[ok]
        train = np.asarray(results["train_bits"][p][:, -1], float)[ok]
        vb, vb_err = _mean_err(val)
        points.append(PointSummary(dict(hp), float(hp["lr"]) / float(hp["batch_size"]), init_law(x0, sigma2, c, n),
                                   snapshot_stats(x0, n, c, groups), snapshot_stats(x1, n, c, groups),
                                   vb, vb_err, _mean_err(train)[0], int((~ok).sum())))
    unigram = model.encoded().unigram_bits
    passed = all(math.isfinite(pt.val_bits) and pt.val_bits < unigram - MARGIN_BITS for pt in points)
    return Analysis(kind, points[0].init.n, points[0].init.c, groups, points, unigram, model.vocab, passed,
                    equal_temperature(points))


def equal_temperature(points: list) -> list:
    """Pairs of points with the same lr/|B| but different lr: the ratio of their fitted bulk
    variances at the end, with its error (1 if the bulk follows the linear scaling rule)."""
    out = []
    for a in range(len(points)):
        for b in range(a + 1, len(points)):
            pa, pb = points[a], points[b]
            if math.isclose(pa.temperature, pb.temperature, rel_tol=1e-9) and pa.hp["lr"] != pb.hp["lr"]:
                fa, fb = pa.end.fit, pb.end.fit
                ratio = fb.sigma2 / fa.sigma2
                err = ratio * math.hypot(pa.end.sigma2_err / fa.sigma2, pb.end.sigma2_err / fb.sigma2)
                out.append((a, b, ratio, err))
    return out


def flow(results, kind: str, point: int, replica: int = 0, layer: int = 0) -> np.ndarray:
    """``(snapshots, heads, m)`` levels of one replica and layer over the run (level flow)."""
    x = np.asarray(results[f"{kind}_eigs"][point][replica], float)  # (S, L, [H,] m)
    x = x[:, layer]
    return x if x.ndim == 3 else x[:, None]
