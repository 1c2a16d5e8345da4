"""`dbm spectrum`: the diagnostics of `dysonbm.analysis.spectrum` for every 2-D matrix of checkpoints.

Each bad input (a missing or corrupt file, a file without 2-D arrays, a matrix with a single
row or column, or with NaN/inf entries) prints one line naming the file and matrix, and the
command exits with status 2 after analysing everything else it was given.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from dysonbm.analysis import spectrum as sp
from dysonbm.analysis.weights import WeightsError, load_arrays, results_steps

COLUMNS = ["source", "matrix", "rows", "cols", "c", "sigma2", "sigma2_err", "c_fit", "edge_lo", "edge_hi",
           "explained", "ks_mp", "n_outliers", "top_outlier", "tail_alpha", "tail_alpha_err", "tail_xmin",
           "tail_n", "r", "r_err", "ks_goe", "ks_gue", "ks_poisson"]

EXAMPLES = """\
examples:
  dbm spectrum model.safetensors --match 'attn.*key' --out spec/
  dbm spectrum ckpt_100.npz ckpt_200.npz ckpt_300.npz --sequence --lr 0.01 --batch-size 32 --out flow/
  dbm spectrum results/multilayer_quick --sequence --out flow/   # a run with record.weights = true
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("spectrum", help="spectral diagnostics (MP, outliers, tails, level statistics) of weights",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=".npz/.npy, .safetensors, .msgpack, .pkl (trusted files only), an Orbax "
                        "checkpoint directory, or a dbm results directory")
    p.add_argument("--match", metavar="REGEX", help="analyse only the matrices whose path matches (re.search)")
    p.add_argument("--out", help="folder for spectrum.csv, spectrum.json and one figure per matrix")
    p.add_argument("--sequence", action="store_true",
                   help="the PATHs (or a results directory's snapshots) are checkpoints of one run, in order: "
                        "level flow and diffusion")
    p.add_argument("--every", type=float, default=None, metavar="STEPS",
                   help="training steps between checkpoints given as files (default 1)")
    p.add_argument("--lr", type=float, help="learning rate: the effective temperature in τ = lr·step")
    p.add_argument("--batch-size", type=float, help="batch size: the linear-scaling prediction T = lr/|B|")


def _fail(message: str) -> None:
    print(f"dbm: error: {message}", file=sys.stderr)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def analyse(w: np.ndarray) -> tuple[dict, np.ndarray, int]:
    """One matrix: the table row (without source/matrix), its levels and n."""
    x, n, m = sp.levels_of(w)
    fit = sp.mp_fit(x, n)
    cfit = sp.mp_fit(x, n, fit_c=True)
    out = sp.outliers(x, n, fit)
    row = {"rows": w.shape[0], "cols": w.shape[1], "c": fit.c, "sigma2": fit.sigma2, "sigma2_err": fit.sigma2_err,
           "c_fit": cfit.c, "edge_lo": fit.edge_lo, "edge_hi": fit.edge_hi, "explained": fit.explained,
           "ks_mp": fit.ks, "n_outliers": int(out.size), "top_outlier": float(out[0]) if out.size else None}
    try:
        t = sp.tail_exponent(x)
        row.update(tail_alpha=t.alpha, tail_alpha_err=t.alpha_err, tail_xmin=t.xmin, tail_n=t.n_tail)
    except ValueError:  # too few positive levels for a tail
        row.update(tail_alpha=None, tail_alpha_err=None, tail_xmin=None, tail_n=None)
    try:
        s = sp.spacing_stats(x)
        row.update(r=s.r, r_err=s.r_err, ks_goe=s.ks_goe, ks_gue=s.ks_gue, ks_poisson=s.ks_poisson)
    except ValueError:  # too few (distinct) levels for local statistics
        row.update(r=None, r_err=None, ks_goe=None, ks_gue=None, ks_poisson=None)
    return row, x, n


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "matrix"


def _figure(path: Path, title: str, x: np.ndarray, row: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dysonbm.analysis import rmt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    hi = max(row["edge_hi"] * 1.5, np.quantile(x, 0.99))
    a.hist(x[x <= hi], bins=80, density=True, alpha=0.6, label="levels of WᵀW/n")
    g = np.linspace(max(row["edge_lo"], 1e-9), row["edge_hi"], 400)
    # the histogram is normalised over the levels it shows
    a.plot(g, rmt.marchenko_pastur_pdf(g, row["sigma2"], row["c"]) / np.mean(x <= hi), "k-",
           label=f"MP σ²={row['sigma2']:.3g}, c={row['c']:.3g}")
    a.axvline(row["edge_hi"], color="r", ls=":", lw=1)
    n_out = row["n_outliers"]
    a.set_title(f"spectrum ({n_out} outlier{'s' if n_out != 1 else ''} beyond the edge)")
    a.set_xlabel("λ")
    a.legend(fontsize=8)
    try:
        if row["r"] is None:
            raise ValueError("no local statistics")
        s = np.diff(sp.unfold(x))
        s = s / s.mean()
        b.hist(s, bins=50, range=(0, 4), density=True, alpha=0.6, label="unfolded spacings")
        t = np.linspace(0, 4, 200)
        b.plot(t, rmt.wigner_surmise(t, 1), "k-", label="GOE surmise")
        b.plot(t, rmt.wigner_surmise(t, 2), "k--", label="GUE surmise")
        b.plot(t, rmt.poisson_spacing(t), "k:", label="Poisson")
        b.set_title(f"⟨r⟩ = {row['r']:.3f} ± {row['r_err']:.3f}")
        b.legend(fontsize=8)
    except (ValueError, TypeError):
        b.set_title("too few levels for spacings")
    b.set_xlabel("s")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _flow_figure(path: Path, title: str, t: np.ndarray, sv: np.ndarray, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t, sv, lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("singular values of W")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _select(arrays: dict, match: str | None, source: str) -> dict | None:
    two_d = {k: v for k, v in arrays.items() if getattr(v, "ndim", 0) == 2}
    if not two_d:
        _fail(f"{source}: no 2-D arrays")
        return None
    if match is not None:
        two_d = {k: v for k, v in two_d.items() if re.search(match, k)}
        if not two_d:
            _fail(f"{source}: no 2-D array matches --match {match!r}")
            return None
    return two_d


def _check(w: np.ndarray, label: str) -> str | None:
    if min(w.shape) < 2:
        return f"{label}: shape {tuple(w.shape)}: a spectrum needs at least 2 rows and 2 columns"
    if not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w):
        return f"{label}: dtype {w.dtype}: expected real numbers"
    bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
    if bad:
        return f"{label}: {bad} NaN/inf entr{'y' if bad == 1 else 'ies'}"
    if not np.any(w):
        return f"{label}: all entries are zero"
    return None


def main(args) -> int:
    errors = 0
    if args.match is not None:
        try:
            re.compile(args.match)
        except re.error as err:
            _fail(f"--match = {args.match!r}: not a regular expression ({err})")
            return 2
    for flag in ("lr", "batch_size", "every"):
        v = getattr(args, flag)
        if v is not None and not (math.isfinite(v) and v > 0):
            _fail(f"--{flag.replace('_', '-')} = {v}: must be positive")
            return 2
    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            (out / "figures").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            _fail(f"--out = '{out}': {err.strerror or err}")
            return 2

    rows: list[dict] = []
    levels: dict[tuple[str, str], np.ndarray] = {}
    meta: dict[str, tuple] = {}
    for source in args.paths:
        try:
            arrays = load_arrays(source)
            meta[source] = results_steps(source)
        except (WeightsError, ValueError, OSError) as err:
            _fail(str(err))
            errors += 1
            continue
        chosen = _select(arrays, args.match, source)
        if chosen is None:
            errors += 1
            continue
        for name, w in chosen.items():
            label = f"{source}: {name}"
            problem = _check(np.asarray(w), label)
            if problem:
                _fail(problem)
                errors += 1
                continue
            try:
                row, x, n = analyse(np.asarray(w, dtype=np.float64))
            except (ValueError, np.linalg.LinAlgError) as err:
                _fail(f"{label}: {err}")
                errors += 1
                continue
            row = {"source": source, "matrix": name, **row}
            rows.append(row)
            levels[(source, name)] = np.sqrt(n * x)  # singular values of W, for the flow
            if out is not None:
                _figure(out / "figures" / f"{_safe(Path(source).name + '_' + name)}.png", label, x, row)

    sequences = _sequences(args, levels, meta, out) if args.sequence else []
    if args.sequence and not sequences and rows:
        _fail("--sequence: no matrix appears in 3 or more checkpoints of the same shape")
        errors += 1
    _print_table(rows, sequences)
    if out is not None and (rows or sequences):
        _write(out, rows, sequences)
    return 2 if errors else 0


def _sequences(args, levels: dict, meta: dict, out: Path | None) -> list[dict]:
    """Group the singular values into runs: one matrix name across the files in the given
    order, or across the snapshots of a results directory (``…/s<k>``)."""
    groups: dict[tuple, list] = {}
    single_results = len(args.paths) == 1 and meta.get(args.paths[0]) is not None
    for (source, name), sv in levels.items():
        if single_results:
            mt = re.fullmatch(r"(.*)/s(\d+)", name)
            if not mt:
                continue
            steps, _ = meta[source]
            groups.setdefault((source, mt.group(1)), []).append((float(steps[int(mt.group(2))]), sv))
        else:
            k = args.paths.index(source)
            groups.setdefault(("", name), []).append((k * (args.every or 1.0), sv))
    result = []
    for (source, name), seq in groups.items():
        seq.sort(key=lambda item: item[0])
        if len(seq) < 3 or len({s.shape for _, s in seq}) != 1:
            continue
        t = np.array([a for a, _ in seq])
        sv = np.stack([s for _, s in seq])
        lr, bs = args.lr, args.batch_size
        if single_results:
            lr, bs = _run_hp(meta[source][1], name, lr, bs)
        d = sp.level_diffusion(sv, dt=np.diff(t), chiral=True, lr=lr, batch_size=bs)
        rec = {"source": source or " ".join(args.paths), "matrix": name, "checkpoints": len(seq), "D": d.D,
               "D_err": d.D_err, "temperature": d.temperature, "temperature_err": d.temperature_err,
               "T_pred": d.T_pred, "noise_var": d.noise_var, "lr": lr, "batch_size": bs,
               "D_per_level": d.per_level.tolist(), "D_per_level_err": d.per_level_err.tolist()}
        result.append(rec)
        if out is not None:
            _flow_figure(out / "figures" / f"flow_{_safe(Path(source).name + '_' + name)}.png",
                         f"{name}: D = {d.D:.3g} ± {d.D_err:.2g} per step", t, sv,
                         "step" if single_results or args.every else "checkpoint")
    return result


def _run_hp(hps: dict, name: str, lr, bs):
    """lr and batch size of replica ``weights/p<P>/r<R>`` of a results directory (flags win)."""
    mt = re.fullmatch(r"weights/p(\d+)/r(\d+)", name)
    if mt:
        point = int(mt.group(1))  # a replica's hyperparameters are its grid point's
        if lr is None and "lr" in hps:
            lr = float(hps["lr"][point])
        if bs is None and "batch_size" in hps:
            bs = float(hps["batch_size"][point])
    return lr, bs


def _print_table(rows: list[dict], sequences: list[dict]) -> None:
    cols = [("matrix", "matrix"), ("shape", None), ("σ²", "sigma2"), ("c", "c"), ("x₊", "edge_hi"),
            ("in MP", "explained"), ("outl", "n_outliers"), ("α tail", "tail_alpha"), ("±", "tail_alpha_err"),
            ("⟨r⟩", "r"), ("±", "r_err"), ("KS β1", "ks_goe"), ("KS β2", "ks_gue"), ("KS Poi", "ks_poisson")]
    multi = len({r["source"] for r in rows}) > 1
    table = [[h for h, _ in cols]]
    for r in rows:
        name = f"{r['source']}: {r['matrix']}" if multi else r["matrix"]
        table.append([name if k == "matrix" else f"{r['rows']}×{r['cols']}" if k is None else _fmt(r[k])
                      for _, k in cols])
    if rows:
        widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
        for line in table:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    for s in sequences:
        text = f"{s['matrix']}: {s['checkpoints']} checkpoints, D = {s['D']:.4g} ± {s['D_err']:.2g} per step"
        if s["temperature"] is not None:
            text += f", T_eff = {s['temperature']:.4g} ± {s['temperature_err']:.2g}"
        if s["T_pred"] is not None:
            text += f" (lr/|B| = {s['T_pred']:.4g}, ratio {s['noise_var']:.4g})"
        print(text)


def _write(out: Path, rows: list[dict], sequences: list[dict]) -> None:
    with open(out / "spectrum.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=COLUMNS)
        wr.writeheader()
        for r in rows:
            wr.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    if sequences:
        keys = [k for k in sequences[0] if not k.startswith("D_per_level")]
        with open(out / "sequence.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            wr.writeheader()
            for s in sequences:
                wr.writerow({k: ("" if s.get(k) is None else s.get(k)) for k in keys})
    with open(out / "spectrum.json", "w") as f:
        json.dump({"matrices": rows, "sequences": sequences}, f, indent=1,
                  default=lambda o: o.item() if hasattr(o, "item") else str(o))
