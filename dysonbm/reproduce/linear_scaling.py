"""`dbm reproduce linear-scaling`: the linear scaling rule in the teacher–student model and the
Gaussian RBM (SCIENCE.md §3.1, §3.2), with figures and a markdown report.

Full preset: the published protocols (presets ts_linear_scaling, shared dataset per point, and
rbm_linear_scaling). Quick preset (minutes on two CPU cores): the teacher–student sweep with
fresh data every step (protocol "online"), so that the measured widths can be held to the exact
stationary law within their statistical errors, and a small RBM sweep (preset rbm_quick).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
import traceback
from pathlib import Path

import dysonbm as dbm
from dysonbm import ensemble, presets
from dysonbm.analysis import scaling

# quick preset: fresh data every step; 800 steps at α ≥ 0.1 relax W − W_t (rate α per step)
# within ~100 steps, and snapshots 40 steps apart at α = 0.1 are nearly independent
TS_QUICK = dict(replicas=400, steps=800, snapshot_every=40, data={"protocol": "online"},  # no dataset settings
                ensemble__inputs="replica")  # the preset shares its inputs per point; online, each replica its own
RBM_QUICK: dict = {}
RBM_TIMEOUT_S = 420


# what a run writes at the top of ``out`` (`dbm reproduce` replaces nothing else), and which
# of those are results stores
RUNS = ("ts", "rbm")
OUTPUTS = (*RUNS, "figures", "report.md")


def _run_one(config, out, overrides: dict, progress: bool, resume: bool):
    """`runner.run` of a config path with ``dbm.run``-style overrides (``train__lr``, or ``data``
    for a whole table); ``resume`` continues an interrupted run or reuses a finished one of the
    same config."""
    from dysonbm import config as cfgs, runner

    cfg = cfgs.load(config, {k.replace("__", "."): v for k, v in overrides.items()})
    return runner.run(cfg, out=out, overwrite=not resume, resume=resume, progress=progress)


def _run_child(config, out, overrides, progress, queue, resume=False):
    try:
        _run_one(config, out, overrides, progress, resume)
        queue.put(None)
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put(traceback.format_exc())


def _run_guarded(config, out: Path, overrides: dict, progress: bool, timeout: float | None, resume: bool = False):
    """``dbm.run`` in a child process with a wall-clock limit; returns an error text or None."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_child, args=(str(config), str(out), overrides, progress, queue, resume))
    proc.start()
    try:
        proc.join(timeout)
    except BaseException:  # interrupted: stop the child too (its checkpoint stays resumable)
        proc.terminate()
        proc.join()
        raise
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return f"no result within {timeout:.0f} s (run stopped)"
    return queue.get() if not queue.empty() else f"exit status {proc.exitcode}"


def _fmt(x, err=None, digits=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g} ± {err:.2g}" if err is not None else f"{x:.{digits}g}"


def _hp(p):
    s = f"α = {p['lr']:g}, |B| = {p['batch_size']}"
    if "noise" in p:
        s += f", A = {p['noise']:g}"
    return s


def report_section(title: str, results, analysis: scaling.ScalingAnalysis, figures, protocol_note: str) -> str:
    cfg = results.config
    lines = [f"## {title}", "", protocol_note, "",
             f"Ensemble (what a replica draws for itself): {ensemble.describe(results.ensemble)}.", "",
             f"Results: `{results.path}` — {len(results.points)} points × {cfg['replicas']} replicas, "
             f"{cfg['steps']} steps, snapshots from step {int(results.steps[analysis.start])} on "
             f"({len(results.steps) - analysis.start} per replica) pooled; "
             f"{results.manifest.get('wall_time_s', float('nan')):.0f} s.", ""]
    lines += ["### Collapse (fit y = b·x through the origin, α-sweep and |B|-sweep together)", "",
              "| quantity | fitted slope b | χ²/dof | theory | ratio b/theory |", "|---|---|---|---|---|"]
    for q, name in (("mean_s", "⟨S⟩"), ("sqrtpi_sigma", "√π σ")):
        f = analysis.fits[q]
        ratio = f"{f.ratio:.4f} ± {f.slope_err / f.theory:.4f}" if f.theory else "– (prefactor not predicted)"
        lines.append(f"| {name} | {_fmt(f.slope, f.slope_err)} | {f.chi2_dof:.2f} | {_fmt(f.theory)} | {ratio} |")
    if analysis.published:
        pub = analysis.published
        a_ref, a_err = pub["published"]
        lines += ["", f"### The published collapse: ⟨S⟩ = a·sqrt(αA²/|B|) over all {pub['points']} points", "",
                  f"Published: a = {a_ref} ± {a_err}. Here:", "",
                  "| fit | a | (a − a_published)/σ |", "|---|---|---|"]
        for name, text in (("unweighted", "least squares, error from the scatter"),
                           ("weighted", f"weighted by the errors, χ²/dof = {pub['weighted']['chi2_dof']:.1f}")):
            f = pub[name]
            lines.append(f"| {text} | {_fmt(f['slope'], f['err'])} | {f['z']:+.2f} |")
        lines += ["", "σ combines both errors. In the small-α limit a = sqrt(π) = 1.772; the O(α) terms of "
                  "the exact law raise it at the larger α of the sweep."]
    lines += ["", "Per sweep block:", "", "| block | ⟨S⟩ slope | √π σ slope |", "|---|---|---|"]
    for b, name in enumerate(analysis.blocks):
        if (b, "mean_s") in analysis.block_fits:
            fa, fb = analysis.block_fits[(b, "mean_s")], analysis.block_fits[(b, "sqrtpi_sigma")]
            lines.append(f"| {name} | {_fmt(fa.slope, fa.slope_err)} | {_fmt(fb.slope, fb.slope_err)} |")
    lines += ["", "### Per point (deviation from the reference line: theory if fixed, else the fit)", "",
              "| point | pair | x (predicted) | ⟨S⟩ | √π σ | dev ⟨S⟩ | pull ⟨S⟩ | centre shift | KS D vs surmise | KS p |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    fm, fs = analysis.fits["mean_s"], analysis.fits["sqrtpi_sigma"]
    for i, s in enumerate(analysis.stats):
        lines.append(
            f"| {_hp(s.hp)} | {s.label} | {s.scale:.4g} | {_fmt(s.mean_s, s.mean_s_err)} | "
            f"{_fmt(s.sqrtpi_sigma, s.sqrtpi_sigma_err)} | {fm.deviation[i]:+.1%} | {fm.pull[i]:+.1f} | "
            f"{_fmt(s.shift, s.centre_err, 3)} | {s.ks_d:.3f} | {s.ks_p:.2g} |")
    bad = [i for i in range(len(analysis.stats)) if abs(fm.pull[i]) > 3 or abs(fs.pull[i]) > 3]
    lines += ["", "### Where the collapse breaks down", ""]
    if bad:
        lines.append("Points more than 3 standard errors off the reference line (⟨S⟩ or √π σ):")
        lines.append("")
        for i in bad:
            s = analysis.stats[i]
            lines.append(f"- {_hp(s.hp)}, {s.label}: ⟨S⟩ {fm.deviation[i]:+.1%} ({fm.pull[i]:+.1f} s.e.), "
                         f"√π σ {fs.deviation[i]:+.1%} ({fs.pull[i]:+.1f} s.e.)")
    else:
        lines.append("No point is more than 3 standard errors off the reference line.")
    worst = max(range(len(analysis.stats)), key=lambda i: abs(fm.deviation[i]))
    lines.append("")
    lines.append(f"Largest relative deviation of ⟨S⟩: {fm.deviation[worst]:+.1%} at {_hp(analysis.stats[worst].hp)}.")
    lines += ["", "### Spacing distribution", "",
              f"All pairs and points pooled, s = S/⟨S⟩ against the β = 1 surmise: KS D = {analysis.pooled_ks[0]:.4f}, "
              f"p = {analysis.pooled_ks[1]:.3g}; against Poisson: D = {analysis.pooled_ks_poisson[0]:.3f}, "
              f"p = {analysis.pooled_ks_poisson[1]:.2g}. (p-values use the effective number of independent "
              "spacings, n/g with g from the lag-one autocorrelation between snapshots.)", ""]
    lines += ["### Equal α/|B| compared directly (two-sample KS on the raw spacings S)", ""]
    if analysis.comparisons:
        lines += ["| point a | point b | pair | ⟨S⟩_b/⟨S⟩_a | KS D | KS p |", "|---|---|---|---|---|---|"]
        for c in analysis.comparisons:
            lines.append(f"| {_hp(results.points[c.point_a])} | {_hp(results.points[c.point_b])} | {c.label} | "
                         f"{_fmt(c.mean_s_ratio, c.mean_s_ratio_err)} | {c.ks_d:.3f} | {c.ks_p:.2g} |")
        if analysis.model == "teacher_student":
            lines += ["", "The exact stationary law predicts ⟨S⟩_b/⟨S⟩_a = x_b/x_a ≠ 1 at finite α (to leading "
                      "order sqrt[(2 − α_a(1 + 3/|B|_a))/(2 − α_b(1 + 3/|B|_b))]): a small KS p here is the "
                      "O(α) breakdown of the rule, not noise."]
            scale = {(s.point, s.pair): s.scale for s in analysis.stats}
            for c in analysis.comparisons:
                pa, pb = results.points[c.point_a], results.points[c.point_b]
                want = scale[(c.point_b, c.pair)] / scale[(c.point_a, c.pair)]
                lines.append(f"- {_hp(pa)} vs {_hp(pb)}: predicted ratio {want:.4f}, "
                             f"measured {_fmt(c.mean_s_ratio, c.mean_s_ratio_err)}")
    else:
        lines.append("No two points of this sweep share α/|B| with different α.")
    if analysis.shift_slopes:
        lines += ["", "### Centre shift (non-universal), slope of x₀ − target against α/|B|", ""]
        for k, (b, e) in analysis.shift_slopes.items():
            lines.append(f"- {analysis.spectrum.labels[k]}: {_fmt(b, e)}")
    lines += ["", "### Figures", ""] + [f"![{Path(f).stem}]({Path(f).relative_to(results.path.parent)})" for f in figures]
    return "\n".join(lines) + "\n"


#: the parts of the reproduction, in order (`dbm reproduce linear-scaling --only PART`)
PARTS = ("ts", "rbm")


def run(out: Path, quick: bool = False, progress: bool = False, resume: bool = False,
        parts: tuple[str, ...] = PARTS) -> Path:
    """Run the sweeps of ``parts`` into ``out/ts`` and ``out/rbm``, write figures and
    ``out/report.md`` (``resume``: continue interrupted sweeps, reuse finished ones of the same
    config)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sections, timings = [], []
    if "ts" in parts:
        sections.append(_teacher_student(out, quick, progress, resume, timings))
    if "rbm" in parts:
        sections.append(_rbm(out, quick, progress, resume, timings))

    total = time.perf_counter() - t0
    head = ["# Linear scaling rule: SGD noise ∝ α/|B|", "",
            f"Preset: {'quick' if quick else 'full (published protocol)'}"
            + ("" if tuple(parts) == PARTS else f", parts: {', '.join(parts)}") + f"; total {total:.0f} s.", "",
            "| stage | wall time (s) |", "|---|---|", *(f"| {n} | {s:.0f} |" for n, s in timings), ""]
    report = out / "report.md"
    report.write_text("\n".join(head) + "\n" + "\n".join(sections))
    return report


def _teacher_student(out: Path, quick: bool, progress: bool, resume: bool, timings: list) -> str:
    from dysonbm.plots import linear_scaling as plots

    t = time.perf_counter()
    ts = _run_one(presets.path("ts_linear_scaling"), out / "ts", TS_QUICK if quick else {}, progress, resume)
    timings.append(("teacher–student sweep", time.perf_counter() - t))
    t = time.perf_counter()
    ts_an = scaling.analyse(ts)
    ts_figs = plots.plot_analysis(ts, ts_an, out / "figures")
    timings.append(("teacher–student analysis and figures", time.perf_counter() - t))
    note = ("Protocol: " + ("fresh data every step (`online`), so the exact stationary law applies; the published "
                            "protocol shares the inputs of a point, which scatters the variance by several percent "
                            "and would not be a fair test of a 10% criterion." if quick else
                            "published: 500·|B| inputs per point shared by its replicas, each replica its own noise "
                            "sequence frozen per sample index, fixed order, 10 epochs, 3000 replicas. The spread "
                            "of a point is the frozen-noise law given its inputs, which scatters by several percent "
                            "around the fresh-data theory.")
            + " Predicted scale x: ⟨S⟩ of the exact stationary law of the discrete update with fresh data "
              "(second moments from the exact recursion, then Gaussian), theory slope 1; its small-α/|B| "
              "limit is sqrt(2π)·τ with τ² = αA²/(|B|(2 − α(1 + (N+1)/|B|))), 0.04–1% higher at the "
              "published points.")
    return report_section("Teacher–student (N = 2, W_t = 2·I)", ts, ts_an, ts_figs, note)


def _rbm(out: Path, quick: bool, progress: bool, resume: bool, timings: list) -> str:
    from dysonbm.plots import linear_scaling as plots

    rbm_cfg = presets.path("rbm_quick" if quick else "rbm_linear_scaling")
    t = time.perf_counter()
    err = _run_guarded(rbm_cfg, out / "rbm", RBM_QUICK if quick else {}, progress, RBM_TIMEOUT_S if quick else None,
                       resume)
    timings.append(("RBM sweep", time.perf_counter() - t))
    if err is not None:
        return f"## Gaussian RBM\n\nThe RBM sweep (`{rbm_cfg.name}`) did not finish: {err.strip()}\n"
    t = time.perf_counter()
    rbm = dbm.load(out / "rbm")
    rbm_an = scaling.analyse(rbm)
    rbm_figs = plots.plot_analysis(rbm, rbm_an, out / "figures")
    timings.append(("RBM analysis and figures", time.perf_counter() - t))
    note = (f"Config `{rbm_cfg.name}`" + (" (quick: fewer replicas and updates, larger α only)" if quick else "")
            + ". Levels: σ_h²ξ² (eigenvalues of σ_h² WᵀW) around μ² − κ; predicted scale "
            "x = sqrt((α/|B|)(μ² − κ)) per degenerate pair; the prefactor is not predicted, so the test is "
            "one common slope for every pair, α and |B|.")
    return report_section("Gaussian RBM (N_v = N_h = 10, μ² = 9, m² = 4)", rbm, rbm_an, rbm_figs, note)
