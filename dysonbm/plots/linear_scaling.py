"""Figures of the linear scaling rule (matplotlib, Agg backend; PNG).

``plot_results(results, out_dir)`` dispatches on the model (teacher_student, gaussian_rbm) and
returns the written paths; the figure functions take a :class:`dysonbm.analysis.scaling.ScalingAnalysis`
(or the results) and an output path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from dysonbm.analysis import rmt, scaling
from dysonbm.plots.save import save

_MARKERS = "osD^v<>ph*"


def _labels(analysis):
    if analysis.model == "teacher_student":
        return (r"predicted scale $\sqrt{2\pi}\,\tau$,  $\tau^2 = \alpha A^2/[|B|(2-\alpha(1+(N+1)/|B|))]$",
                "level", r"eigenvalue of $(W+W^\top)/2$")
    return (r"predicted scale $\sqrt{(\alpha/|B|)\,(\mu^2-\kappa)}$", "mode",
            r"$\sigma_h^2\xi^2$ (eigenvalue of $\sigma_h^2 W^\top W$)")


def collapse_plot(analysis: scaling.ScalingAnalysis, path: Path) -> Path:
    """⟨S⟩ (filled) and sqrt(π)σ (open) against the predicted scale, one marker per sweep
    block, one colour per degenerate pair; the theory line (if fixed) and the fitted line."""
    stats = analysis.stats
    xlabel, _, _ = _labels(analysis)
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    pairs = sorted({s.pair for s in stats})
    for s in stats:
        c = colours[pairs.index(s.pair) % len(colours)]
        m = _MARKERS[s.block % len(_MARKERS)]
        ax.errorbar(s.scale, s.mean_s, yerr=s.mean_s_err, fmt=m, color=c, ms=6, capsize=2)
        ax.errorbar(s.scale, s.sqrtpi_sigma, yerr=s.sqrtpi_sigma_err, fmt=m, color=c, mfc="none", ms=9, capsize=2)
    xmax = 1.08 * max(s.scale for s in stats)
    xs = np.linspace(0, xmax, 50)
    fit = analysis.fits["mean_s"]
    if fit.theory is not None:
        ax.plot(xs, fit.theory * xs, "k-", lw=1, label=rf"theory: slope {fit.theory:g}")
    ax.plot(xs, fit.slope * xs, "r--", lw=1,
            label=rf"fit $\langle S\rangle$: slope {fit.slope:.3f} $\pm$ {fit.slope_err:.3f}")
    fs = analysis.fits["sqrtpi_sigma"]
    ax.plot(xs, fs.slope * xs, "b:", lw=1,
            label=rf"fit $\sqrt{{\pi}}\sigma$: slope {fs.slope:.3f} $\pm$ {fs.slope_err:.3f}")
    # legend proxies: marker = sweep, fill = estimator, colour = pair
    for b in sorted({s.block for s in stats}):
        ax.plot([], [], _MARKERS[b % len(_MARKERS)], color="gray", label=analysis.blocks[b].replace("lr", r"$\alpha$").replace("batch_size", "|B|"))
    ax.plot([], [], "o", color="gray", label=r"filled: $\langle S\rangle$")
    ax.plot([], [], "o", color="gray", mfc="none", ms=9, label=r"open: $\sqrt{\pi}\,\sigma$ (two-level fit)")
    if len(pairs) > 1:
        for k in pairs:
            ax.plot([], [], "s", color=colours[pairs.index(k) % len(colours)], label=analysis.spectrum.labels[k])
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, None)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(r"mean pair spacing $\langle S\rangle$,  $\sqrt{\pi}\,\sigma$")
    ax.set_title(f"{analysis.model}: linear scaling collapse")
    ax.legend(fontsize=7, loc="upper left")
    return save(fig, path, tight=True)


def spacing_histogram(results, analysis: scaling.ScalingAnalysis, path: Path) -> Path:
    """Pooled ``s = S/⟨S⟩`` with the β = 1 surmise and the Poisson law."""
    s = scaling.pooled_spacings(results, analysis)
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    ax.hist(s, bins=np.linspace(0, 3.5, 50), density=True, color="0.75", label=f"SGD, {s.size} pair spacings")
    x = np.linspace(0, 3.5, 300)
    d, p = analysis.pooled_ks
    ax.plot(x, rmt.wigner_surmise(x, 1), "k-", label=rf"GOE surmise $\frac{{\pi}}{{2}}s\,e^{{-\pi s^2/4}}$ (KS D={d:.3f}, p={p:.2g})")
    dp, pp = analysis.pooled_ks_poisson
    ax.plot(x, rmt.poisson_spacing(x), "r--", label=rf"Poisson $e^{{-s}}$ (KS D={dp:.3f})")
    ax.set_xlabel(r"normalised spacing $s = S/\langle S\rangle$")
    ax.set_ylabel(r"density $p(s)$")
    ax.set_title(f"{analysis.model}: degenerate-pair spacings, all points pooled")
    ax.legend(fontsize=8)
    return save(fig, path, tight=True)


def _reference_point(results) -> int:
    """The point with the largest lr·steps (the most relaxed), ties to the largest |B|."""
    pts = results.points
    return max(range(len(pts)), key=lambda i: (pts[i]["lr"], pts[i]["batch_size"]))


def eigenvalue_flow(results, analysis: scaling.ScalingAnalysis, path: Path, point: int | None = None) -> Path:
    """Levels against the SGD step: replica mean ± one standard deviation, a few single
    replicas, and the targets (dashed)."""
    spec = analysis.spectrum
    p = _reference_point(results) if point is None else point
    ok = ~np.asarray(results.diverged[p], bool)
    lv = spec.levels[p][ok]  # (R, T, L)
    steps = results.steps
    _, _, ylabel = _labels(analysis)
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(10.5, 4.6), gridspec_kw={"width_ratios": [1, 1]})
    mean, std = lv.mean(axis=0), lv.std(axis=0)
    # right panel: the stationary window, where the noise-split levels are visible
    w = slice(analysis.start, None)
    for j in range(lv.shape[-1]):
        zoom.fill_between(steps[w], mean[w, j] - std[w, j], mean[w, j] + std[w, j], color="C0", alpha=0.2, lw=0)
        zoom.plot(steps[w], mean[w, j], "C0-", lw=1.2)
        for r in range(min(3, lv.shape[0])):
            zoom.plot(steps[w], lv[r, w, j], "-", color="0.4", lw=0.6)
    for t in np.unique(spec.targets[p]):
        zoom.axhline(t, color="k", ls="--", lw=0.8)
    lo, hi = (mean[w] - 4 * std[w]).min(), (mean[w] + 4 * std[w]).max()
    if analysis.model == "teacher_student":
        zoom.set_ylim(lo, hi)
    zoom.set_xlabel("SGD step $n$ (stationary window)")
    zoom.set_ylabel(ylabel)
    zoom.set_title("stationary window (zoom)", fontsize=10)
    for j in range(lv.shape[-1]):
        ax.fill_between(steps, mean[:, j] - std[:, j], mean[:, j] + std[:, j], color="C0", alpha=0.2, lw=0)
        ax.plot(steps, mean[:, j], "C0-", lw=1.2, label="replica mean ± 1 s.d." if j == 0 else None)
        for r in range(min(3, lv.shape[0])):
            ax.plot(steps, lv[r, :, j], "-", color="0.5", lw=0.4, alpha=0.7, label="single replicas" if (j == 0 and r == 0) else None)
    for i, t in enumerate(np.unique(spec.targets[p])):
        name = "teacher eigenvalue $d$" if analysis.model == "teacher_student" else r"fixed point $\mu^2-\kappa$ (or 0)"
        ax.axhline(t, color="k", ls="--", lw=0.8, label=name if i == 0 else None)
    ax.axvline(steps[analysis.start], color="r", ls=":", lw=0.8, label="start of stationary window")
    hp = results.points[p]
    ax.set_xlabel("SGD step $n$")
    ax.set_ylabel(ylabel)
    ax.set_title(rf"{analysis.model}: level flow at $\alpha$ = {hp['lr']:g}, |B| = {hp['batch_size']}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return save(fig, path, tight=True)


def pair_spectra(results, analysis: scaling.ScalingAnalysis, path: Path, point: int | None = None) -> Path:
    """Pooled levels of each degenerate pair at one point with the fitted two-level density."""
    spec = analysis.spectrum
    p = _reference_point(results) if point is None else point
    sel = [s for s in analysis.stats if s.point == p]
    n = len(sel)
    cols = min(n, 2)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    _, _, xlabel = _labels(analysis)
    for ax, s in zip(axes.ravel(), sel):
        lv = scaling.pair_levels(results, spec, p, s.pair, analysis.start).ravel()
        lo, hi = s.centre - 4.5 * s.sigma, s.centre + 4.5 * s.sigma
        ax.hist(lv, bins=np.linspace(lo, hi, 45), density=True, color="0.75", label="both levels, pooled")
        x = np.linspace(lo, hi, 300)
        ax.plot(x, rmt.two_level_pdf(x, s.centre, s.sigma), "k-",
                label=rf"two-level fit $\sigma$={s.sigma:.3g}")
        ax.axvline(s.target, color="r", ls="--", lw=0.8, label=f"target {s.target:.3g}")
        ax.set_title(f"{s.label}: shift {s.shift:+.2g} ± {s.centre_err:.1g}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    hp = results.points[p]
    fig.suptitle(rf"{analysis.model}: degenerate pairs at $\alpha$ = {hp['lr']:g}, |B| = {hp['batch_size']}", fontsize=10)
    return save(fig, path, tight=True)


def plot_analysis(results, analysis: scaling.ScalingAnalysis, out_dir) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = analysis.model
    return [
        collapse_plot(analysis, out / f"{tag}_collapse.png"),
        spacing_histogram(results, analysis, out / f"{tag}_spacings.png"),
        eigenvalue_flow(results, analysis, out / f"{tag}_flow.png"),
        pair_spectra(results, analysis, out / f"{tag}_pairs.png"),
    ]


def plot_results(results, out_dir) -> list[Path]:
    """All figures of a results directory; ``[]`` for models without a linear-scaling analysis."""
    if results.config["model"]["name"] not in ("teacher_student", "gaussian_rbm"):
        return []
    return plot_analysis(results, scaling.analyse(results), out_dir)
