"""`dbm reproduce transformer`: Key-matrix spectra of a small character-level GPT under AdamW
(SCIENCE.md §3.5), with figures, a markdown report and its numbers as JSON.

Presets: ``transformer_quick`` (minutes on two CPU cores) and ``transformer`` (larger model,
more replicas and steps). The report states the validation loss against the unigram entropy
of the corpus and says FAILED when the model did not learn (`dysonbm.analysis.transformer.MARGIN_BITS`):
then the spectra describe an untrained network and mean nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from dysonbm import ensemble, presets
from dysonbm.analysis import transformer as ts
from dysonbm.reproduce.linear_scaling import _run_one

RUNS = ("run",)
OUTPUTS = (*RUNS, "figures", "report.md", "report.json")


def _fmt(x, err=None, digits=4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g} ± {err:.2g}" if err is not None and math.isfinite(err) else f"{x:.{digits}g}"


def _hp(hp: dict, cell: bool = False) -> str:
    """The point's hyperparameters (``cell``: escaped for a markdown table)."""
    bars = "\\|" if cell else "|"
    return f"α = {hp['lr']:g}, {bars}B{bars} = {hp['batch_size']}, wd = {hp.get('weight_decay', 0):g}"


def _snapshot_json(s: ts.Snapshot) -> dict:
    return {"mp_sigma2": s.fit.sigma2, "mp_sigma2_err": s.sigma2_err, "mp_edges": [s.fit.edge_lo, s.fit.edge_hi],
            "mp_explained": s.fit.explained, "mp_ks": s.fit.ks, "outliers_per_matrix": s.outliers_per_matrix,
            "matrices_with_outliers": s.matrices_with_outliers,
            "tail_exponent": s.tail.alpha if s.tail else None, "tail_exponent_err": s.tail.alpha_err if s.tail else None,
            "tail_xmin": s.tail.xmin if s.tail else None, "mean_r": s.r, "mean_r_err": s.r_err,
            "ks_surmise1": s.ks_goe, "ks_poisson": s.ks_poisson, "n_spacings": int(s.spacings.size)}


def report_json(results, an: ts.Analysis, wall: float) -> dict:
    return {
        "results": str(results.path), "kind": an.kind, "rows_n": an.n, "aspect_ratio_c": an.c,
        "unigram_bits": an.unigram_bits, "log2_vocab": math.log2(an.vocab), "margin_bits": ts.MARGIN_BITS,
        "passed": an.passed, "wall_time_s": wall, "steps": int(results.steps[-1]),
        "points": [{
            "hp": pt.hp, "lr_over_batch": pt.temperature, "val_bits": pt.val_bits, "val_bits_err": pt.val_bits_err,
            "train_bits": pt.train_bits, "diverged": pt.diverged,
            "init": {"exact_sigma2": pt.init.sigma2, "exact_c": pt.init.c, "ks_exact": pt.init.ks_exact,
                     "fit_sigma2": pt.init.fit.sigma2, "fit_sigma2_err": pt.init.fit.sigma2_err, "fit_ks": pt.init.fit.ks,
                     "fit_c_sigma2": pt.init.fit_c.sigma2, "fit_c": pt.init.fit_c.c},
            "start": _snapshot_json(pt.start), "end": _snapshot_json(pt.end)} for pt in an.points],
        "equal_lr_over_batch": [{"a": a, "b": b, "sigma2_ratio": r, "err": e} for a, b, r, e in an.equal_temperature],
    }


def report_markdown(results, an: ts.Analysis, figures, wall: float, preset: str, root: Path | None = None) -> str:
    """The markdown report; figure links are relative to ``root`` (the report's folder,
    default: the results' parent)."""
    cfg = results.config
    model = ts.model_of(results)
    source = f"`{model.text}`" if model.text else f"generated (seed {model.corpus_seed}, {model.corpus_chars} characters)"
    verdict = ("PASSED" if an.passed else "FAILED") + (
        f": the validation loss of every point is at least {ts.MARGIN_BITS:g} bit below the unigram entropy"
        if an.passed else f": a point's validation loss is not {ts.MARGIN_BITS:g} bit below the unigram entropy; "
        "the network has not learnt the corpus and its spectra mean nothing")
    lines = [
        "# Transformer Key-matrix spectra under AdamW", "",
        f"Preset `{preset}`: {model.layers} layers × {model.heads} heads, d = {model.d_model}, context {model.context}, "
        f"corpus {source}, "
        f"vocabulary {an.vocab}; {len(results.points)} points × {cfg['replicas']} replicas, {cfg['steps']} steps "
        f"(snapshots every {cfg['snapshot_every']}); optimizer {cfg['train']['optimizer']}; {wall:.0f} s in all.", "",
        f"Ensemble: {ensemble.describe(results.ensemble)}.", "",
        "## Did it learn?", "",
        f"Unigram entropy of the corpus: **{an.unigram_bits:.3f} bits/char** (log2 V = {math.log2(an.vocab):.3f}). "
        f"**{verdict}.**", "",
        "| point | validation bits/char (end) | training windows bits/char | unigram − validation | diverged |",
        "|---|---|---|---|---|"]
    for pt in an.points:
        lines.append(f"| {_hp(pt.hp, True)} | {_fmt(pt.val_bits, pt.val_bits_err)} | {_fmt(pt.train_bits)} | "
                     f"{_fmt(an.unigram_bits - pt.val_bits)} | {pt.diverged} |")
    law = an.points[0].init
    lines += ["", f"## At initialisation: Marchenko–Pastur ({an.kind})", "",
              f"Levels of X = WᵀW/{an.n} per layer and head, W the head's {an.n} × {round(an.c * an.n)} block with "
              f"i.i.d. N(0, σ²) entries: MP with c = {an.c:.4g} and σ² = init_std², edges σ²(1 ± √c)². "
              "Pooled over replicas, layers and heads:", "",
              "| point | exact σ² | fitted σ² (c exact) | fitted σ², c | KS to exact MP | KS to fitted |",
              "|---|---|---|---|---|---|"]
    for pt in an.points:
        i = pt.init
        lines.append(f"| {_hp(pt.hp, True)} | {i.sigma2:.4g} (c = {i.c:.4g}) | {_fmt(i.fit.sigma2, i.fit.sigma2_err)} | "
                     f"{i.fit_c.sigma2:.4g}, {i.fit_c.c:.4g} | {i.ks_exact:.4f} | {i.fit.ks:.4f} |")
    lines += ["", f"Exact edges of the first point: [{float((1 - math.sqrt(law.c)) ** 2 * law.sigma2):.4g}, "
              f"{float((1 + math.sqrt(law.c)) ** 2 * law.sigma2):.4g}]; with {round(an.c * an.n)} levels per matrix "
              "the edges are soft on the Tracy–Widom scale, which the KS distances include.", "",
              "## At the end: bulk, outliers, tail, local statistics", "",
              "Bulk: MP fitted to the central 80% of the pooled levels (c fixed; error: the larger of the fit's and the "
              "scatter of the replicas' own fits). Outliers: levels above the fitted "
              "edge plus the Tracy–Widom margin, per matrix. Tail: ρ(λ) ∝ λ^−a above a KS-chosen λ_min (maximum "
              "likelihood). Spacings: unfolded per layer and head by the counting function of ln λ (less each "
              "matrix's mean ln λ) pooled over replicas; "
              f"⟨r⟩ over matrices (GOE {0.5307}, Poisson {0.3863}).", "",
              "| point | α/\\|B\\| | σ² start → end | σ²_end/σ²_init | outliers/matrix | tail a | ⟨r⟩ start → end | "
              "KS s vs β=1 / Poisson (end) |", "|---|---|---|---|---|---|---|---|"]
    for pt in an.points:
        s, e = pt.start, pt.end
        tail = _fmt(e.tail.alpha, e.tail.alpha_err, 3) if e.tail else "–"
        lines.append(f"| {_hp(pt.hp, True)} | {pt.temperature:.3g} | "
                     f"{s.fit.sigma2:.3g} → {_fmt(e.fit.sigma2, e.sigma2_err, 3)} | {e.fit.sigma2 / pt.init.sigma2:.3f} | "
                     f"{e.outliers_per_matrix:.2f} ({e.matrices_with_outliers:.0%} of matrices) | {tail} | "
                     f"{_fmt(s.r, s.r_err, 3)} → {_fmt(e.r, e.r_err, 3)} | {e.ks_goe:.3f} / {e.ks_poisson:.3f} |")
    lines += ["", "## Linear scaling: does the bulk width follow α/|B|?", ""]
    if an.equal_temperature:
        lines.append("Points at equal α/|B| (the rule predicts equal bulks, ratio 1):")
        lines.append("")
        for a, b, r, err in an.equal_temperature:
            z = (r - 1) / err if err > 0 else float("nan")
            ratio_lr = an.points[b].hp["lr"] / an.points[a].hp["lr"]
            lines.append(f"- {_hp(an.points[a].hp)} vs {_hp(an.points[b].hp)}: σ²_b/σ²_a = {_fmt(r, err)} "
                         f"({z:+.1f} standard errors from 1; α_b/α_a = {ratio_lr:g})")
        ok = all(abs(r - 1) < 3 * e for _, _, r, e in an.equal_temperature)
        lines += ["", "The bulk width " + ("is consistent with the linear scaling rule at these points (ratio within 3 "
                                            "standard errors of 1)." if ok else "does not follow the linear scaling "
                                            "rule at these points (ratio more than 3 standard errors from 1).")
                  + " Under Adam the size of a step is set by α (the gradient is divided by its running RMS), "
                  "so the rule derived for SGD (SCIENCE.md §1) need not hold; compare the ratio with α_b/α_a."]
    else:
        lines.append("No two points share α/|B| with different α: see the figure below for the trend.")
    root = Path(root if root is not None else results.path.parent)
    lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({os.path.relpath(f, root)})" for f in figures]
    return "\n".join(lines) + "\n"


def run(out: Path, quick: bool = False, progress: bool = False, resume: bool = False) -> Path:
    """Run the preset into ``out/run``, write ``out/figures``, ``out/report.md`` and
    ``out/report.json``; returns the markdown report's path."""
    from dysonbm.plots import transformer as transformer_plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preset = "transformer_quick" if quick else "transformer"
    t0 = time.perf_counter()
    results = _run_one(presets.path(preset), out / "run", {}, progress, resume)
    an = ts.analyse(results, "key")
    figures = transformer_plots.plot_all(results, an, out / "figures")
    wall = time.perf_counter() - t0
    (out / "report.json").write_text(json.dumps(report_json(results, an, wall), indent=1, default=float))
    report = out / "report.md"
    report.write_text(report_markdown(results, an, figures, wall, preset, out))
    if not an.passed:
        worst = max(pt.val_bits for pt in an.points)
        print(f"dbm: warning: FAILED: validation loss {worst:.3f} bits/char is not {ts.MARGIN_BITS:g} bit below the "
              f"unigram entropy {an.unigram_bits:.3f}; the spectra describe an untrained network ({report})",
              file=sys.stderr)
    return report
