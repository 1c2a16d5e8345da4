"""Figures of a transformer run (matplotlib, Agg backend; PNG), from `dysonbm.analysis.transformer`.

``plot_all(results, analysis, out_dir)`` writes them all and returns the paths: the ESD at
init against Marchenko–Pastur (exact and fitted), the level flow of one replica, the final
ESDs per grid point, the unfolded spacings against the β = 1 surmise and Poisson, the bulk
and tail against lr/|B|, and the losses against the unigram entropy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np  # noqa: E402

from dysonbm.analysis import rmt
from dysonbm.analysis import transformer as ts
from dysonbm.plots.save import save


def _label(hp: dict) -> str:
    return rf"$\alpha$ = {hp['lr']:g}, |B| = {hp['batch_size']}, wd = {hp.get('weight_decay', 0):g}"


def _mp_curve(ax, sigma2, c, style, label):
    lo, hi = rmt.mp_edges(sigma2, c)
    x = np.linspace(float(lo), float(hi), 400)[1:-1]
    ax.plot(x, rmt.marchenko_pastur_pdf(x, sigma2, c), style, lw=1.4, label=label)


def esd_init(results, an: ts.Analysis, path: Path) -> Path:
    pt = an.points[0]
    x = ts.levels(results, an.kind, 0, 0).ravel()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.hist(x, bins=60, density=True, color="0.75", label=f"{x.size} levels (all replicas, layers, heads)")
    law = pt.init
    _mp_curve(ax, law.sigma2, law.c, "k-", rf"MP exact: $\sigma^2$ = {law.sigma2:.3g}, c = {law.c:.3g}")
    _mp_curve(ax, law.fit.sigma2, law.c, "C0--", rf"MP fitted $\sigma^2$ = {law.fit.sigma2:.3g} (c fixed)")
    _mp_curve(ax, law.fit_c.sigma2, law.fit_c.c, "C3:",
              rf"MP fitted $\sigma^2$, c = {law.fit_c.sigma2:.3g}, {law.fit_c.c:.3g}")
    ax.set_xlabel(rf"eigenvalue of $X = W^\top W/{an.n}$ ({an.kind})")
    ax.set_ylabel("density")
    ax.set_title(f"{an.kind} spectrum at initialisation", fontsize=10)
    ax.legend(fontsize=7)
    return save(fig, path, tight=True)


def level_flow(results, an: ts.Analysis, path: Path, point: int = 0) -> Path:
    x = ts.flow(results, an.kind, point)  # (S, heads, m)
    steps = np.asarray(results.steps)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    ax = axes[0]
    for h in range(x.shape[1]):
        for j in range(x.shape[2]):
            ax.plot(steps, x[:, h, j], color=f"C{h % 10}", lw=0.7, label=f"head {h}" if j == 0 else None)
    law = an.points[point].init
    for e in rmt.mp_edges(law.sigma2, law.c):
        ax.axhline(float(e), color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{an.kind} levels (layer 0, replica 0)")
    ax.set_title(f"level flow, {_label(results.points[point])}; dashed: MP edges at init", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    for p, hp in enumerate(results.points):
        lv = np.asarray(results[f"{an.kind}_eigs"][p], float)  # (R, S, L, [H,] m)
        top = lv[..., -1].reshape(lv.shape[0], lv.shape[1], -1).mean(axis=(0, 2))
        med = np.median(lv.reshape(lv.shape[0], lv.shape[1], -1), axis=2).mean(axis=0)
        ax.plot(steps, top, "-", color=f"C{p % 10}", label=_label(hp))
        ax.plot(steps, med, ":", color=f"C{p % 10}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("ensemble mean: top level (solid), median level (dotted)")
    ax.legend(fontsize=7)
    return save(fig, path, tight=True)


def esd_final(results, an: ts.Analysis, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    for p, pt in enumerate(an.points):
        x = ts.levels(results, an.kind, p, -1).ravel()
        x = x[x > 0]
        bins = np.geomspace(x.min(), x.max(), 50)
        ax.hist(x, bins=bins, density=True, histtype="step", color=f"C{p % 10}",
                label=f"{_label(pt.hp)}: tail a = {pt.end.tail.alpha:.2f}" if pt.end.tail else _label(pt.hp))
        ax.axvline(pt.end.fit.edge_hi, color=f"C{p % 10}", ls="--", lw=0.7)
    law = an.points[0].init
    _mp_curve(ax, law.sigma2, law.c, "k-", "MP of the init")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{an.kind} level at the end (dashed: fitted MP edge)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return save(fig, path, tight=True)


def spacings(an: ts.Analysis, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    s = np.concatenate([pt.end.spacings for pt in an.points])
    s0 = np.concatenate([pt.start.spacings for pt in an.points])
    bins = np.linspace(0, 4, 41)
    ax.hist(s0, bins=bins, density=True, histtype="step", color="0.5", label=f"init ({s0.size} spacings)")
    ax.hist(s, bins=bins, density=True, histtype="stepfilled", alpha=0.4, color="C0", label=f"end ({s.size} spacings)")
    g = np.linspace(0, 4, 200)
    ax.plot(g, rmt.wigner_surmise(g, 1), "k-", label=r"$\beta$ = 1 surmise")
    ax.plot(g, rmt.poisson_spacing(g), "k:", label="Poisson")
    ax.set_xlabel("unfolded spacing s")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return save(fig, path, tight=True)


def scaling(an: ts.Analysis, path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for p, pt in enumerate(an.points):
        t, kw = pt.temperature, dict(color=f"C{p % 10}", marker="os^Dv<>"[p % 7], label=_label(pt.hp))
        axes[0].errorbar(t, pt.end.fit.sigma2 / pt.init.sigma2, pt.end.sigma2_err / pt.init.sigma2, **kw)
        if pt.end.tail:
            axes[1].errorbar(t, pt.end.tail.alpha, pt.end.tail.alpha_err, **kw)
        axes[2].errorbar(t, pt.end.r, pt.end.r_err, **kw)
    axes[0].set_ylabel(r"bulk $\sigma^2$ (fitted) / $\sigma^2_{init}$")
    axes[1].set_ylabel("tail exponent a")
    axes[2].set_ylabel(r"$\langle r\rangle$")
    axes[2].axhline(rmt.MEAN_R[1], color="k", ls="--", lw=0.8)
    axes[2].axhline(rmt.MEAN_R["poisson"], color="k", ls=":", lw=0.8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel(r"$\alpha/|B|$")
    axes[0].legend(fontsize=6)
    return save(fig, path, tight=True)


def losses(results, an: ts.Analysis, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    steps = np.asarray(results.steps)
    for p, hp in enumerate(results.points):
        ax.plot(steps, np.nanmean(np.asarray(results["val_bits"][p], float), axis=0), "-", color=f"C{p % 10}",
                label=f"validation, {_label(hp)}")
        ax.plot(steps, np.nanmean(np.asarray(results["train_bits"][p], float), axis=0), ":", color=f"C{p % 10}")
    ax.axhline(an.unigram_bits, color="k", ls="--", lw=0.9, label=f"unigram entropy {an.unigram_bits:.3f}")
    ax.axhline(np.log2(an.vocab), color="0.5", ls="-.", lw=0.8, label=f"log2 V = {np.log2(an.vocab):.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (bits per character); dotted: training windows")
    ax.legend(fontsize=7)
    return save(fig, path, tight=True)


def plot_all(results, an: ts.Analysis, out_dir) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = an.kind
    return [esd_init(results, an, out / f"{k}_esd_init.png"), level_flow(results, an, out / f"{k}_level_flow.png"),
            esd_final(results, an, out / f"{k}_esd_final.png"), spacings(an, out / f"{k}_spacings.png"),
            scaling(an, out / f"{k}_scaling.png"), losses(results, an, out / "losses.png")]
