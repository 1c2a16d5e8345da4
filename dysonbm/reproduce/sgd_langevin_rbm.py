"""The Gaussian-RBM part of `dbm reproduce sgd-langevin` (``--only rbm``; SCIENCE.md §3.2; the
workflow is `dysonbm.analysis.rbm_langevin`).

For every grid point of the preset rbm_langevin (weights recorded, snapshots every 20 steps):
measure the persistent-chain gradient noise at the stationary weights (per level, projected on
the eigenvectors of WᵀW, with its exact value beside it), integrate the level SDE of σ_h²WᵀW
in the RBM's potential with those coefficients, and compare per learnt mode the stationary
width, the centre shift and the relaxation rate with the SGD replicas'. Writes ``out/rbm``
(the SGD results store), ``out/rbm_langevin.png`` and a report section.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from dysonbm import presets

CONFIG = presets.path("rbm_langevin")

# quick: fewer replicas and steps, and no |B| = 64 point (its step, 64 chains per replica, costs
# about twice one of |B| = 16). The slowest mode (κ = 8)
# first grows from the init's smallest level (~0.01) at 2(1/κ − 1/μ²) ≈ 0.028 per unit τ, about
# 165 τ, then relaxes at γ = 0.031: the last half of 5000 steps at α = 0.1 (τ from 250 to 500)
# is barely stationary for it, which the report's trend column checks; α = 0.05 would not be
SGD_QUICK = {"replicas": 128, "steps": 5000,
             "sweep": [{"lr": [0.1, 0.2], "batch_size": [16]}, {"lr": [0.1, 0.2], "batch_size": [4]}]}
LANGEVIN = {True: {"replicas": 256, "noise_weights": 48, "n_chains": 128},
            False: {"replicas": 1024, "noise_weights": 128, "n_chains": 256}}
OUTPUTS = ("rbm", "rbm_langevin.png")


def figure(comps, path: Path) -> Path:
    """Per learnt mode against T: width (SGD, Langevin, small-T theory), centre shift, relaxation rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    kappas = [m.kappa for m in comps[0].modes]
    for i, kap in enumerate(kappas):
        col = colours[i % len(colours)]
        rows = [(c.temperature, c.hp["lr"], next(m for m in c.modes if m.kappa == kap)) for c in comps]
        rows.sort(key=lambda r: r[0])
        t = np.array([r[0] for r in rows])
        for ax, get in zip(axes, (lambda s: (s.width, s.width_err), lambda s: (s.shift, s.shift_err),
                                  lambda s: (s.rate, s.rate_err))):
            for side, fmt, mfc in (("sgd", "o", col), ("langevin", "s", "none")):
                v = np.array([get(getattr(r[2], side)) for r in rows])
                ax.errorbar(t, v[:, 0], yerr=v[:, 1], fmt=fmt, color=col, mfc=mfc, ms=6, capsize=2)
        axes[0].plot(t, [r[2].width_theory for r in rows], "-", color=col, lw=1, label=f"κ = {kap:.2f}")
        axes[2].axhline(rows[0][2].rate, color=col, lw=1, ls=":")
    axes[0].plot([], [], "o", color="gray", label="filled: SGD")
    axes[0].plot([], [], "s", color="gray", mfc="none", label="open: Langevin (measured noise)")
    axes[0].plot([], [], "-", color="gray", label="line: small-T theory")
    axes[0].set(xscale="log", yscale="log", xlabel=r"$T = \alpha/|B|$", ylabel="rms deviation from the mode centre",
                title=r"stationary width per mode of $\sigma_h^2 W^\top W$")
    axes[0].legend(fontsize=7)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set(xscale="log", xlabel=r"$T$", ylabel=r"$\langle x\rangle - (\mu^2 - \kappa)$", title="centre shift")
    axes[2].set(xscale="log", yscale="log", xlabel=r"$T$", ylabel=r"rate per unit $\tau = \alpha\cdot$steps",
                title=r"relaxation rate of the mode centre (dotted: $2\sigma_h^2(\mu^2-\kappa)/\kappa^2$)")
    for ax in axes:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # log minor labels overlap
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pull(a, ae, b, be):
    return (a - b) / math.hypot(ae, be) if ae > 0 or be > 0 else float("nan")


def _stationary(stats, z: float = 4.0) -> bool:
    return abs(stats.trend) <= z * stats.trend_err


def verdicts(comps, z: float = 3.0) -> dict:
    """Per (point, mode): whether SGD and Langevin agree within ``z`` combined standard errors,
    for the width (against the expected discrete excess sqrt(2/(2 − αγ))), the shift and the rate."""
    out = {}
    for c in comps:
        for m in c.modes:
            q, qe = m.width_ratio
            expected = math.sqrt(2.0 / (2.0 - c.hp["lr"] * m.rate))
            out[(c.point, m.kappa)] = {
                "width": abs(q - expected) <= z * qe, "width_pull": (q - expected) / qe,
                "shift": abs(_pull(m.sgd.shift, m.sgd.shift_err, m.langevin.shift, m.langevin.shift_err)) <= z,
                "shift_pull": _pull(m.sgd.shift, m.sgd.shift_err, m.langevin.shift, m.langevin.shift_err),
                "rate": abs(_pull(m.sgd.rate, m.sgd.rate_err, m.langevin.rate, m.langevin.rate_err)) <= z,
                "rate_pull": _pull(m.sgd.rate, m.sgd.rate_err, m.langevin.rate, m.langevin.rate_err),
                "stationary": _stationary(m.sgd), "trend_pull": m.sgd.trend / m.sgd.trend_err,
            }
    return out


def _shift_slopes(comps) -> list[str]:
    """Least-squares slope through the origin of the centre shift against T, per mode and side."""
    lines = []
    for m0 in comps[0].modes:
        row = []
        for side in ("sgd", "langevin"):
            t = np.array([c.temperature for c in comps])
            s = [next(m for m in c.modes if m.kappa == m0.kappa) for c in comps]
            y = np.array([getattr(m, side).shift for m in s])
            e = np.array([getattr(m, side).shift_err for m in s])
            w = 1.0 / np.maximum(e, 1e-12) ** 2
            slope = float(np.sum(w * t * y) / np.sum(w * t * t))
            row.append(f"{slope:.3g} ± {1.0 / math.sqrt(np.sum(w * t * t)):.1g}")
        lines.append(f"| {m0.kappa:.3f}{'²' if len(m0.slots) == 2 else ''} | {m0.x_star:.3f} | {row[0]} | {row[1]} |")
    return lines


def report_section(results, comps, timings, fig: Path, quick: bool, out: Path) -> str:
    from dysonbm.analysis import rbm_langevin as rl

    cfg = results.config
    m = cfg["model"]
    v = verdicts(comps)
    lines = ["## Gaussian RBM: SGD replicas against the level SDE in the RBM potential", "",
             f"Preset: {'quick' if quick else 'full'}; "
             f"{' + '.join(f'{n} {s:.0f} s' for n, s in timings)}.", "",
             f"SGD: `{CONFIG.name}` (N_v = N_h = {m['n_visible']}, μ² = {m['mu2']:g}, m² = {m['m2']:g}, σ_h = "
             f"{m['sigma_h']:g}, k = {m['gibbs_steps']}, exact data term), {cfg['replicas']} replicas × {cfg['steps']} "
             f"steps per point, snapshots every {cfg['snapshot_every']} steps, the last half pooled. Results: "
             f"`{results.path}`.", "",
             f"Noise: the PCD-k estimator one chain at a time at {comps[0].noise.n_weights} stationary weight "
             f"matrices (one per replica) × {comps[0].noise.n_chains} chains × {comps[0].noise.n_updates} updates; "
             "Ṽ_ab is the long-run covariance of the projected increment (the chains remember (x/μ²)^k of "
             "their state per update), C̃ the Itô term. Langevin: `dysonbm.sde.integrate_levels` (the weighted "
             "level SDE) with those "
             "coefficients fixed and the drift 2σ_h²x(1/κ − 1/(μ² − x)) re-linearised every chunk, "
             f"{comps[0].modes[0].langevin.n_replicas} replicas from the fixed points, burn-in 3/γ_min, snapshots "
             "at the SGD's spacing Δτ = 20α. Levels are assigned to modes by rank on both sides.", "",
             "Expected at small T: SGD width / Langevin width = sqrt(2/(2 − αγ)) (discrete step), equal shifts and "
             "relaxation rates (SGD's −ln(1 − αγ)/α ≈ γ(1 + αγ/2)), widths on the small-T theory "
             "(singlet TṼ_aa/(2γ), pair 3TṼ_aa/(4γ)).", "",
             "### Comparison per point and learnt mode", "", rl.table(comps),
             "Errors: one standard error, from the spread over replica blocks (relaxation rate: jackknife); the "
             "width ratio's includes the measured Ṽ_aa's. Rate: lag-ℓ autocorrelation of the mode's centre, "
             "ℓ ≈ 1/(γΔτ) snapshots.", "",
             "### Measured against exact noise", "",
             "| α | \\|B\\| | Ṽ_aa measured / exact (per level, top first) | C̃ measured / exact | "
             "largest \\|measured − exact\\|/s.e. (paired by matrix) | long-run / lag-0 (top level) |", "|---|---|---|---|---|---|"]
    for c in comps:
        n = c.noise
        r1 = " ".join(f"{a / b:.3f}" for a, b in zip(np.diag(n.pair), np.diag(n.theory["pair"])) if b > 0)
        r2 = " ".join(f"{a / b:.3f}" for a, b in zip(n.ito, n.theory["ito"]) if b > 0)
        lines.append(f"| {c.hp['lr']:g} | {c.hp['batch_size']} | {r1} | {r2} | {np.max(np.abs(n.exact_pull)):.1f} | "
                     f"{n.pair[0, 0] / n.pair_lag0[0, 0]:.3f} |")
    lines += ["", "The exact values are `noise_theory` at each measured matrix (Gaussian chains in equilibrium "
              "with W); a ratio off 1 by more than a few percent would be a defect of the estimator or the "
              "measurement.", "", "### Centre shift: slope against T (per unit T)", "",
              "| κ | x* | SGD | Langevin |", "|---|---|---|---|", *_shift_slopes(comps), "",
              "### Where they agree and where it breaks down", ""]
    for c in comps:
        bad = [(mm, v[(c.point, mm.kappa)]) for mm in c.modes]
        fails = [f"κ = {mm.kappa:.2f} ({', '.join(k for k in ('width', 'shift', 'rate') if not f[k])}: pulls "
                 f"{f['width_pull']:+.1f}, {f['shift_pull']:+.1f}, {f['rate_pull']:+.1f}"
                 + ("" if f["stationary"] else f"; SGD not yet stationary, trend {f['trend_pull']:+.1f} s.e.") + ")"
                 for mm, f in bad if not (f["width"] and f["shift"] and f["rate"])]
        head = f"- α = {c.hp['lr']:g}, |B| = {c.hp['batch_size']} (T = {c.temperature:.4g})"
        div = (f"; {c.n_diverged_langevin} Langevin replicas diverged" if c.n_diverged_langevin else "") + \
            f" [SDE sub-steps at the step budget's floor: {100 * c.forced_fraction:.1f}%]"
        lines.append(head + (": every mode agrees within 3 s.e." if not fails else
                             ": disagree beyond 3 s.e. — " + "; ".join(fails)) + div)
    lines += ["", "(width pull: SGD/Langevin against sqrt(2/(2 − αγ)); shift and rate pulls: SGD − Langevin, in "
              "combined standard errors. Trend: the SGD centre in the last quarter of the window minus the first; "
              "beyond 4 s.e. the mode had not reached its stationary law.)", "",
              f"![rbm_langevin]({fig.relative_to(out)})", ""]
    return "\n".join(lines)


def sweep_compare_figure(config_path: Path, overrides, store: Path, compare, figure_fn, figure_path: Path,
                         progress: bool, resume: bool):
    """The stages every SGD → Langevin part runs, timed: the SGD sweep into ``store``, ``compare``
    of its results, ``figure_fn(comps, figure_path)``. Returns ``(results, comps, figure, timings)``."""
    from dysonbm import config, runner

    timings = []
    cfg = config.load(config_path, overrides)
    t = time.perf_counter()
    results = runner.run(cfg, out=store, overwrite=not resume, resume=resume, progress=progress)
    timings.append(("SGD sweep", time.perf_counter() - t))
    t = time.perf_counter()
    comps = compare(results)
    timings.append(("noise measurement and Langevin runs", time.perf_counter() - t))
    t = time.perf_counter()
    fig = figure_fn(comps, figure_path)
    timings.append(("figure", time.perf_counter() - t))
    return results, comps, fig, timings


def run_part(out: Path, quick: bool, progress: bool, resume: bool) -> tuple[str, list]:
    """The RBM sweep into ``out/rbm``, its comparison, figure and report section."""
    from dysonbm.analysis import rbm_langevin as rl

    results, comps, fig, timings = sweep_compare_figure(
        CONFIG, SGD_QUICK if quick else None, out / "rbm", lambda r: rl.compare(r, **LANGEVIN[quick]), figure,
        out / "rbm_langevin.png", progress, resume)
    return report_section(results, comps, timings, fig, quick, out), timings
