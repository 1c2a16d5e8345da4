"""Figures of `dbm reproduce linear-net` (matplotlib, Agg backend; PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from dysonbm.analysis import rmt
from dysonbm.analysis.linear_net import SPECIES_LABEL
from dysonbm.plots.save import save

_MARKERS = "osD^v<>ph*"


def collapse(analyses: dict, path: Path) -> Path:
    """⟨S⟩ (filled) and √π σ (open) of each species against its predicted ⟨S⟩; slope-1 line."""
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    xmax = 0.0
    for c, (species, an) in enumerate(analyses.items()):
        for s in an.stats:
            m = _MARKERS[s.block % len(_MARKERS)]
            ax.errorbar(s.scale, s.mean_s, yerr=s.mean_s_err, fmt=m, color=f"C{c}", ms=5, capsize=2)
            ax.errorbar(s.scale, s.sqrtpi_sigma, yerr=s.sqrtpi_sigma_err, fmt=m, color=f"C{c}", mfc="none", ms=8,
                        capsize=2)
            xmax = max(xmax, s.scale)
        f = an.fits["mean_s"]
        ax.plot([], [], "o", color=f"C{c}",
                label=rf"{SPECIES_LABEL[species]}: slope {f.slope:.4f} $\pm$ {f.slope_err:.4f}")
    xs = np.linspace(0, 1.08 * xmax, 50)
    ax.plot(xs, xs, "k-", lw=1, label="theory (slope 1)")
    first = next(iter(analyses.values()))
    for b, name in enumerate(first.blocks):
        ax.plot([], [], _MARKERS[b % len(_MARKERS)], color="gray",
                label=name.replace("lr", r"$\alpha$").replace("batch_size", "|B|"))
    ax.set_xlabel(r"predicted $\langle S\rangle$ (exact linearised second moments)")
    ax.set_ylabel(r"measured $\langle S\rangle$ (filled), $\sqrt{\pi}\,\sigma$ (open)")
    ax.set_title("linear net, N = 2: level-pair spacing per species", fontsize=10)
    ax.legend(fontsize=7)
    return save(fig, path, tight=True)


def _panels(items: list, path: Path, draw, width: float = 4.0) -> Path:
    """One panel per item side by side, ``draw(ax, item)`` each, saved to ``path``."""
    fig, axes = plt.subplots(1, len(items), figsize=(width * len(items), 3.4), squeeze=False)
    for ax, item in zip(axes[0], items):
        draw(ax, item)
        ax.legend(fontsize=7)
    return save(fig, path, tight=True)


def spacings(results_by_species: dict, path: Path) -> Path:
    """Pooled s = S/⟨S⟩ of each species (``{species: (s, (KS D, p))}``) against the β = 1
    surmise and Poisson."""
    grid = np.linspace(0, 3.5, 200)

    def draw(ax, item):
        species, (s, ks) = item
        ax.hist(s, bins=np.linspace(0, 3.5, 50), density=True, color="0.75")
        ax.plot(grid, rmt.wigner_surmise(grid, 1), "k-", label=r"$\beta=1$ surmise")
        ax.plot(grid, rmt.poisson_spacing(grid), "k:", label="Poisson")
        ax.set_title(f"{SPECIES_LABEL[species]}: KS D = {ks[0]:.4f}", fontsize=9)
        ax.set_xlabel(r"$s = S/\langle S\rangle$")

    return _panels(list(results_by_species.items()), path, draw)


def semicircles(checks: list, path: Path) -> Path:
    """Pooled centred levels of each species with the predicted semicircle."""

    def draw(ax, c):
        lim = 1.4 * c.radius
        ax.hist(c.levels, bins=np.linspace(-lim, lim, 60), density=True, color="0.75", label="SGD levels")
        x = np.linspace(-lim, lim, 400)
        ax.plot(x, rmt.semicircle_pdf(x, c.radius), "k-", label=f"semicircle R = {c.radius:.3g}")
        ax.set_title(f"{SPECIES_LABEL[c.species]}, N = {c.n}: KS D = {c.ks_semicircle[0]:.3f}", fontsize=9)
        ax.set_xlabel("level − centre")

    return _panels(checks, path, draw)


def level_sde(checks: list, path: Path) -> Path:
    """Stationary level density of SGD and of the integrated level SDE (measured coefficients)."""

    def draw(ax, c):
        lim = 1.3 * np.max(np.abs(c.sde_levels))
        bins = np.linspace(-lim, lim, 60)
        ax.hist(c.sgd_levels, bins=bins, density=True, color="0.75", label="SGD")
        ax.hist(c.sde_levels, bins=bins, density=True, histtype="step", color="C3", lw=1.2,
                label=rf"level SDE ($\gamma$={c.gamma:.3g}, D={c.D:.3g})")
        ax.set_title(f"{SPECIES_LABEL[c.species]}: KS D = {c.ks_levels[0]:.3f}", fontsize=9)
        ax.set_xlabel("level − centre")

    return _panels(checks, path, draw, width=4.2)


def balance_drift(rows: list, path: Path) -> Path:
    """Var(D₀₁(t) − D₀₁(0)) at the end of the run against its leading-order prediction."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    x = np.array([r["predicted"] for r in rows])
    y = np.array([r["measured"] for r in rows])
    e = np.array([r["err"] for r in rows])
    ax.errorbar(x, y, yerr=e, fmt="o", ms=4, capsize=2)
    ax.plot([0, 1.1 * x.max()], [0, 1.1 * x.max()], "k-", lw=1, label="prediction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"predicted $t\,\alpha^4 s_0^2 A^4\, 2N/|B|^2$")
    ax.set_ylabel(r"measured Var$(D_{01}(t) - D_{01}(0))$")
    ax.set_title(r"drift of $D = W_1W_1^\top - W_2^\top W_2$ under SGD", fontsize=10)
    ax.legend(fontsize=7)
    return save(fig, path, tight=True)
