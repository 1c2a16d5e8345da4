"""The linear scaling rule, measured on a results directory (SCIENCE.md §1, §2, §3.1, §3.2).

Everything here reads only a :class:`dysonbm.io.Results`. The observable is a spectrum per
replica and snapshot whose levels relax to known targets; a *degenerate pair* (two levels with
one target) is split by the SGD noise into a 2×2 GOE-like pair. Per grid point and pair, over
the late snapshots (stationary state) pooled over replicas:

* the mean spacing ``⟨S⟩ = mean |x₂ − x₁|`` and the two-level width ``σ``
  (:func:`dysonbm.analysis.rmt.fit_two_level`); for a 2×2 GOE ``⟨S⟩ = sqrt(π) σ = sqrt(2π) τ``;
* the centre shift ``x₀ − target`` (non-universal, linear in ``α/|B|``);
* the spacings ``s = S/⟨S⟩`` against the β = 1 surmise ``(π/2) s e^{−πs²/4}`` (KS).

Predicted scale ``x`` of each pair (the linear-scaling variable):

* teacher–student, levels ``eigs`` of ``(W + Wᵀ)/2`` around the teacher's: ``x`` is ``⟨S⟩`` of
  the exact stationary law of the discrete update with fresh data every step
  (:mod:`dysonbm.models.teacher_student`): N = 2 with a degenerate teacher,
  ``stationary_mean_spacing``; otherwise ``sqrt(2π v)``, ``v`` the exact off-diagonal variance of
  the symmetric part (``stationary_offdiag_var``); second moments are exact, the law's small
  non-Gaussian part (0 to −0.2% on ⟨S⟩ at the published points) is left out. Slope 1.
  Its small-α/|B| limit is ``sqrt(2π) τ``, ``τ² = αA² / (|B| (2 − α(1 + (N+1)/|B|)))``,
  0.04–1% above it at the published points (``x ≈ sqrt(π) sqrt(αA²/|B|)`` to leading order).
  For the protocols that share a finite dataset it is the reference the data scatter around,
  not their law;
* Gaussian RBM, levels ``xi2_by_mode`` (``σ_h² ξ²``, each assigned to its target mode by
  eigenvector overlap) around ``μ² − κ``: ``x = sqrt((α/|B|)(μ² − κ))`` with a prefactor the
  theory does not fix (fitted).

The collapse fits ``y = b x`` through the origin (weighted least squares) over the α-sweep and
the |B|-sweep together; each point's deviation from the line is kept, since the rule must be
seen to break down at large α and small |B|.

Statistical errors: replicas are independent, snapshots of one replica are not. ``⟨S⟩``'s error
is the spread of per-replica means over replicas; ``σ``'s is the jackknife over blocks of whole
replicas; KS p-values use ``n_eff = n / g`` with ``g = (1 + ρ)/(1 − ρ)`` from the lag-one
autocorrelation ``ρ`` of ``S`` between snapshots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dysonbm.analysis import rmt
from dysonbm.analysis.levels import Spectrum, degenerate_groups, stationary_start
from dysonbm.sde.conversions import temperature

SQRT_PI = math.sqrt(math.pi)


# ----------------------------------------------------------------------------- structure
@dataclass
class PairStat:
    """One degenerate pair at one grid point, late snapshots pooled over replicas."""

    point: int
    pair: int  # index into Spectrum.pairs
    label: str
    hp: dict
    block: int  # sweep block of the point
    temperature: float  # α/|B|
    scale: float  # predicted scale x
    target: float
    n_replicas: int
    n_snapshots: int
    mean_s: float
    mean_s_err: float
    sigma: float
    sigma_err: float
    centre: float
    centre_err: float
    ks_d: float  # vs β = 1 surmise
    ks_p: float
    ks_poisson_d: float
    ks_poisson_p: float
    mean_r_autocorr: float  # lag-one autocorrelation ρ of S between snapshots
    n_eff: float

    @property
    def sqrtpi_sigma(self) -> float:
        return SQRT_PI * self.sigma

    @property
    def sqrtpi_sigma_err(self) -> float:
        return SQRT_PI * self.sigma_err

    @property
    def shift(self) -> float:
        return self.centre - self.target


@dataclass
class CollapseFit:
    """``y = b x`` through the origin over the listed pair statistics."""

    quantity: str  # "mean_s" or "sqrtpi_sigma"
    slope: float
    slope_err: float  # 1/sqrt(Σ x²/e²), inflated by sqrt(χ²/dof) when that exceeds 1
    slope_err_stat: float  # without the inflation
    chi2_dof: float
    theory: float | None
    x: np.ndarray
    y: np.ndarray
    yerr: np.ndarray
    deviation: np.ndarray  # y/(b_ref x) − 1, b_ref = theory if known else the fitted slope
    pull: np.ndarray  # (y − b_ref x)/yerr
    which: list[int]  # indices into the stats list

    @property
    def ratio(self) -> float | None:
        return None if self.theory is None else self.slope / self.theory


@dataclass
class Comparison:
    """Two grid points with equal α/|B| (and equal other hyperparameters) for one pair."""

    point_a: int
    point_b: int
    pair: int
    label: str
    temperature: float
    mean_s_ratio: float  # ⟨S⟩_b/⟨S⟩_a
    mean_s_ratio_err: float
    ks_d: float  # two-sample KS on the raw spacings S
    ks_p: float


@dataclass
class ScalingAnalysis:
    model: str
    spectrum: Spectrum
    stats: list[PairStat]
    fits: dict[str, CollapseFit]  # "mean_s", "sqrtpi_sigma" over all points
    block_fits: dict[tuple[int, str], CollapseFit]  # per sweep block
    comparisons: list[Comparison]
    pooled_ks: tuple[float, float]  # s = S/⟨S⟩ pooled over every point and pair, vs surmise
    pooled_ks_poisson: tuple[float, float]
    shift_slopes: dict[int, tuple[float, float]]  # pair -> (d shift / d(α/|B|), error)
    blocks: list[str]  # description of each sweep block
    start: int  # first snapshot of the stationary window
    singles: list[dict]
    published: dict | None = None  # teacher–student: `published_collapse`


# ----------------------------------------------------------------------------- helpers
def sweep_blocks(results) -> tuple[np.ndarray, list[str]]:
    """Sweep block of each grid point (points are the blocks' product grids, concatenated)
    and a description of each block, e.g. ``"lr sweep at batch_size = 16"``."""
    blocks = results.config.get("sweep") or []
    n_points = len(results.points)
    if not blocks:
        return np.zeros(n_points, int), ["single point"]
    of, names = [], []
    for i, block in enumerate(blocks):
        size = int(np.prod([len(v) for v in block.values()]))
        of += [i] * size
        varying = [k for k, v in block.items() if len(v) > 1]
        fixed = [f"{k} = {v[0]}" for k, v in block.items() if len(v) == 1]
        desc = (" × ".join(varying) + " sweep") if varying else "point"
        names.append(desc + (f" at {', '.join(fixed)}" if fixed else ""))
    of = np.asarray(of[:n_points])
    return of, names


def spectrum(results, observable: str | None = None) -> Spectrum:
    """The levels and targets of a results directory's model (teacher_student: ``eigs``;
    gaussian_rbm: ``xi2_by_mode``, the levels in target-mode order, or ``xi2`` where a run did
    not record it; linear_net: ``observable``, one of its level species, default ``gram1``)."""
    model = results.config["model"]
    name = model["name"]
    points = results.points
    if name == "linear_net":
        from dysonbm.analysis.linear_net import level_spectrum

        return level_spectrum(results, observable or "gram1")
    if name == "teacher_student":
        if "eigs" not in results:
            raise ValueError("teacher_student results need the `eigs` spectrum (record.spectra = true)")
        levels = results["eigs"]  # ascending
        target = np.sort(np.asarray(model.get("teacher_eigs", (2.0, 2.0)), float))
        targets = np.broadcast_to(target, (len(points), target.size)).copy()
        pairs, singles = degenerate_groups(target)
        labels = {i: f"d = {target[p[0]]:g}" for i, p in enumerate(pairs)}
        labels.update({-1 - j: f"d = {target[j]:g}" for j in singles})
        return Spectrum("eigs", levels, targets, pairs, singles, labels)
    if name == "gaussian_rbm":
        from dysonbm.models.gaussian_rbm import DEGENERATE_RTOL, GaussianRBM, fixed_points, lattice_eigenvalues

        defaults = GaussianRBM()
        get = lambda k: model.get(k, getattr(defaults, k))  # noqa: E731
        n_v, n_h = int(get("n_visible")), int(get("n_hidden"))
        if get("kernel") == "lattice":
            kappa = lattice_eigenvalues(n_v, float(get("m2")))
        else:
            kappa = np.sort(np.linalg.eigvalsh(np.asarray(get("kernel"), float)))
        # slot j of `xi2_by_mode` is the level assigned to the j-th softest target eigenvector
        # by eigenvector overlap; `xi2` (results written without it) pairs levels by rank,
        # which mixes modes once a level strays past a neighbouring mode's
        name = "xi2_by_mode" if "xi2_by_mode" in results else "xi2"
        levels = results[name]
        targets = np.stack([fixed_points(kappa, p["mu2"], p["sigma_h"], n_h) for p in points])
        # group by κ (not by target, which depends on the point's μ²); κ ascending = target descending
        k_of = np.full(n_h, np.inf)
        k_of[: min(n_h, n_v)] = kappa[: min(n_h, n_v)]
        pairs, singles = degenerate_groups(np.where(np.isfinite(k_of), k_of, -1.0 - np.arange(n_h)), DEGENERATE_RTOL)
        # cut-off modes (target 0 at every point) carry no pair statistics
        cut = np.all(targets <= 0, axis=0)
        singles += [j for p in pairs if cut[p[0]] for j in p]
        pairs = [p for p in pairs if not cut[p[0]]]
        singles = sorted(singles)
        labels = {i: f"κ = {k_of[p[0]]:.3g}" for i, p in enumerate(pairs)}
        labels.update({-1 - j: (f"κ = {k_of[j]:.3g}" if np.isfinite(k_of[j]) else "unmatched") for j in singles})
        kap = {i: float(k_of[p[0]]) for i, p in enumerate(pairs)}
        return Spectrum(name, levels, targets, pairs, singles, labels, kap)
    raise ValueError(f"no linear-scaling analysis for model {name!r}")


def predicted_scale(results, spec: Spectrum, point: int, pair: int) -> float:
    """The predicted scale ``x`` of a pair's spacing (module docstring)."""
    hp = results.points[point]
    model = results.config["model"]
    if model["name"] == "linear_net":
        from dysonbm.analysis.linear_net import predicted_pair_scale

        return predicted_pair_scale(results, spec, point)
    if model["name"] == "teacher_student":
        from dysonbm.models.teacher_student import stationary_mean_spacing, stationary_offdiag_var

        n = int(model.get("n", 2))
        teacher = np.asarray(model.get("teacher_eigs", (2.0, 2.0)), float)
        try:
            if n == 2 and teacher[0] == teacher[1]:
                return stationary_mean_spacing(hp["lr"], hp["batch_size"], hp["noise"])
            return math.sqrt(2.0 * math.pi * stationary_offdiag_var(hp["lr"], hp["batch_size"], hp["noise"], n))
        except ValueError:  # no stationary state at this (α, |B|): the replicas diverge
            return float("nan")
    gap = hp["mu2"] - spec.kappa[pair]
    return math.sqrt(temperature(hp["lr"], hp["batch_size"]) * max(gap, 0.0))


def theory_slope(results) -> float | None:
    """Slope of ``⟨S⟩`` (and ``sqrt(π)σ``) against the predicted scale, if the theory fixes it."""
    return 1.0 if results.config["model"]["name"] in ("teacher_student", "linear_net") else None


def lag_one_autocorr(s: np.ndarray) -> float:
    """Lag-one autocorrelation of ``s`` ``(R, T)`` along snapshots, pooled over replicas."""
    if s.shape[1] < 2:
        return 0.0
    d = s - s.mean()
    var = np.mean(d * d)
    if var <= 0:
        return 0.0
    return float(np.mean(d[:, 1:] * d[:, :-1]) / var)


def effective_n(n: int, rho: float, per_replica: int) -> float:
    """``n / g`` with ``g = (1 + ρ)/(1 − ρ)`` clipped to ``[1, per_replica]``."""
    rho = min(max(rho, 0.0), 0.999)
    g = min(max((1 + rho) / (1 - rho), 1.0), float(per_replica))
    return n / g


def ks_test_neff(samples, cdf, n_eff: float) -> tuple[float, float]:
    """One-sample KS distance with the p-value of ``n_eff`` independent samples."""
    d = rmt.ks_statistic(samples, cdf)
    sq = math.sqrt(max(n_eff, 1.0))
    return d, float(rmt.kolmogorov_sf((sq + 0.12 + 0.11 / sq) * d))


def ks_2samp_neff(a, b, n_a: float, n_b: float) -> tuple[float, float]:
    """Two-sample KS distance with the p-value of ``n_a``, ``n_b`` independent samples."""
    d, _ = rmt.ks_2samp(a, b)
    n = n_a * n_b / (n_a + n_b)
    sq = math.sqrt(max(n, 1.0))
    return d, float(rmt.kolmogorov_sf((sq + 0.12 + 0.11 / sq) * d))


def pair_levels(results, spec: Spectrum, point: int, pair: int, start: int) -> np.ndarray:
    """``(R_ok, T, 2)`` levels of a pair over the stationary window, diverged replicas dropped."""
    ok = ~np.asarray(results.diverged[point], bool)
    i, j = spec.pairs[pair]
    lv = spec.levels[point][ok][:, start:][..., [i, j]]
    finite = np.all(np.isfinite(lv), axis=(1, 2))
    return np.sort(lv[finite], axis=-1)


def _pair_stat(results, spec, point, pair, start, block, max_fit_pairs) -> PairStat:
    hp = results.points[point]
    lv = pair_levels(results, spec, point, pair, start)
    r, t = lv.shape[:2]
    s = lv[..., 1] - lv[..., 0]  # (R, T)
    per_rep = s.mean(axis=1)
    mean_s = float(s.mean())
    mean_s_err = float(per_rep.std(ddof=1) / math.sqrt(r)) if r > 1 else float("nan")
    rho = lag_one_autocorr(s)
    n_eff = effective_n(s.size, rho, t)
    flat = lv.reshape(-1, 2)  # replica-major: jackknife blocks are groups of whole replicas
    if flat.shape[0] > max_fit_pairs:
        # the maximum-likelihood fit is O(n) per Newton step and per jackknife block: thin the
        # snapshots evenly (keeps whole replicas together)
        keep = max(1, math.ceil(t / math.ceil(flat.shape[0] / max_fit_pairs)))
        idx = np.linspace(0, t - 1, keep).round().astype(int)
        flat = lv[:, np.unique(idx)].reshape(-1, 2)
    fit = rmt.fit_two_level(flat)
    snorm = s.ravel() / mean_s
    ks_d, ks_p = ks_test_neff(snorm, rmt.wigner_surmise_cdf, n_eff)
    kp_d, kp_p = ks_test_neff(snorm, rmt.poisson_spacing_cdf, n_eff)
    target = float(spec.targets[point, spec.pairs[pair][0]])
    return PairStat(
        point=point, pair=pair, label=spec.labels[pair], hp=dict(hp), block=int(block),
        temperature=temperature(hp["lr"], hp["batch_size"]), scale=predicted_scale(results, spec, point, pair),
        target=target, n_replicas=r, n_snapshots=t, mean_s=mean_s, mean_s_err=mean_s_err,
        sigma=fit.sigma, sigma_err=fit.sigma_err, centre=fit.x0, centre_err=fit.x0_err,
        ks_d=ks_d, ks_p=ks_p, ks_poisson_d=kp_d, ks_poisson_p=kp_p,
        mean_r_autocorr=rho, n_eff=n_eff,
    )


def pair_stats(results, start: int | None = None, max_fit_pairs: int = 20000,
               observable: str | None = None) -> tuple[Spectrum, list[PairStat]]:
    """:class:`PairStat` of every (grid point, degenerate pair), points outer."""
    spec = spectrum(results, observable)
    start = stationary_start(results) if start is None else start
    block_of, _ = sweep_blocks(results)
    stats = [
        _pair_stat(results, spec, p, k, start, block_of[p], max_fit_pairs)
        for p in range(len(results.points))
        for k in range(len(spec.pairs))
    ]
    return spec, stats


def fit_through_origin(x, y, yerr, theory: float | None = None, quantity: str = "", which=None) -> CollapseFit:
    """Weighted least squares ``y = b x``: ``b = Σ w x y / Σ w x²``, ``w = 1/e²``,
    ``err(b) = 1/sqrt(Σ w x²)`` (times ``sqrt(χ²/dof)`` when the scatter exceeds the errors)."""
    x, y, e = (np.asarray(a, float) for a in (x, y, yerr))
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(e) & (e > 0)
    w = np.where(good, 1.0 / np.where(good, e, 1.0) ** 2, 0.0)
    xg, yg = np.where(good, x, 0.0), np.where(good, y, 0.0)
    sxx = float(np.sum(w * xg * xg))
    b = float(np.sum(w * xg * yg) / sxx) if sxx > 0 else float("nan")
    err = 1.0 / math.sqrt(sxx) if sxx > 0 else float("nan")
    dof = int(good.sum()) - 1
    chi2 = float(np.sum(w * (yg - b * xg) ** 2))
    chi2_dof = chi2 / dof if dof > 0 else float("nan")
    ref = theory if theory is not None else b
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = y / (ref * x) - 1.0
        pull = (y - ref * x) / e
    return CollapseFit(
        quantity=quantity, slope=b, slope_err=err * math.sqrt(max(chi2_dof, 1.0)) if dof > 0 else err,
        slope_err_stat=err, chi2_dof=chi2_dof, theory=theory, x=x, y=y, yerr=e,
        deviation=dev, pull=pull, which=list(range(x.size)) if which is None else list(which),
    )


def collapse(stats: list[PairStat], quantity: str, theory: float | None = None, which=None) -> CollapseFit:
    """Collapse of ``quantity`` (``"mean_s"`` or ``"sqrtpi_sigma"``) against the predicted scale."""
    which = list(range(len(stats))) if which is None else list(which)
    x = [stats[i].scale for i in which]
    y = [getattr(stats[i], quantity) for i in which]
    e = [getattr(stats[i], quantity + "_err") for i in which]
    return fit_through_origin(x, y, e, theory, quantity, which)


def equal_temperature_comparisons(results, spec: Spectrum, stats: list[PairStat], start: int,
                                  rtol: float = 1e-9) -> list[Comparison]:
    """Every two grid points with equal ``α/|B|`` (all other hyperparameters equal, α different):
    two-sample KS on the raw spacings ``S`` of each pair and the ratio of ``⟨S⟩``."""
    points = results.points
    by = {(s.point, s.pair): s for s in stats}
    out = []
    for a in range(len(points)):
        for b in range(a + 1, len(points)):
            pa, pb = points[a], points[b]
            ta, tb = temperature(pa["lr"], pa["batch_size"]), temperature(pb["lr"], pb["batch_size"])
            others = [k for k in pa if k not in ("lr", "batch_size")]
            if abs(ta - tb) > rtol * ta or pa["lr"] == pb["lr"] or any(pa[k] != pb[k] for k in others):
                continue
            for k in range(len(spec.pairs)):
                sa, sb = by[(a, k)], by[(b, k)]
                la, lb = (pair_levels(results, spec, p, k, start) for p in (a, b))
                xa, xb = (lv[..., 1] - lv[..., 0] for lv in (la, lb))
                d, p = ks_2samp_neff(xa, xb, sa.n_eff, sb.n_eff)
                ratio = sb.mean_s / sa.mean_s
                rerr = ratio * math.hypot(sa.mean_s_err / sa.mean_s, sb.mean_s_err / sb.mean_s)
                out.append(Comparison(a, b, k, spec.labels[k], ta, ratio, rerr, d, p))
    return out


def shift_slopes(stats: list[PairStat]) -> dict[int, tuple[float, float]]:
    """Per pair, the slope of the centre shift ``x₀ − target`` against ``α/|B|`` (through 0)."""
    out = {}
    for k in sorted({s.pair for s in stats}):
        sel = [s for s in stats if s.pair == k]
        f = fit_through_origin([s.temperature for s in sel], [s.shift for s in sel], [s.centre_err for s in sel])
        out[k] = (f.slope, f.slope_err)
    return out


def single_levels(results, spec: Spectrum, start: int) -> list[dict]:
    """Mean, spread and target of every non-degenerate level at every point."""
    out = []
    for p in range(len(results.points)):
        ok = ~np.asarray(results.diverged[p], bool)
        for j in spec.singles:
            x = spec.levels[p][ok][:, start:, j]
            x = x[np.isfinite(x)]
            out.append({
                "point": p, "level": j, "label": spec.labels[-1 - j], "target": float(spec.targets[p, j]),
                "mean": float(x.mean()) if x.size else float("nan"),
                "std": float(x.std()) if x.size else float("nan"),
            })
    return out


#: the published fit of ⟨S⟩ = a·sqrt(αA²/|B|) over the three teacher–student sweeps (SCIENCE.md §3.1)
PUBLISHED_TS_SLOPE = (1.878, 0.034)


def published_collapse(stats: list[PairStat]) -> dict:
    """The teacher–student collapse in the published variable: ``⟨S⟩ = a·sqrt(αA²/|B|)`` over
    every point, fitted two ways, each compared with `PUBLISHED_TS_SLOPE`:

    * ``"unweighted"``: plain least squares through the origin, the error from the scatter
      of the points about the line (the points scatter by several percent under the
      published protocol, far beyond their statistical errors);
    * ``"weighted"``: `fit_through_origin` with the points' errors (inflated by sqrt(χ²/dof)).

    ``z`` is (a − a_published)/sqrt(err² + err_published²).
    """
    x = np.array([math.sqrt(s.hp["lr"] * s.hp["noise"] ** 2 / s.hp["batch_size"]) for s in stats])
    y = np.array([s.mean_s for s in stats])
    e = np.array([s.mean_s_err for s in stats])
    ref, ref_err = PUBLISHED_TS_SLOPE
    plain = float(np.sum(x * y) / np.sum(x * x))
    plain_err = math.sqrt(float(np.sum((y - plain * x) ** 2)) / (x.size - 1) / float(np.sum(x * x)))
    weighted = fit_through_origin(x, y, e, quantity="mean_s")
    out = {"published": PUBLISHED_TS_SLOPE, "x": x, "y": y, "yerr": e, "points": x.size}
    for name, (a, err) in (("unweighted", (plain, plain_err)), ("weighted", (weighted.slope, weighted.slope_err))):
        out[name] = {"slope": a, "err": err, "z": (a - ref) / math.hypot(err, ref_err)}
    out["weighted"]["chi2_dof"] = weighted.chi2_dof
    return out


def analyse(results, start: int | None = None, max_fit_pairs: int = 20000,
            observable: str | None = None) -> ScalingAnalysis:
    """The full linear-scaling analysis of a teacher_student, gaussian_rbm or linear_net results
    directory (``observable``: linear_net's level species, `spectrum`)."""
    start = stationary_start(results) if start is None else start
    spec, stats = pair_stats(results, start, max_fit_pairs, observable)
    theory = theory_slope(results)
    fits = {q: collapse(stats, q, theory) for q in ("mean_s", "sqrtpi_sigma")}
    _, names = sweep_blocks(results)
    block_fits = {}
    for blk in sorted({s.block for s in stats}):
        which = [i for i, s in enumerate(stats) if s.block == blk]
        for q in ("mean_s", "sqrtpi_sigma"):
            block_fits[(blk, q)] = collapse(stats, q, theory, which)
    n_eff = sum(s.n_eff for s in stats)
    analysis = ScalingAnalysis(
        model=results.config["model"]["name"], spectrum=spec, stats=stats, fits=fits,
        block_fits=block_fits,
        comparisons=equal_temperature_comparisons(results, spec, stats, start),
        pooled_ks=(float("nan"), float("nan")), pooled_ks_poisson=(float("nan"), float("nan")),
        shift_slopes=shift_slopes(stats), blocks=names, start=start,
        singles=single_levels(results, spec, start),
        published=published_collapse(stats) if results.config["model"]["name"] == "teacher_student" else None,
    )
    pooled = pooled_spacings(results, analysis)
    if pooled.size:
        analysis.pooled_ks = ks_test_neff(pooled, rmt.wigner_surmise_cdf, n_eff)
        analysis.pooled_ks_poisson = ks_test_neff(pooled, rmt.poisson_spacing_cdf, n_eff)
    return analysis


def pooled_spacings(results, analysis: ScalingAnalysis) -> np.ndarray:
    """``s = S/⟨S⟩`` of every pair at every point, pooled (each normalised by its own ⟨S⟩)."""
    out = []
    for s in analysis.stats:
        lv = pair_levels(results, analysis.spectrum, s.point, s.pair, analysis.start)
        out.append(((lv[..., 1] - lv[..., 0]) / s.mean_s).ravel())
    return np.concatenate(out) if out else np.zeros(0)
