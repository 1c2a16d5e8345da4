"""`dbm reproduce linear-net`: the linear one-hidden-layer network with both layers trained
(SCIENCE.md §3.4) against the theory of `dysonbm.models.linear_net`, with figures and a report.

Two runs, both with fresh data every step and the balanced start at the target's factors:

- ``pairs`` (N = 2; presets linear_net_quick / linear_net_pairs): per level species (W₁W₁ᵀ,
  W₂ᵀW₂, σ²(W₂W₁)) the mean pair spacing ⟨S⟩ and the two-level width over an α-sweep and a
  |B|-sweep against the exact linearised prediction (one line of slope 1 through the origin),
  the spacings against the β = 1 surmise, and the drift of D = W₁W₁ᵀ − W₂ᵀW₂;
- ``wide`` (N_in = N_h = N_out = 32; preset linear_net_wide): each species' stationary level
  density against the predicted semicircle, and the level SDE with measured coefficients
  (`dysonbm.sde.DysonBM`) against SGD at the same temperature.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from dysonbm import ensemble, presets
from dysonbm.analysis import scaling
from dysonbm.analysis.linear_net import SPECIES, SPECIES_LABEL, level_sde_check, semicircle_check
from dysonbm.models.linear_net import balance_step_var
from dysonbm.reproduce.linear_scaling import _fmt, _hp, _run_one

RUNS = ("pairs", "wide")
OUTPUTS = (*RUNS, "figures", "report.md")
WIDE_FULL = dict(replicas=256, steps=800)
KS_MAX = 0.03  # the acceptance bound on the KS distance to the β = 1 surmise


def run(out: Path, quick: bool = False, progress: bool = False, resume: bool = False) -> Path:
    """Run both sweeps into ``out/pairs`` and ``out/wide``, write figures and ``out/report.md``."""
    from dysonbm.plots import linear_net as plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    timings = []
    t0 = time.perf_counter()
    t = time.perf_counter()
    pairs = _run_one(presets.path("linear_net_quick" if quick else "linear_net_pairs"), out / "pairs", {}, progress,
                     resume)
    timings.append(("N = 2 sweep", time.perf_counter() - t))
    t = time.perf_counter()
    pair_section = _pairs(pairs, figs, plots)
    timings.append(("N = 2 analysis and figures", time.perf_counter() - t))
    t = time.perf_counter()
    wide = _run_one(presets.path("linear_net_wide"), out / "wide", {} if quick else WIDE_FULL, progress, resume)
    timings.append(("N = 32 run", time.perf_counter() - t))
    t = time.perf_counter()
    wide_section = _wide(wide, figs, plots)
    timings.append(("N = 32 analysis, level SDE and figures", time.perf_counter() - t))
    total = time.perf_counter() - t0
    head = ["# Linear one-hidden-layer network: both layers under SGD noise", "",
            f"Preset: {'quick' if quick else 'full'}; total {total:.0f} s.", "",
            "| stage | wall time (s) |", "|---|---|", *(f"| {n} | {s:.0f} |" for n, s in timings), ""]
    report = out / "report.md"
    report.write_text("\n".join(head) + "\n" + pair_section + "\n" + wide_section)
    return report


def _pairs(results, figs: Path, plots) -> str:
    analyses = {sp: scaling.analyse(results, observable=sp) for sp in SPECIES}
    cfg = results.config
    lines = ["## Level pairs at N = 2: linear scaling per species", "",
             f"Results: `{results.path}` — {len(results.points)} points × {cfg['replicas']} replicas, "
             f"{cfg['steps']} steps; ensemble: {ensemble.describe(results.ensemble)}. Target U Vᵀ (s₀ = 1), "
             f"A = {cfg['model'].get('noise', 0.1)}, balanced start. Predicted ⟨S⟩: the Gaussian (u, v) with the exact "
             "linearised second moments (α_e = 2s₀α in the teacher–student recursion, i.i.d. noise) plus the "
             "random walk of D (per layer; module docstring); σ²(W₂W₁) scaled by 2s₀.", "",
             "| species | fitted slope (⟨S⟩) | (b − 1)/err | χ²/dof | slope (√π σ) | (b − 1)/err | pooled KS D vs β = 1 | ≤ 0.03 |",
             "|---|---|---|---|---|---|---|---|"]
    spacing_data = {}
    for sp, an in analyses.items():
        f, g = an.fits["mean_s"], an.fits["sqrtpi_sigma"]
        ks = an.pooled_ks
        spacing_data[sp] = (scaling.pooled_spacings(results, an), ks)
        lines.append(f"| {SPECIES_LABEL[sp]} | {_fmt(f.slope, f.slope_err)} | {(f.slope - 1) / f.slope_err:+.2f} | "
                     f"{f.chi2_dof:.2f} | {_fmt(g.slope, g.slope_err)} | {(g.slope - 1) / g.slope_err:+.2f} | "
                     f"{ks[0]:.4f} | {'yes' if ks[0] <= KS_MAX else 'NO'} |")
    lines += ["", "Per point (W₁W₁ᵀ, then W₂ᵀW₂, then σ²):", "",
              "| species | point | predicted ⟨S⟩ | ⟨S⟩ | pull | √π σ | pull | KS D vs surmise |", "|---|---|---|---|---|---|---|---|"]
    for sp, an in analyses.items():
        fm, fs = an.fits["mean_s"], an.fits["sqrtpi_sigma"]
        for i, s in enumerate(an.stats):
            lines.append(f"| {SPECIES_LABEL[sp]} | {_hp(s.hp)} | {s.scale:.4g} | {_fmt(s.mean_s, s.mean_s_err)} | "
                         f"{fm.pull[i]:+.1f} | {_fmt(s.sqrtpi_sigma, s.sqrtpi_sigma_err)} | {fs.pull[i]:+.1f} | "
                         f"{s.ks_d:.3f} |")
    rows = _balance_rows(results)
    lines += ["", "### Drift of the conserved quantity D = W₁W₁ᵀ − W₂ᵀW₂", "",
              "Gradient flow conserves D; one SGD step changes it by exactly α²(W₂ᵀGGᵀW₂ − W₁GᵀGW₁ᵀ), a random walk "
              "of per-step variance α⁴s₀²A⁴·2N/|B|² off the diagonal at the balanced point (leading order in α). "
              "Measured Var(D₀₁(t) − D₀₁(0)) at the last step against t times that:", "",
              "| point | predicted | measured | ratio |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_hp(r['hp'])} | {r['predicted']:.3g} | {_fmt(r['measured'], r['err'], 3)} | "
                     f"{r['measured'] / r['predicted']:.3f} ± {r['err'] / r['predicted']:.3f} |")
    lines += ["", "The ratio exceeds 1 by O(α_e): the cross terms of Aā with E C_B in G, dropped at leading order.", ""]
    fig = [plots.collapse(analyses, figs / "linear_net_collapse.png"),
           plots.spacings(spacing_data, figs / "linear_net_spacings.png"),
           plots.balance_drift(rows, figs / "linear_net_balance_drift.png")]
    lines += ["### Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in fig]
    return "\n".join(lines) + "\n"


def _balance_rows(results) -> list[dict]:
    model = results.config["model"]
    n = int(model.get("n_hidden", 2))
    s0 = float(model.get("teacher_singular_values", [1.0])[0])
    steps = float(results.steps[-1])
    rows = []
    for p, hp in enumerate(results.points):
        ok = ~np.asarray(results.diverged[p], bool)
        x = np.asarray(results["balance_drift_01"][p][ok][:, -1], float)
        pred = steps * balance_step_var(hp["lr"], hp["batch_size"], hp.get("noise", model.get("noise", 0.1)), s0, n)[0]
        rows.append({"hp": hp, "predicted": pred, "measured": float(np.mean(x * x)),
                     "err": float(np.std(x * x, ddof=1) / math.sqrt(x.size))})
    return rows


def _wide(results, figs: Path, plots) -> str:
    cfg = results.config
    hp = results.points[0]
    checks = [semicircle_check(results, 0, sp) for sp in SPECIES]
    n = checks[0].n
    lines = ["## N_in = N_h = N_out = 32: the generalised semicircle and the coupled level SDE", "",
             f"Results: `{results.path}` — {cfg['replicas']} replicas, {cfg['steps']} steps, {_hp(hp)}, snapshots every {int(results.steps[1] - results.steps[0])} steps, the last "
             "half pooled.", "",
             "Prediction per layer: levels = s₀ + eig(H), H a GOE matrix with off-diagonal variance τ² = v/2 "
             "(v the exact entry variance of E), density the semicircle of radius 2 sqrt(N τ²); "
             "second moment (1/N)E tr H² = (N + 1)τ², plus for the layers (1/N)E tr D²/4 from D's random walk "
             "(its leading-order prediction, and as recorded: the walk exceeds its leading order by O(α_e)); for σ² "
             "all scaled by 2s₀.", "",
             "| species | τ² | R predicted | second moment measured | predicted | ratio | with D as recorded | ratio | centre | centre predicted | "
             "KS D vs semicircle | KS D vs finite-N GOE | ⟨r⟩ (GOE 0.5307) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {SPECIES_LABEL[c.species]} | {c.tau2:.4g} | {c.radius:.4g} | "
                     f"{_fmt(c.second_moment, c.second_moment_err)} | {c.second_moment_pred:.4g} | "
                     f"{c.second_moment / c.second_moment_pred:.4f} ± {c.second_moment_err / c.second_moment_pred:.4f} | "
                     f"{c.second_moment_measured_d:.4g} | {c.second_moment / c.second_moment_measured_d:.4f} | "
                     f"{c.centre:.6g} | {c.centre_pred:.6g} | {c.ks_semicircle[0]:.4f} | {c.ks_goe[0]:.4f} | "
                     f"{_fmt(*c.mean_r)} |")
    lines += ["", f"The semicircle is the N → ∞ law; at N = {n} the exact finite-N GOE (sampled, same τ²) is the "
              "fair reference: its KS distance measures the model, the semicircle's adds the finite-N edge.", ""]
    sde = [level_sde_check(results, 0, sp) for sp in ("gram1", "product_sv2")]
    lines += ["### Coupled level SDE with measured coefficients", "",
              "In τ = α·n each species' levels obey the β = 1 DBM dλ_i = −γ(λ_i − λ*) dτ + D Σ_j dτ/(λ_i − λ_j) + "
              "sqrt(2D) dB_i; the two layers are coupled by the conserved D (λ_i − μ_i = d_i: one bond per level), so "
              "at D = 0 their increments coincide. γ and D are measured from the SGD centre of mass (an OU process, exact "
              "transition), the DBM is integrated from all levels at 0 with `dysonbm.sde.DysonBM` to its stationary "
              "state, and compared with SGD:", "",
              "Theory: γ = 2s₀ and D = 2s₀²αA²/|B| to leading order; the discrete map gives exactly "
              "γ = −ln(1 − α_e)/α for the mean and D = γ·v (trace mode: Var m = v/N = D/(γN)), v the exact entry "
              "variance; for σ², D scaled by (2s₀)².", "",
              "| species | γ measured | γ leading / exact | D measured | D leading / exact | "
              "second moment SGD | SDE | KS D levels | KS D bulk spacings | ⟨r⟩ SGD | ⟨r⟩ SDE |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    s0 = sde[0].gamma_pred / 2.0
    lr_eff = 2.0 * s0 * hp["lr"]
    gamma_exact = -math.log(1.0 - lr_eff) / hp["lr"]
    v = 2.0 * checks[0].tau2
    for c in sde:
        scale = (2.0 * s0) ** 2 if c.species == "product_sv2" else 1.0
        lines.append(f"| {SPECIES_LABEL[c.species]} | {_fmt(c.gamma, c.gamma_err)} | {c.gamma_pred:.3g} / "
                     f"{gamma_exact:.4g} | {_fmt(c.D, c.D_err)} | {scale * c.D_pred:.3g} / {scale * gamma_exact * v:.4g} | "
                     f"{_fmt(*c.sgd_second_moment)} | "
                     f"{_fmt(*c.sde_second_moment)} | {c.ks_levels[0]:.4f} | {c.ks_spacing[0]:.4f} | "
                     f"{_fmt(*c.sgd_mean_r)} | {_fmt(*c.sde_mean_r)} |")
    c = sde[0]
    lines += ["", f"The two layers as one bound pair of species: rms of λ_i − μ_i (W₁W₁ᵀ minus W₂ᵀW₂, level by level) "
              f"{c.species_gap_rms:.3g}, rms eigenvalue of D {c.balance_rms:.3g}, against a level spread "
              f"sqrt(⟨(λ − centre)²⟩) = {math.sqrt(c.sgd_second_moment[0]):.3g}; correlation of their "
              f"one-snapshot increments {c.cross_corr:.4f} (1 at D = 0: the projections of D's random walk on "
              "the rotating eigenvectors decorrelate them). The W₁W₁ᵀ levels carry D's walk, which the SDE "
              "(coefficients from the centre of mass, where tr D is conserved) does not; σ² is free of it.", ""]
    fig = [plots.semicircles(checks, figs / "linear_net_semicircle.png"),
           plots.level_sde(sde, figs / "linear_net_level_sde.png")]
    lines += ["### Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in fig]
    return "\n".join(lines) + "\n"
