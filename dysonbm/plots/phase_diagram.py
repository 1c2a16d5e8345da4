"""Figures of the multilayer SGD phase diagram (SCIENCE.md §3.3), from `phases.assemble`.

Axes follow the published diagram: horizontal 1/σ_W (weak disorder to the right), vertical
the temperature T = α/|B|, both logarithmic. Each cell is one grid point.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, TwoSlopeNorm

from dysonbm.analysis import phases
from dysonbm.analysis.level_sde import log_changes
from dysonbm.plots.save import save

LEVELS = phases.DRIFT_LEVELS
PHASE_COLORS = {
    "ordered": "#4c9be8", "paramagnetic": "#e8804c", "glassy": "#8fbf5a",
    "divergent": "#555555", "unresolved": "#dddddd",
}


def _drift_label(summary, lv) -> str:
    """Legend entry of a drift-fraction contour, naming the criterion variant it is drawn from."""
    rule = summary.get("drift_rule")
    return f"drift fraction {lv}" + (f" ({rule})" if rule else "")


def _edges(centres):
    """Cell edges on a log axis: geometric midpoints, extended by half a step at the ends."""
    c = np.log(np.asarray(centres, dtype=float))
    if c.size == 1:
        return np.exp(np.array([c[0] - 0.5, c[0] + 0.5]))
    mid = 0.5 * (c[1:] + c[:-1])
    return np.exp(np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]]))


def _grid(summary, key, select=None):
    """(1/σ_W values, T values, grid[T, 1/σ_W]) of ``summary[key]`` for the points ``select``."""
    sel = np.ones(summary["T"].size, bool) if select is None else select
    values = summary[key] if key in summary else summary["fractions"][key]
    T_u, inv_u, g = phases.to_grid(np.asarray(values)[sel], summary["T"][sel], 1.0 / summary["init_std"][sel])
    return inv_u, T_u, g


def _overlay(ax, summary, select, legend=True):
    """Drift-criterion contours and the disorder line σ_W² = 1/2 (1/σ_W = √2)."""
    inv, T, frac = _grid(summary, "drift_fraction", select)
    handles = []
    if inv.size > 1 and T.size > 1 and np.isfinite(frac).sum() >= 4:
        styles = ("-", "--", ":")
        ax.contour(inv, T, np.nan_to_num(frac, nan=0.0), levels=list(LEVELS), colors="k",
                   linestyles=styles, linewidths=1.4)
        for lv, ls in zip(LEVELS, styles):
            handles.append(plt.Line2D([], [], color="k", ls=ls, label=_drift_label(summary, lv)))
    ax.axvline(1.0 / phases.disorder_line, color="m", lw=2, ls="-.")
    handles.append(plt.Line2D([], [], color="m", ls="-.", lw=2, label=r"disorder line $\sigma_W^2=1/2$"))
    if legend:
        ax.legend(handles=handles, fontsize=7, loc="lower left", framealpha=0.8)


def _setup(ax, inv, T):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"inverse init width $1/\sigma_W$")
    ax.set_ylabel(r"temperature $T=\alpha/|B|$")
    ax.set_xlim(_edges(inv)[0], _edges(inv)[-1])
    ax.set_ylim(_edges(T)[0], _edges(T)[-1])


def _mark_divergent(ax, summary, select):
    inv, T, div = _grid(summary, "divergent", select)
    for i, t in enumerate(T):
        for j, x in enumerate(inv):
            if np.isfinite(div[i, j]) and div[i, j] >= 0.5:
                ax.text(x, t, "div", ha="center", va="center", fontsize=8, color="w",
                        bbox=dict(fc="#333333", ec="none", pad=1))


def heatmaps(summary, path, select=None, title="") -> Path:
    """2×2 heat maps of the final test loss, overlap q, alignment hs and growth rate ⟨λ⟩."""
    panels = [
        ("loss", r"median final test loss $\mathcal{L}_{test}$", "viridis", True),
        ("q", r"overlap with initial features $q$", "cividis", False),
        ("hs", r"alignment with the field $hs$", "plasma", False),
        ("lam", r"spacing growth rate $\langle\lambda\rangle$ [1/step]", "coolwarm", False),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 9), constrained_layout=True)
    for ax, (key, label, cmap, log) in zip(axes.ravel(), panels):
        inv, T, g = _grid(summary, key, select)
        if log:
            pos = g[np.isfinite(g) & (g > 0)]
            norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if pos.size else None
        elif key == "lam":
            m = np.nanmax(np.abs(g)) if np.isfinite(g).any() else 1.0
            norm = TwoSlopeNorm(vcenter=0.0, vmin=-m, vmax=m)
        else:
            norm = None
        mesh = ax.pcolormesh(_edges(inv), _edges(T), np.ma.masked_invalid(g), cmap=cmap, norm=norm, shading="flat")
        cb = fig.colorbar(mesh, ax=ax)
        cb.set_label(label)
        _setup(ax, inv, T)
        _overlay(ax, summary, select, legend=(key == "loss"))
        _mark_divergent(ax, summary, select)
        ax.set_title(label, fontsize=10)
    return save(fig, path, title=title, dpi=110)


def phase_map(summary, path, select=None, title="") -> Path:
    """Majority phase per grid point (observable classifier) with the drift contours."""
    inv, T, maj = _grid(summary, "majority", select)
    names = list(phases.LABELS)
    codes = np.array([[names.index(m) if m in names else np.nan for m in row] for row in maj], dtype=float)
    cmap = ListedColormap([PHASE_COLORS[n] for n in names])
    norm = BoundaryNorm(np.arange(len(names) + 1) - 0.5, cmap.N)
    fig, ax = plt.subplots(figsize=(8, 6.5), constrained_layout=True)
    ax.pcolormesh(_edges(inv), _edges(T), np.ma.masked_invalid(codes), cmap=cmap, norm=norm, shading="flat")
    _, _, frac = _grid(summary, "drift_fraction", select)
    for i, t in enumerate(T):
        for j, x in enumerate(inv):
            if maj[i, j]:
                ax.text(x, t, f"{maj[i, j]}\n$f_d$={frac[i, j]:.2f}", ha="center", va="center", fontsize=6)
    _setup(ax, inv, T)
    _overlay(ax, summary, select, legend=False)
    handles = [plt.Rectangle((0, 0), 1, 1, fc=PHASE_COLORS[n], label=n) for n in names]
    handles += [plt.Line2D([], [], color="k", ls=ls, label=_drift_label(summary, lv)) for lv, ls in zip(LEVELS, ("-", "--", ":"))]
    handles.append(plt.Line2D([], [], color="m", ls="-.", lw=2, label=r"$\sigma_W^2=1/2$"))
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or r"SGD phases (majority label; $f_d$ = fraction passing the drift criterion)")
    return save(fig, path, dpi=110)


def level_trajectories(results, picks: dict, teacher, path) -> Path:
    """x_i(t), the eigenvalues of X = W Wᵀ, for one replica at each picked point.

    ``picks``: {panel title: (point index, replica index)}; the teacher's levels dashed.
    """
    steps = np.asarray(results.steps)
    n = max(len(picks), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), constrained_layout=True, squeeze=False)
    for ax, (name, (p, r)) in zip(axes[0], picks.items()):
        x = np.asarray(results["gram"][p, r], dtype=float)  # (S, K)
        for k in range(x.shape[-1]):
            ax.plot(steps, x[:, k], lw=1.2)
        for v in np.broadcast_to(teacher, results["gram"].shape[:2] + teacher.shape[-1:])[p, r]:
            ax.axhline(v, color="k", ls="--", lw=0.6, alpha=0.6)
        ax.set_yscale("log")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.set_xlabel("SGD step $n$")
        ax.set_ylabel(r"eigenvalues $x_i$ of $X=WW^\top$")
        pt = results.points[p]
        ax.set_title(f"{name}: $\\alpha$={pt['lr']:g}, $|B|$={pt['batch_size']}, $\\sigma_W$={pt['init_std']:g}",
                     fontsize=9)
    axes[0][0].plot([], [], "k--", lw=0.6, label=r"teacher $x_i^*$")
    axes[0][0].legend(fontsize=8)
    return save(fig, path, dpi=110)


def batch_comparison(summary, path, title="") -> Path:
    """Final test loss and ⟨λ⟩ against T = α/|B|, one line per batch size (linear scaling)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    for bs in np.unique(summary["batch_size"]):
        sel = summary["batch_size"] == bs
        order = np.argsort(summary["T"][sel])
        for ax, key in zip(axes, ("loss", "lam")):
            ax.plot(summary["T"][sel][order], summary[key][sel][order], "o-", label=f"$|B|$={int(bs)}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"median final test loss $\mathcal{L}_{test}$")
    axes[1].set_ylabel(r"spacing growth rate $\langle\lambda\rangle$ [1/step]")
    axes[1].axhline(0.0, color="k", lw=0.6)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel(r"temperature $T=\alpha/|B|$")
        ax.legend(fontsize=8)
    return save(fig, path, title=title, dpi=110)


def level_predictions(results, checks: list[dict], path, late: list[dict] | None = None, levels: int = 6) -> Path:
    """The Langevin cross-check: SGD level trajectories against one-interval predictions.

    One panel per row of ``checks`` (`dysonbm.analysis.level_sde.cross_check` rows of ``results``,
    with a ``name``): the largest ``levels`` levels x_i(t) of the first finite replica (lines)
    and, from each snapshot, the Langevin prediction for the next one (a segment ending in a
    dot, first noise draw); the teacher's levels dashed. A last panel compares the net change
    of the distance to the teacher, Σ_k Δln d, per replica (SGD horizontal, Langevin vertical)
    for every point and window (``late``: rows from the grid run).
    """
    n = len(checks)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.3 * (n + 1), 4.2), constrained_layout=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, c in zip(axes[0], checks):
        x0, x1, xh = c["x_start"][0], c["x_end"][0], c["x_hat"][0, 0]  # (n, K) of replica 0
        t = np.arange(c["intervals"] + 1) * (c["steps"][1] - c["steps"][0]) / c["intervals"] + c["steps"][0]
        for i in range(x0.shape[-1] - 1, max(x0.shape[-1] - levels, 0) - 1, -1):  # ascending: the largest last
            col = colors[i % len(colors)]
            ax.plot(t, np.concatenate([x0[:, i], x1[-1:, i]]), color=col, lw=1.3)
            for k in range(x0.shape[0]):
                ax.plot([t[k], t[k + 1]], [x0[k, i], xh[k, i]], color=col, lw=0.8, alpha=0.7)
            ax.plot(t[1:], xh[:, i], "o", color=col, ms=2.5, alpha=0.8)
        for v in np.sort(c["teacher"][0, 0])[-levels:]:  # replica 0's teacher, its largest levels
            ax.axhline(v, color="k", ls="--", lw=0.6, alpha=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("SGD step $n$")
        ax.set_ylabel(r"largest eigenvalues $x_i$ of $X=WW^\top$")
        ax.set_title(f"{c['name']}: $T$={c['T']:g}, $\\sigma_W$={c['init_std']:g}\n"
                     f"SGD {c['sgd']['regime']}, Langevin {c['langevin']['regime']}", fontsize=9)
    axes[0][0].plot([], [], "k-", lw=1.3, label="SGD")
    axes[0][0].plot([], [], "k-o", lw=0.8, ms=2.5, label="Langevin, one interval")
    axes[0][0].plot([], [], "k--", lw=0.6, label=r"teacher $x_i^*$")
    axes[0][0].legend(fontsize=7)
    ax = axes[0][-1]
    lim = []
    for rows, marker, label in ((checks, "o", "early"), (late or [], "s", "late")):
        for j, c in enumerate(rows):
            sgd = log_changes(c["x_start"], c["x_end"], c["teacher"])["d"].sum(axis=1)
            lgv = log_changes(c["x_start"][None], c["x_hat"], c["teacher"])["d"].mean(axis=0).sum(axis=1)
            ax.plot(sgd, lgv, marker, color=colors[j % len(colors)], ms=4, alpha=0.7, mfc="none" if label == "late" else None,
                    label=f"{c['name']} ({label})")
            lim += [np.nanmin(sgd), np.nanmax(sgd), np.nanmin(lgv), np.nanmax(lgv)]
    if lim:
        lo, hi = np.nanmin(lim), np.nanmax(lim)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.6)
    ax.axhline(0, color="k", lw=0.4)
    ax.axvline(0, color="k", lw=0.4)
    ax.set_xlabel(r"SGD $\sum_k \Delta\ln d$ (per replica)")
    ax.set_ylabel(r"Langevin $\sum_k \Delta\ln d$")
    ax.set_title("distance to the teacher's levels:\nnet change, SGD vs Langevin", fontsize=9)
    ax.legend(fontsize=6)
    return save(fig, path, dpi=110)
