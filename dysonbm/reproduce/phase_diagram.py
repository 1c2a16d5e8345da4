"""`dbm reproduce phase-diagram`: the SGD phase diagram of the multilayer network (SCIENCE.md §3.3).

Three runs, then analysis:

1. the (α, σ_W) grid at |B| = 4: the preset ``phase_quick`` (quick), ``phase_medium``
   (medium, about 20 minutes on two cores) or ``multilayer_paper`` (full, a GPU job);
2. a batch-size run at equal T = α/|B| (|B| = 4, 8, 16, α = T|B|) at the weakest disorder,
   compared at equal SGD time τ = α·n, where the linear scaling rule predicts equal statistics;
3. the Langevin cross-check (`dysonbm.analysis.level_sde`): at the ordered, paramagnetic and glassy
   acceptance points (and the most typical point of each phase) a run with dense snapshots
   over the first ``LANGEVIN_STEPS`` steps, where the levels either converge, grow or stay
   put; the level SDE with the coefficients measured at each snapshot predicts the levels at
   the next one, and the predicted regime is compared with SGD's. The same is done on the
   grid run's own (sparse) snapshots as the late-time check.

Writes ``out/report.md``, the figures ``out/*.png``, ``out/langevin.json`` (the cross-check
rows) and the results stores ``out/grid``, ``out/batch``, ``out/langevin``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from dysonbm import ensemble, presets
from dysonbm.analysis import phases

#: preset -> grid config (`dysonbm.presets`); `--quick` is the "quick" preset, no flag the "full" one
PRESETS = {"quick": "phase_quick", "medium": "phase_medium", "full": "multilayer_paper"}

#: batch-size run: temperatures and batch sizes (α = T·|B|); σ_W is the grid's smallest
BATCH_T = (0.25, 1.0, 4.0)
BATCH_SIZES = (4, 8, 16)

#: classification thresholds. A short run cannot bring W's spectrum onto the teacher's
#: (that takes ~10⁸ steps in the published protocol), so the quick preset calls a converged
#: replica ordered when the distance of its spectrum to the teacher's has shrunk
#: (``teacher_approach``) rather than when it is within 10 % of it, and a single replica's
#: test loss at high T fluctuates by tens of percent, so its plateau test allows a 50 % fall
#: over the second half of the run.
THRESHOLDS = {"quick": {"teacher_approach": 0.9, "plateau_rtol": 0.5},
              "medium": {"teacher_approach": 0.9, "plateau_rtol": 0.5}, "full": {}}


#: Langevin cross-check run: steps and snapshot spacing. The coefficients K̃, Ṽ depend on W
#: and must stay valid over one interval, so the snapshots are dense (every 50 steps); the
#: window is the quick grid's first interval, in which the regimes separate (the loss falls
#: 100× at low T, the spacing grows by e⁹ at high T).
LANGEVIN_STEPS = 2000
LANGEVIN_EVERY = 50
#: replicas per point of the cross-check run at least: the velocity and regime statistics are
#: means over replicas, and where SGD is chaotic (paramagnetic) one replica of a dozen can
#: double their standard error
LANGEVIN_REPLICAS = 48
#: integrator settings of the cross-check: noise draws per interval, step budget per interval
LANGEVIN_DRAWS = 2
LANGEVIN_MAX_STEPS = 5000


def batch_overrides(cfg, init_std: float, steps: int | None = None) -> dict:
    """Overrides turning a grid config into the equal-T batch-size run."""
    sweeps = [{"lr": [T * b for T in BATCH_T], "batch_size": [b], "init_std": [init_std]} for b in BATCH_SIZES]
    # the level-SDE terms serve the Langevin cross-check only; at this run's dense snapshots
    # they would cost more than its steps
    over = {"sweep": sweeps, "name": cfg.name + "_batch", "model": {"name": cfg.model, **cfg.model_params,
                                                                     "level_sde": False}}
    # equal τ = α n for every |B| needs snapshots at n = τ/α: a divisor of the largest ratio
    over["snapshot_every"] = max(1, cfg.snapshot_every // max(BATCH_SIZES))
    if steps is not None:
        over["steps"] = steps
    return over


# what a run writes at the top of ``out`` (`dbm reproduce` replaces nothing else), and which
# of those are results stores
RUNS = ("grid", "batch", "langevin")
OUTPUTS = (*RUNS, "langevin.json", "heatmaps.png", "phase_map.png", "levels.png", "batch_size.png",
           "langevin.png", "report.md")


def _run(cfg, out: Path, progress: bool, resume: bool = False):
    from dysonbm import runner

    t0 = time.perf_counter()
    res = runner.run(cfg, out=out, overwrite=not resume, resume=resume, progress=progress)
    return res, time.perf_counter() - t0


def run(out: Path, quick: bool, progress: bool, resume: bool = False, preset: str | None = None) -> Path:
    """``preset``: a name of `PRESETS` (default: "quick" or "full" after ``quick``); ``resume``:
    continue interrupted runs and reuse finished ones (same config only)."""
    from dysonbm import config
    from dysonbm.plots import phase_diagram as phase_plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preset = preset or ("quick" if quick else "full")
    cfg = config.load(presets.path(PRESETS[preset]))
    grid, t_grid = _run(cfg, out / "grid", progress, resume)
    sigma_min = float(np.min(grid.hp("init_std")))
    raw = config.apply_overrides(cfg.to_dict(), {})
    raw.update(batch_overrides(cfg, sigma_min, steps=cfg.steps // 2))
    bcfg = config.from_dict(raw)
    batch, t_batch = _run(bcfg, out / "batch", progress, resume)

    th = THRESHOLDS[preset]
    summary = phases.assemble(grid, **th)
    bsum = phases.assemble(batch, **th)  # its replicas' own teachers

    points = langevin_points(grid, summary)
    lcfg = config.from_dict({**cfg.to_dict(), **langevin_overrides(cfg, summary, points)})
    dense, t_dense = _run(lcfg, out / "langevin", progress, resume)
    t0 = time.perf_counter()
    checks = langevin_check(grid, summary, dense, points)
    t_check = time.perf_counter() - t0
    (out / "langevin.json").write_text(json.dumps([_plain(c) for c in checks], indent=1))
    figs = [
        phase_plots.heatmaps(summary, out / "heatmaps.png", title=f"{cfg.name}: {len(grid.points)} points × {cfg.replicas} replicas, {cfg.steps} steps"),
        phase_plots.phase_map(summary, out / "phase_map.png"),
        phase_plots.level_trajectories(grid, pick_trajectories(summary), summary["teacher"], out / "levels.png"),
        phase_plots.batch_comparison(bsum, out / "batch_size.png", title=r"equal $T=\alpha/|B|$, $\sigma_W$=" + f"{sigma_min:g}"),
        phase_plots.level_predictions(dense, [c for c in checks if c["window"] == "early"],
                                    out / "langevin.png", late=[c for c in checks if c["window"] == "late"]),
    ]
    times = {"grid": t_grid, "batch": t_batch, "langevin_run": t_dense, "langevin_check": t_check}
    text = report(cfg, grid, summary, batch, bsum, times, figs, preset, checks=checks, langevin=dense)
    path = out / "report.md"
    path.write_text(text)
    return path


def pick_trajectories(summary) -> dict:
    """One (point, replica) per phase for the x_i(t) figure: at each phase's most typical point
    (highest fraction of that label), the first replica carrying the label."""
    picks = {}
    for name in ("ordered", "paramagnetic", "glassy"):
        f = summary["fractions"][name]
        if np.nanmax(f) <= 0:
            continue
        p = int(np.nanargmax(f))
        r = int(np.nonzero(summary["labels"][p] == name)[0][0])
        picks[name] = (p, r)
    if not picks:
        picks["point 0"] = (0, 0)
    return picks


# ---------------------------------------------------------------------------------------
# Langevin cross-check (issue point 4): the level SDE with measured coefficients against SGD
# ---------------------------------------------------------------------------------------
def langevin_points(results, summary) -> dict:
    """{name: grid point} for the cross-check: the ordered, paramagnetic and glassy acceptance
    points, then the most typical point of each phase (`pick_trajectories`) where it differs."""
    named = {
        "ordered": corner(summary, low_T=True, weak=True),
        "paramagnetic": check_paramagnetic(summary)["point"],
        "glassy": check_glassy(results, summary)["point"],
    }
    for name, (p, _) in pick_trajectories(summary).items():
        named.setdefault(f"{name} (typical)", p)
    points, seen = {}, set()
    for name, p in named.items():
        if p not in seen:
            points[name] = int(p)
            seen.add(p)
    return points


def langevin_overrides(cfg, summary, points: dict) -> dict:
    """Overrides turning a grid config into the cross-check run: one sweep block per point (in
    the order of ``points``), ``LANGEVIN_STEPS`` steps with snapshots every ``LANGEVIN_EVERY``."""
    sweeps = [{"lr": [float(summary["lr"][p])], "batch_size": [int(summary["batch_size"][p])],
               "init_std": [float(summary["init_std"][p])]} for p in points.values()]
    return {"sweep": sweeps, "name": cfg.name + "_langevin", "steps": LANGEVIN_STEPS,
            "snapshot_every": LANGEVIN_EVERY, "replicas": max(cfg.replicas, LANGEVIN_REPLICAS)}


def langevin_check(grid, summary, dense, points: dict) -> list[dict]:
    """`level_sde.cross_check` at every point, in two windows: ``"early"`` on the dense run
    (its point i is ``points``' i-th) and ``"late"`` on the grid run's own snapshots. Both start
    at the first snapshot after initialisation, where the coefficients of the random initial W
    would be held over an interval in which they change by orders of magnitude."""
    import jax

    from dysonbm.analysis import level_sde

    rows = []
    for i, (name, p) in enumerate(points.items()):
        for window, res, q in (("early", dense, i), ("late", grid, p)):
            c = level_sde.cross_check(res, q, phases.teacher_gram(res)[q], key=jax.random.key(1000 * i + (window == "late")),
                                           first=1, draws=LANGEVIN_DRAWS, max_steps=LANGEVIN_MAX_STEPS)
            c.update(name=name, window=window, grid_point=p, majority=str(summary["majority"][p]))
            rows.append(c)
    return rows


def _plain(check: dict) -> dict:
    """A cross-check row without its arrays, for JSON."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in check.items() if not isinstance(v, np.ndarray)}


def langevin_table(checks: list[dict]) -> list[dict]:
    """Report rows: point, α, |B|, T, σ_W, window, regimes, λ and Δ ln d of both sides, agreement."""
    rows = []
    for c in checks:
        s, g = c["sgd"], c["langevin"]
        rows.append({
            "point": c["name"], "alpha": c["lr"], "|B|": int(c["batch_size"]), "T": c["T"], "sigma_W": c["init_std"],
            "window [steps]": f"{c['steps'][0]}–{c['steps'][1]} ({c['intervals']}×Δτ={c['dtau']:g})",
            "SGD regime": s["regime"], "Langevin regime": g["regime"],
            "SGD λ": s["lam"], "Langevin λ": f"{g['lam']:.3g} ± {g['se']['u'] / (c['steps'][1] - c['steps'][0]):.2g}",
            "SGD Δln d": f"{s['net']['d']:+.3f} ± {s['se']['d']:.3f}",
            "Langevin Δln d": f"{g['net']['d']:+.3f} ± {g['se']['d']:.3f}",
            "agree?": "yes" if c["agree"] else "no",
            "top level dx/dτ, SGD / SDE": "{sgd:.3g} / {sde:.3g} ± {se:.2g}".format(**c["top_velocity"]),
            "forced": f"{c['forced']:.0%}",
        })
    return rows


# ---------------------------------------------------------------------------------------
# Acceptance checks (also asserted by tests/test_phase_diagram.py)
# ---------------------------------------------------------------------------------------
def corner(summary, low_T: bool, weak: bool, sigma_min: float | None = None) -> int:
    """Index of the grid point at the lowest/highest T and smallest σ_W (or the smallest σ_W ≥ sigma_min)."""
    sw = summary["init_std"]
    cand = sw >= sigma_min if sigma_min is not None else np.ones(sw.size, bool)
    s = sw[cand].min() if weak or sigma_min is not None else sw[cand].max()
    sel = np.nonzero(cand & (sw == s))[0]
    T = summary["T"][sel]
    return int(sel[np.argmin(T) if low_T else np.argmax(T)])


def check_ordered(results, summary) -> dict:
    """Weakest disorder, lowest T: loss falls ≥ 100× and the spectrum moves onto the teacher's."""
    p = corner(summary, low_T=True, weak=True)
    ok = summary["finite"][p]
    tl = results["test_loss"][p][ok]
    ratio = float(np.median(tl[:, -1] / tl[:, 0]))
    x0, xt = results["gram"][p][ok, 0], results["gram"][p][ok, -1]
    t = summary["teacher"][p][ok]  # each replica's own teacher
    # medians over replicas of each replica's distance to its teacher
    d0 = float(np.median(np.max(np.abs(x0 - t), axis=-1)))
    dt = float(np.median(np.max(np.abs(xt - t), axis=-1)))
    rel = float(np.median(np.max(np.abs(xt - t), axis=-1) / np.max(t, axis=-1)))
    return {"point": p, "loss_ratio": ratio, "dist0": d0, "dist": dt, "rel": rel,
            "x0": np.median(x0, axis=0), "xt": np.median(xt, axis=0), "teacher": np.median(t, axis=0),
            "pass": ratio <= 1e-2 and dt < d0}


def check_paramagnetic(summary) -> dict:
    """Weakest disorder, highest non-divergent T: the spacing grows (⟨λ⟩ > 0) and the majority is paramagnetic."""
    sw = summary["init_std"]
    sel = np.nonzero((sw == sw.min()) & (summary["divergent"] < 0.5))[0]
    p = int(sel[np.argmax(summary["T"][sel])])
    return {"point": p, "lam": float(summary["lam"][p]), "majority": str(summary["majority"][p]),
            "pass": bool(summary["lam"][p] > 0 and summary["majority"][p] == "paramagnetic")}


def check_glassy(results, summary, sigma_min: float = 16.0) -> dict:
    """Strongest disorder (σ_W ≥ ``sigma_min``), lowest T: extreme levels within 10 % of their
    initial (Marchenko–Pastur) values (median over replicas), q > 0.5 for every replica."""
    p = corner(summary, low_T=True, weak=False)  # strongest disorder of the grid
    ok = summary["finite"][p]
    g = results["gram"][p][ok]
    # median over replicas of the relative change of each extreme level
    top = float(np.median(np.abs(g[:, -1, -1] / g[:, 0, -1] - 1)))
    bottom = float(np.median(np.abs(g[:, -1, 0] / g[:, 0, 0] - 1)))
    K, L = g.shape[-1], int(results.config["model"].get("hidden", 32))
    s2 = summary["init_std"][p] ** 2
    mp = (s2 * (1 + np.sqrt(K / L)) ** 2, s2 * (1 - np.sqrt(K / L)) ** 2)
    q = float(np.min(results["q"][p][ok, -1]))
    return {"point": p, "top": top, "bottom": bottom, "q_min": q, "q_mean": float(summary["q"][p]),
            "x0_edges": (float(np.mean(g[:, 0, 0])), float(np.mean(g[:, 0, -1]))),
            "xt_edges": (float(np.mean(g[:, -1, 0])), float(np.mean(g[:, -1, -1]))), "mp": mp,
            "majority": str(summary["majority"][p]),
            "pass": bool(summary["init_std"][p] >= sigma_min and top <= 0.1 and bottom <= 0.1 and q > 0.5)}


def equal_time(results, summary) -> list[dict]:
    """Observables at a common SGD time τ = α·n for every point of the batch run.

    τ is the largest time every point reaches; each point is read at the snapshot n = τ/α.
    """
    steps = np.asarray(results.steps)
    tau = float(np.min(summary["lr"]) * steps[-1])
    rows = []
    for p in range(summary["T"].size):
        n = tau / summary["lr"][p]
        s = int(np.argmin(np.abs(steps - n)))
        ok = summary["finite"][p]
        tl = results["test_loss"][p][ok]
        u = results["mean_spacing"][p][ok]
        rows.append({
            "T": summary["T"][p], "batch_size": int(summary["batch_size"][p]), "lr": summary["lr"][p],
            "step": int(steps[s]), "tau": float(summary["lr"][p] * steps[s]),
            "loss": float(np.median(tl[:, s])) if ok.any() else np.nan,
            "log_spacing": float(np.mean(np.log(u[:, s] / u[:, 0]))) if ok.any() else np.nan,
            "q": float(np.mean(results["q"][p][ok, s])) if ok.any() else np.nan,
            "divergent": float(summary["divergent"][p]),
        })
    return rows


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _label(name: str) -> str:
    return phases.DRIFT_VARIANTS[name][2]


def _tc_text(tc: dict) -> str:
    """"T_c ± err"; an error at rounding level (every resample alike) prints as 0."""
    if not np.isfinite(tc["T_c"]):
        return "none in range"
    err = tc["err"] if tc["err"] > 1e-9 * tc["T_c"] else 0.0
    return f"{tc['T_c']:.3g} ± {err:.2g}"


def drift_note(summary) -> str:
    """Which drift criterion the headline numbers use, and what the two noise matrices are."""
    rule = summary["drift_rule"]
    others = [n for n in summary["drift_fractions"] if n != rule]
    text = (f"Published comparison (drift_fraction, the contours, T_c): `{rule}` = {_label(rule)}. "
            + ("Alongside: " + "; ".join(f"`{n}` = {_label(n)}" for n in others) + ". " if others else "")
            + "Ṽ_paper = Uᵀ Var_n(dX_n) U rotates the elementwise variance of dX over the test samples, as the "
            "published criterion does (it can have negative entries, and V_t from it can be negative, which "
            "passes any replica whose K_t clears the negative right-hand side); Ṽ = Var_n[(Uᵀ dX_n U)_ij] is the "
            "coefficient the eigenvalue SDE needs. Both enter V_t = 2Ṽ_{1K}/(K−1) + Σ_{k=1}^{K−2} "
            "(Ṽ_{1,k+1} + Ṽ_{K,K−k})/k with the levels descending. 'majority' judges each replica at "
            "the snapshots of the last half of the run and passes it when most pass.")
    if rule != next(iter(phases.DRIFT_VARIANTS)):
        text += " This run did not record V_t_paper, so the published criterion is not available."
    return text


def critical_temperature_section(summary) -> list[str]:
    """T_c at the smallest σ_W with its bootstrap error, for every drift-criterion variant."""
    sw = summary["init_std"]
    sel = np.nonzero(sw == sw.min())[0]
    sel = sel[np.argsort(summary["T"][sel])]
    rule, level = summary["drift_rule"], phases.DRIFT_LEVELS[0]
    fr = summary["drift_fractions"]
    col = [{"T": summary["T"][p], **{f"drift {n}": fr[n][p] for n in fr}, "majority label": str(summary["majority"][p])}
           for p in sel]
    rows = []
    for n, tc in summary["T_c"].items():
        others = {f"T_c@{lv}": phases.critical_temperature(summary["T"][sel], fr[n][sel], lv) for lv in phases.DRIFT_LEVELS[1:]}
        rows.append({
            "criterion": f"{n}" + (" (published)" if n == rule else ""),
            f"T_c@{level}": _tc_text(tc),
            "16–84 % of resamples": f"{tc['lo']:.3g}–{tc['hi']:.3g}",
            "resamples without a crossing": f"{tc['no_crossing']:.0%}",
            **{k: ("none in range" if not np.isfinite(v) else f"{v:.3g}") for k, v in others.items()},
        })
    head = summary["T_c"][rule]
    headline = (f"T_c = {_tc_text(head)}" if np.isfinite(head["T_c"])
                else "T_c: no crossing in the grid's temperature range")
    return [
        "## Critical temperature at the weakest disorder", "",
        f"σ_W = {sw.min():g}, published criterion (`{rule}`): **{headline}** (drift fraction {level}).", "",
        f"T_c is where the drift fraction first falls below the level as T grows, interpolated linearly in "
        f"log T between grid temperatures. Error: standard deviation of T_c over {head['n_boot']} bootstrap "
        f"resamples of the {head['replicas']} replicas (the same replica indices at every T); resamples "
        "without a crossing are left out and counted. The error is statistical only: it does not include "
        "the interpolation between grid temperatures.", "",
        _table(rows), "",
        "Drift fractions (among finite replicas) and majority labels along this column:", "",
        _table(col), "",
    ]


def fraction_section(summary) -> list[str]:
    """Per-point table: label fractions, the drift fractions of every variant, observables in
    both unit systems, and the agreement of each variant with the majority label."""
    rule = summary["drift_rule"]
    fr = summary["drift_fractions"]
    coords = {"T": summary["T"], "init_std": summary["init_std"]}
    rows = phases.compare_classifiers(summary["labels"], summary["drift_fraction"], coords=coords)
    paper = summary["paper"]
    for p, r in enumerate(rows):
        r.update({f"drift {n}": fr[n][p] for n in fr if n != rule})
        r.update(loss=summary["loss"][p], q=summary["q"][p], hs=summary["hs"][p], lam=summary["lam"][p],
                 loss_paper=paper["loss"][p], hs_paper=paper["hs"][p], lam_epoch=paper["lam"][p])
    epoch = np.unique(summary["steps_per_epoch"])
    agree = []
    for n in fr:
        judged = phases.compare_classifiers(summary["labels"], fr[n])
        rates = []
        for lv in phases.DRIFT_LEVELS:
            ok = [r[f"agree@{lv}"] for r in judged if r[f"agree@{lv}"] is not None]
            rates.append(f"{lv}: {np.mean(ok):.3f} of {len(ok)}" if ok else f"{lv}: n/a")
        agree.append(f"- `{n}`{' (published)' if n == rule else ''}: " + ", ".join(rates))
    return [
        "## Fractions per grid point and classifier comparison", "",
        f"drift_fraction, drift_level and agree@… use the published criterion `{rule}`; the columns "
        "'drift <variant>' the others. Units: loss is the median final test loss ½ mean (y − ŷ)², hs = "
        "Σ_nk ĥ_nk ŝ_nk, lam = ⟨λ⟩ per SGD step; in the published units loss_paper = 2·loss = mean (y − ŷ)², "
        f"hs_paper = hs/n_test (n_test = {summary['n_test']}), lam_epoch = lam × "
        f"{', '.join(f'{e:g}' for e in epoch)} steps per epoch.", "",
        "```", phases.format_comparison(rows), "```", "",
        "Agreement of each drift criterion with the majority label (ordered vs paramagnetic points only):", "",
        *agree, "",
    ]


def report(cfg, grid, summary, batch, bsum, times, figs, preset, checks=None, langevin=None) -> str:
    n_rs = grid["diverged"].size * cfg.steps
    lines = [
        f"# SGD phase diagram of the multilayer network ({'published protocol' if preset == 'full' else preset + ' preset'})",
        "",
        f"Grid run `{cfg.name}`: {len(grid.points)} points × {cfg.replicas} replicas × {cfg.steps} steps "
        f"(|B| = {int(summary['batch_size'][0])}), {times['grid']:.0f} s wall "
        f"({n_rs / times['grid']:.3g} replica-steps/s incl. compilation) on {grid.manifest.get('device', '?')}.",
        f"Batch-size run: {len(batch.points)} points, {batch.config['steps']} steps, {times['batch']:.0f} s wall.",
        "",
        f"Ensemble (what a replica draws for itself): {ensemble.describe(grid.ensemble)}. "
        + ("Every replica has its own M, Z, teacher and dataset, as in the published protocol, so the "
           "fractions and contours are averages over this disorder as well as over the initialisation."
           if set(grid.ensemble.values()) == {"replica"} else
           "This is NOT the published protocol (every seed its own M, Z, teacher, dataset)."),
        "",
        "Figures: " + ", ".join(f"`{Path(f).name}`" for f in figs) + ".",
        "",
        f"Observables per replica on the fixed test set of {summary['n_test']} "
        "inputs: test loss, overlap q with the initial features, alignment hs with the field, eigenvalues x_i "
        "of X = W Wᵀ, and the drift / Coulomb terms K_t, V_t, V_t_paper. λ = ln(ū(t)/ū(0))/t (t in steps) "
        "from the mean level spacing ū.",
        "",
        "Classifiers: the observable rules of `phases.classify_observables` "
        f"(thresholds {THRESHOLDS[preset] or 'default'}) and the drift criterion "
        "K_t/(√r (K−1)) ≥ T V_t/(4σ_W²) per replica. " + drift_note(summary),
        "",
    ]
    lines += critical_temperature_section(summary)
    lines += fraction_section(summary)
    # equal T
    erows = equal_time(batch, bsum)
    lines += ["## Equal α/|B| at different (α, |B|)", "",
              "Compared at equal SGD time τ = α·n (the linear scaling rule predicts equal statistics there); "
              "log_spacing = ⟨ln ū(τ)/ū(0)⟩.", "", _table(erows), ""]
    lines += _scaling_verdict(erows)
    # acceptance
    a1, a2, a3 = check_ordered(grid, summary), check_paramagnetic(summary), check_glassy(grid, summary)
    pt = lambda p: f"T={summary['T'][p]:g}, σ_W={summary['init_std'][p]:g}"  # noqa: E731
    div_pts = [i for i in range(summary["T"].size) if summary["divergent"][i] >= 0.5]
    lines += ["## Acceptance, as measured", "",
              f"- {'PASS' if a1['pass'] else 'FAIL'} ordered ({pt(a1['point'])}): median final/initial test loss "
              f"= {a1['loss_ratio']:.3g} (needs ≤ 0.01); max |x_i − x_i*| from {a1['dist0']:.3g} at t = 0 to "
              f"{a1['dist']:.3g} ({a1['rel']:.0%} of x_1*); levels (top 3) {[round(float(v), 3) for v in a1['xt'][:3]]} "
              f"vs teacher {[round(float(v), 3) for v in a1['teacher'][:3]]} (medians over replicas, each its own teacher). The spectrum approaches the teacher's "
              "but does not reach it within this run.",
              f"- {'PASS' if a2['pass'] else 'FAIL'} paramagnetic ({pt(a2['point'])}): ⟨λ⟩ = {a2['lam']:.3g}/step, "
              f"majority label {a2['majority']}.",
              f"- {'PASS' if a3['pass'] else 'FAIL'} glassy ({pt(a3['point'])}): extreme levels moved by (median) "
              f"{a3['top']:.1%} (top) and {a3['bottom']:.1%} (bottom) from t = 0 (needs ≤ 10%); "
              f"(median over replicas) edges {np.round(a3['x0_edges'], 2).tolist()} → {np.round(a3['xt_edges'], 2).tolist()}, "
              f"MP edges σ_W²(1±√(K/L))² = {np.round(a3['mp'], 2).tolist()}; q min {a3['q_min']:.3f}, mean "
              f"{a3['q_mean']:.3f} (needs > 0.5); majority label {a3['majority']}.",
              f"- divergent points (≥ half the replicas diverged): {len(div_pts)}"
              + (": " + ", ".join(pt(p) for p in div_pts) if div_pts else "") + "; the sweep finished."]
    if checks:
        early = [c for c in checks if c["window"] == "early"]
        key = [c for c in early if c["name"] in ("ordered", "paramagnetic")]
        ok = all(c["agree"] for c in key)
        lines.append(f"- {'PASS' if ok else 'FAIL'} Langevin cross-check, early window: the level SDE predicts SGD's regime "
                     "at the ordered and paramagnetic points (" + ", ".join(
                         f"{c['name']}: SGD {c['sgd']['regime']}, Langevin {c['langevin']['regime']}" for c in key)
                     + f"); {sum(c['agree'] for c in checks)} of {len(checks)} point × window rows agree (section below).")
        lines += [""] + langevin_section(checks, times, langevin)
    return "\n".join(lines)


def langevin_section(checks, times, dense) -> list[str]:
    early = [c for c in checks if c["window"] == "early"]
    late = [c for c in checks if c["window"] == "late"]
    n_agree = lambda rows: sum(c["agree"] for c in rows)  # noqa: E731
    return [
        "## Langevin cross-check: the level SDE with measured coefficients", "",
        "The levels x_i of X = W Wᵀ follow, in τ = α·n, dx_i = [K̄_ii + α S_ii + T Σ_j Ṽ_ij/(x_i − x_j) + T C̃_ii] dτ "
        "+ sqrt(T Ṽ_ii) dB_i, with the drift K̄ of the full-batch gradient, the O(α) term S of the discrete step, "
        "the pair noise Ṽ, the Itô term C̃ (the dW dWᵀ part of dX) and the drift's slope γ_i all measured from the "
        "network at each snapshot on the replica's own training data (`dysonbm.analysis.level_sde`; Ṽ, C̃ and γ on "
        "its first n_test samples), not on the test set of the published criterion: SGD's drift and noise are those "
        "of the samples it trains on. "
        "From every replica's levels at snapshot k, with its coefficients at k held fixed (the drift linearised in "
        "the level, restoring slopes only), the SDE is integrated over the interval to snapshot k+1 "
        f"({LANGEVIN_DRAWS} noise draws); the predicted and the SGD log changes are summed over the intervals and "
        "averaged over replicas (± standard error over replicas). Regime (`level_sde.regime`, same rule for both): "
        "frozen if ū, d and x_1 all change by less than 10 %; convergence if the distance d = max_i |x_i − x_i*| "
        "to the teacher's levels falls; growth if d and the mean spacing ū both grow; undetermined if the deciding "
        "sign is within 2 standard errors of 0. λ = Σ ln(ū_{k+1}/ū_k) per SGD step. The coefficients are tested "
        "apart from the regime statistics by the velocity of the largest level: SGD's mean (x_K(t_{k+1}) − x_K(t_k))/Δτ "
        "against the SDE's deterministic velocity at t_k (drift, Itô and Coulomb terms), ± the standard error of "
        "their difference over replicas.",
        "",
        f"Early window: a run at these points with snapshots every {LANGEVIN_EVERY} steps over the first "
        f"{LANGEVIN_STEPS} steps ({len(dense.points) if dense is not None else '?'} points × "
        f"{dense.config['replicas'] if dense is not None else '?'} replicas, "
        f"{times.get('langevin_run', float('nan')):.0f} s), intervals short enough for the coefficients to stay valid. "
        "Late window: the grid run's own snapshots (intervals of "
        f"{(late[0]['steps'][1] - late[0]['steps'][0]) // max(late[0]['intervals'], 1) if late else '?'} steps). "
        f"Integration of all predictions: {times.get('langevin_check', float('nan')):.0f} s; 'forced' is the share of "
        "sub-steps at the step-budget floor.",
        "", _table(langevin_table(early + late)), "",
        f"Agreement: early window {n_agree(early)} of {len(early)}, late window {n_agree(late)} of {len(late)}"
        + "".join(f"; {c['window']} {c['name']}: SGD {c['sgd']['regime']}, Langevin {c['langevin']['regime']}"
                  for c in checks if not c["agree"]) + ".",
        "",
        "Terms of the largest level's SDE at the start of the intervals (medians over replicas and intervals): the "
        "drift K̄_11 + α S_11, the Coulomb push T Σ_j Ṽ_1j/(x_1 − x_j), the Itô term T C̃_11, the noise over one interval "
        "sqrt(T Ṽ_11/Δτ), and γ_1Δτ (≫ 1: the drift relaxes the level within one interval).",
        "", _table([{"point": c["name"], "window": c["window"], **c["top_terms"]} for c in checks if c["top_terms"]]), "",
        "Limits of a one-interval prediction: K̃ and Ṽ depend on all of W, not on the levels alone, and are held "
        "fixed over an interval. Where the drift is restoring (γ_1Δτ ≫ 1) the SDE relaxes each level onto the fixed "
        "point of its snapshot drift within the interval; SGD's slower approach to the teacher through directions of "
        "W that the level coefficients do not see is then invisible, and the snapshot drift, dominated by fast "
        "fluctuations about the valley floor, sets where the level relaxes to. The dense early window keeps the "
        "intervals short; the late window on the grid's sparse snapshots shows what is lost at low T. A closed loop "
        "(coefficients frozen at one snapshot for a whole run) is not attempted for the same reason: K̃ and Ṽ change "
        "by orders of magnitude over a run.",
        "",
    ]


def _scaling_verdict(rows) -> list[str]:
    out = []
    for T in sorted({r["T"] for r in rows}):
        group = [r for r in rows if r["T"] == T]
        losses = np.array([r["loss"] for r in group])
        spac = np.array([r["log_spacing"] for r in group])
        spread = float(np.nanmax(losses) / np.nanmin(losses)) if np.isfinite(losses).any() else np.nan
        verdict = "holds" if spread < 2 and np.nanmax(spac) - np.nanmin(spac) < 0.3 else "fails"
        out.append(f"- T = {T:g}: test loss spread ×{spread:.3g} across |B| = "
                   f"{[r['batch_size'] for r in group]}, ln ū spread {np.nanmax(spac) - np.nanmin(spac):.3g}: "
                   f"linear scaling {verdict} (criterion: loss within ×2 and ln ū within 0.3).")
    return out + [""]
