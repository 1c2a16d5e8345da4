"""Phase classification and phase-diagram assembly for the multilayer sweep (SCIENCE.md §3.3).

Plain numpy on arrays loaded from the results store, whose leading axes are
(grid point, replica, snapshot, ...). Two classifiers are compared:

- from observables: each replica gets one of ``LABELS`` by the rules of
  ``classify_observables``;
- from the drift-versus-Coulomb criterion (``dysonbm.observables.drift_dominated``): the
  fraction of replicas that pass, contoured at 0.68 / 0.95 / 0.997, bounds the ordered
  phase towards high temperature; ``disorder_line`` (σ_W² = 1/2) bounds it towards the glass.
  The published criterion judges the final weights with the paper's noise matrix; the
  variants of ``DRIFT_VARIANTS`` (a majority over late snapshots, the SDE's noise matrix)
  are kept alongside.
"""

from __future__ import annotations

import numpy as np

from dysonbm.sde.conversions import temperature

PHASES = ("ordered", "paramagnetic", "glassy", "divergent")
UNRESOLVED = "unresolved"
#: every label, in the order of precedence of the classification rules and of tie-breaks
LABELS = ("divergent", "ordered", "glassy", "paramagnetic", UNRESOLVED)

#: σ_W where tanh of a Gaussian of variance σ_W² turns bimodal (σ_W² = 1/2): ordered | glassy
disorder_line = float(1.0 / np.sqrt(2.0))

#: snapshots the drift criterion is judged on (`drift_passes`)
DRIFT_RULES = ("final", "majority")
#: drift-criterion variants: name -> (rule, V_t observable, label). The first is the published
#: criterion (final weights, the paper's Ṽ), used for the headline drift fraction and T_c;
#: the others are shown alongside.
DRIFT_VARIANTS = {
    "final/paper": ("final", "V_t_paper", "final weights, Ṽ_paper = Uᵀ Var(dX) U (published)"),
    "final/sde": ("final", "V_t", "final weights, Ṽ = Var(Uᵀ dX U) (the SDE's)"),
    "majority/paper": ("majority", "V_t_paper", "majority of the last half of snapshots, Ṽ_paper"),
    "majority/sde": ("majority", "V_t", "majority of the last half of snapshots, Ṽ (the SDE's)"),
}
#: drift-fraction contour levels; T_c is quoted at the first
DRIFT_LEVELS = (0.68, 0.95, 0.997)
#: bootstrap resamples of the replicas for the error of T_c
TC_BOOTSTRAP = 1000

_LABEL_DTYPE = "<U12"


def _ascending(levels) -> np.ndarray:
    return np.sort(np.asarray(levels, dtype=float), axis=-1)


def _mean_spacing(levels: np.ndarray) -> np.ndarray:
    # (x_max − x_min)/(N − 1): the mean spacing of the sorted levels
    return (levels.max(axis=-1) - levels.min(axis=-1)) / (levels.shape[-1] - 1)


def classify_observables(
    test_loss,
    loss0,
    spectrum_t,
    spectrum_0,
    q,
    finite=None,
    teacher_spectrum=None,
    *,
    loss_prev=None,
    converged_ratio: float = 1e-2,
    teacher_rtol: float = 0.1,
    teacher_levels: int | None = None,
    teacher_approach: float | None = None,
    frozen_rtol: float = 0.1,
    q_glassy: float = 0.5,
    growth_min: float = 0.0,
    plateau_rtol: float = 0.1,
) -> np.ndarray:
    """Label each replica ``"divergent" | "ordered" | "glassy" | "paramagnetic" | "unresolved"``.

    Inputs broadcast over any leading axes (e.g. (grid point, replica)): ``test_loss``,
    ``loss0`` (the test loss at t = 0), ``q`` and ``finite`` have shape (...); the spectra of
    X = W Wᵀ ``spectrum_t``, ``spectrum_0`` have shape (..., K) in any order;
    ``teacher_spectrum`` (K,) or (..., K) are the teacher's squared singular values (None:
    skip the spectral test of the ordered phase).

    Rules, the first that applies wins (this is the order of precedence):

    1. divergent    ``finite`` is False, or the final loss, spectrum or q is not finite.
    2. ordered      converged: test_loss ≤ converged_ratio·loss0, and the spectrum matches
                    the teacher: max_k |x_k − x*_k| ≤ teacher_rtol·max_k x*_k over the
                    ``teacher_levels`` largest levels (all when None), both sorted.
                    With ``teacher_approach`` set, the spectral test is instead that this
                    distance has shrunk: err(t) ≤ teacher_approach·err(0) (for runs too short
                    to reach the teacher).
    3. glassy       frozen spectrum: both extreme levels within ``frozen_rtol`` of their
                    initial values, |x_max(t)/x_max(0) − 1| ≤ frozen_rtol (same for x_min),
                    and a high overlap with the initial features, q > q_glassy.
    4. paramagnetic growing spectrum: ln(ū(t)/ū(0)) > growth_min (λ > 0 for the default),
                    ū the mean level spacing; and a plateaued loss: not converged (as in 2)
                    and, when ``loss_prev`` (the loss at an earlier snapshot) is given, not
                    falling by more than plateau_rtol: test_loss ≥ (1 − plateau_rtol)·loss_prev.
    5. unresolved   none of the above.
    """
    test_loss = np.asarray(test_loss, dtype=float)
    loss0 = np.asarray(loss0, dtype=float)
    q = np.asarray(q, dtype=float)
    x_t = _ascending(spectrum_t)
    x_0 = _ascending(spectrum_0)
    shape = np.broadcast_shapes(test_loss.shape, loss0.shape, q.shape, x_t.shape[:-1], x_0.shape[:-1])

    ok = np.isfinite(test_loss) & np.isfinite(q) & np.all(np.isfinite(x_t), axis=-1)
    if finite is not None:
        ok = ok & np.asarray(finite, dtype=bool)
    divergent = ~ok

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        converged = test_loss <= converged_ratio * loss0
        if teacher_spectrum is None:
            matches = np.ones(shape, dtype=bool)
        else:
            x_star = _ascending(teacher_spectrum)
            top = slice(-(x_star.shape[-1] if teacher_levels is None else teacher_levels), None)
            err = np.max(np.abs(x_t[..., top] - x_star[..., top]), axis=-1)
            if teacher_approach is None:
                matches = err <= teacher_rtol * np.max(x_star, axis=-1)
            else:
                err0 = np.max(np.abs(x_0[..., top] - x_star[..., top]), axis=-1)
                matches = err <= teacher_approach * err0
        ordered = converged & matches

        frozen = (np.abs(x_t[..., 0] / x_0[..., 0] - 1.0) <= frozen_rtol) & (
            np.abs(x_t[..., -1] / x_0[..., -1] - 1.0) <= frozen_rtol
        )
        glassy = frozen & (q > q_glassy)

        growing = np.log(_mean_spacing(x_t) / _mean_spacing(x_0)) > growth_min
        plateau = ~converged
        if loss_prev is not None:
            plateau = plateau & (test_loss >= (1.0 - plateau_rtol) * np.asarray(loss_prev, dtype=float))
        paramagnetic = growing & plateau

    # np.select takes the first true condition: the list order is the precedence
    conditions = [np.broadcast_to(c, shape) for c in (divergent, ordered, glassy, paramagnetic)]
    return np.select(conditions, LABELS[:4], default=UNRESOLVED).astype(_LABEL_DTYPE)


def classify_trajectories(
    test_loss,
    spectra,
    q,
    teacher_spectrum=None,
    *,
    finite=None,
    plateau_window: float = 0.5,
    **thresholds,
) -> np.ndarray:
    """``classify_observables`` on whole trajectories, snapshot axis last among the scalars.

    ``test_loss`` and ``q``: (..., S); ``spectra``: (..., S, K). Uses snapshot 0 as the
    initial state, the last snapshot as the final one, and as ``loss_prev`` the snapshot a
    fraction ``plateau_window`` of the run before the end. A replica is divergent if any
    snapshot is non-finite (or ``finite`` (...) is False).
    """
    test_loss = np.asarray(test_loss, dtype=float)
    spectra = np.asarray(spectra, dtype=float)
    q = np.asarray(q, dtype=float)
    n_snap = test_loss.shape[-1]
    prev = int(round((n_snap - 1) * (1.0 - plateau_window)))
    ok = (
        np.all(np.isfinite(test_loss), axis=-1)
        & np.all(np.isfinite(q), axis=-1)
        & np.all(np.isfinite(spectra), axis=(-2, -1))
    )
    if finite is not None:
        ok = ok & np.asarray(finite, dtype=bool)
    return classify_observables(
        test_loss[..., -1],
        test_loss[..., 0],
        spectra[..., -1, :],
        spectra[..., 0, :],
        q[..., -1],
        ok,
        teacher_spectrum,
        loss_prev=test_loss[..., prev],
        **thresholds,
    )


def drift_fraction(passes, *, axis: int = 1, valid=None) -> np.ndarray:
    """Fraction of replicas passing the drift criterion, reduced over the replica ``axis``.

    A replica whose K_t or V_t is NaN fails the comparison and counts as not passing. With
    ``valid`` (same shape, bool) only valid replicas are counted (NaN where none is).
    """
    passes = np.asarray(passes, dtype=bool)
    if valid is None:
        return passes.mean(axis=axis)
    valid = np.asarray(valid, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (passes & valid).sum(axis=axis) / valid.sum(axis=axis)


def phase_grid(labels, grid_shape=None) -> dict:
    """Majority phase and per-label fractions per grid point.

    ``labels``: (P, R) strings (grid point, replica). Returns ``{"majority": (grid_shape)
    strings, "fractions": {label: (grid_shape) floats}}`` over all of ``LABELS``; ties go to
    the label listed first in ``LABELS``.
    """
    labels = np.asarray(labels)
    n_points = labels.shape[0]
    grid_shape = (n_points,) if grid_shape is None else tuple(grid_shape)
    fractions = np.stack([(labels == name).mean(axis=1) for name in LABELS])  # (len(LABELS), P)
    majority = np.asarray(LABELS)[np.argmax(fractions, axis=0)]  # argmax: first of ties
    return {
        "majority": majority.astype(_LABEL_DTYPE).reshape(grid_shape),
        "fractions": {name: fractions[i].reshape(grid_shape) for i, name in enumerate(LABELS)},
    }


def compare_classifiers(labels_obs, fraction_drift, levels=DRIFT_LEVELS, coords=None) -> list[dict]:
    """One row per grid point comparing the observable labels with the drift fraction.

    ``labels_obs`` (P, R); ``fraction_drift`` (P,) or any shape with P entries; ``coords``
    optional ``{name: (P,) values}`` (e.g. T, σ_W) copied into the rows. Each row holds the
    point index, the coordinates, the majority label, the fraction of every label
    (``f_<label>``), ``drift_fraction``, ``drift_level`` (the highest level reached, 0.0 if
    none) and for each level ``agree@<level>``: whether "drift fraction ≥ level" equals
    "majority is ordered". The drift criterion splits ordered from paramagnetic only, so
    ``agree@…`` is None where the majority is anything else.
    """
    grid = phase_grid(labels_obs)
    frac = np.asarray(fraction_drift, dtype=float).reshape(-1)
    rows = []
    for i in range(frac.size):
        majority = str(grid["majority"][i])
        row = {"point": i}
        if coords is not None:
            row.update({name: float(np.asarray(v).reshape(-1)[i]) for name, v in coords.items()})
        row["majority"] = majority
        row.update({f"f_{name}": float(grid["fractions"][name][i]) for name in LABELS})
        row["drift_fraction"] = float(frac[i])
        reached = [lv for lv in levels if frac[i] >= lv]
        row["drift_level"] = float(max(reached)) if reached else 0.0
        for lv in levels:
            if majority in ("ordered", "paramagnetic"):
                row[f"agree@{lv}"] = bool((frac[i] >= lv) == (majority == "ordered"))
            else:
                row[f"agree@{lv}"] = None
        rows.append(row)
    return rows


def format_comparison(rows: list[dict]) -> str:
    """Fixed-width text table of ``compare_classifiers`` rows, with agreement rates per level."""
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    table = [keys] + [[cell(r[k]) for k in keys] for r in rows]
    widths = [max(len(line[j]) for line in table) for j in range(len(keys))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in table]
    for k in keys:
        if k.startswith("agree@"):
            judged = [r[k] for r in rows if r[k] is not None]
            rate = f"{np.mean(judged):.3f} of {len(judged)}" if judged else "n/a"
            lines.append(f"{k}: {rate}")
    return "\n".join(lines)


def critical_temperature(T_values, fractions, level: float = DRIFT_LEVELS[0]):
    """Temperature where the drift fraction first falls below ``level`` as T grows (fixed σ_W).

    ``T_values`` (nT,), any order; ``fractions`` (..., nT). At the first i (T ascending) with
    f_i ≥ level > f_{i+1}, interpolate the fraction linearly in log T:

        ln T_c = ln T_i + (f_i − level)/(f_i − f_{i+1}) · (ln T_{i+1} − ln T_i)

    NaN where there is no crossing (all above, all below, or NaN fractions at the crossing).
    Returns a float for 1-D ``fractions``, else an array of the leading shape.
    """
    T = np.asarray(T_values, dtype=float)
    order = np.argsort(T)
    logT = np.log(T[order])
    f = np.asarray(fractions, dtype=float)[..., order]
    flat = f.reshape(-1, T.size)
    out = np.full(flat.shape[0], np.nan)
    for n, row in enumerate(flat):
        drops = np.nonzero((row[:-1] >= level) & (row[1:] < level))[0]
        if drops.size:
            i = drops[0]
            w = (row[i] - level) / (row[i] - row[i + 1])
            out[n] = np.exp(logT[i] + w * (logT[i + 1] - logT[i]))
    return float(out[0]) if f.ndim == 1 else out.reshape(f.shape[:-1])


def critical_temperature_error(T_values, passes, valid=None, level: float = DRIFT_LEVELS[0],
                               n_boot: int = TC_BOOTSTRAP, seed: int = 0) -> dict:
    """T_c of one σ_W column with its error from the spread over replicas.

    ``passes`` (nT, R): drift verdicts per temperature and replica; ``valid`` (nT, R) the
    replicas that count (default all). T_c is `critical_temperature` of the drift fractions.
    Its error is the bootstrap over replicas: ``n_boot`` resamples of the R replica indices
    with replacement, the same indices at every T (right whether or not a replica index
    shares its disorder across points), each giving a fraction curve and its crossing.

    Returns {"T_c", "err" (standard deviation of the resampled T_c), "lo", "hi" (their 16th
    and 84th percentiles), "no_crossing" (share of resamples without a crossing, left out of
    err/lo/hi), "replicas", "n_boot", "level"}; NaN where there is no crossing.
    """
    passes = np.asarray(passes, dtype=bool)
    valid = np.ones_like(passes) if valid is None else np.asarray(valid, dtype=bool)
    n_rep = passes.shape[1]
    hits, counts = (passes & valid).astype(float), valid.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_c = critical_temperature(T_values, hits.sum(axis=1) / counts.sum(axis=1), level)
        # multinomial counts: how often each replica is drawn in each resample
        draws = np.random.default_rng(seed).multinomial(n_rep, np.full(n_rep, 1.0 / n_rep), size=n_boot)
        boot = critical_temperature(T_values, (draws @ hits.T) / (draws @ counts.T), level)
    ok = boot[np.isfinite(boot)]
    spread = ok.size > 1 and np.isfinite(t_c)
    return {
        "T_c": t_c,
        "err": float(np.std(ok, ddof=1)) if spread else float("nan"),
        "lo": float(np.percentile(ok, 16)) if spread else float("nan"),
        "hi": float(np.percentile(ok, 84)) if spread else float("nan"),
        "no_crossing": float(1.0 - ok.size / n_boot),
        "replicas": int(n_rep), "n_boot": int(n_boot), "level": float(level),
    }


def weakest_disorder_tc(summary, level: float = DRIFT_LEVELS[0], n_boot: int = TC_BOOTSTRAP, seed: int = 0) -> dict:
    """{variant: `critical_temperature_error`} along the smallest-σ_W column of an `assemble`
    summary, for every drift-criterion variant it holds; each entry also names its ``init_std``."""
    sw = summary["init_std"]
    sel = np.nonzero(sw == sw.min())[0]
    return {
        name: {**critical_temperature_error(summary["T"][sel], passes[sel], summary["finite"][sel], level, n_boot, seed),
               "init_std": float(sw.min())}
        for name, passes in summary["drift_passes"].items()
    }


# ---------------------------------------------------------------------------------------
# Assembly from a results store of the multilayer model
# ---------------------------------------------------------------------------------------
def coulomb_term(noise) -> np.ndarray:
    """V_t of noise matrices ``(..., K, K)`` as stored (the ascending eigenbasis), in float64:
    the formula of `dysonbm.observables.drift_coulomb_from_moments`, written in the published
    descending basis (1-based Ṽ_{K,K−k} is ``[K−1, K−1−k]`` there)."""
    v = np.asarray(noise, dtype=float)[..., ::-1, ::-1]
    K = v.shape[-1]
    k = np.arange(1, K - 1)
    return 2.0 * v[..., 0, K - 1] / (K - 1) + np.sum((v[..., 0, k] + v[..., K - 1, K - 1 - k]) / k, axis=-1)


def teacher_gram(results) -> np.ndarray:
    """Eigenvalues of X* = W* W*ᵀ of each replica's teacher, ascending: ``(P, R, K)``.

    Read from the stored problem (``problem_teacher``), whatever its granularity: a teacher
    per replica (the published protocol), per grid point or one for the run.
    """
    w = np.asarray(results["problem_teacher"], dtype=float)
    gram = np.linalg.eigvalsh(w @ np.swapaxes(w, -1, -2))
    if results.axes["problem_teacher"][:2] == ("point",):
        gram = gram[:, None]
    n_points, replicas = results.diverged.shape
    return np.broadcast_to(gram, (n_points, replicas, gram.shape[-1]))


def spacing_growth(mean_spacing, steps) -> np.ndarray:
    """Per replica λ = ln(ū(t)/ū(0))/t at the last snapshot, t in steps; ``mean_spacing`` (..., S).

    The phase diagram shows ⟨λ⟩, the mean over a point's finite replicas.
    """
    u = np.asarray(mean_spacing, dtype=float)
    t = float(np.asarray(steps)[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(u[..., -1] / u[..., 0]) / t


def drift_passes(K_t, V_t, T, init_std, K: int, L: int, *, rule: str = "majority", window: float = 0.5) -> np.ndarray:
    """Per replica verdict of the drift criterion, from trajectories ``K_t``, ``V_t`` (..., S).

    The criterion (``observables.drift_dominated``) is evaluated

    - ``rule="final"``: at the last snapshot alone, the final weights (the published rule);
    - ``rule="majority"``: at every snapshot after t = 0 in the last ``window`` of the run; a
      replica passes when it holds at a majority of them, so one noisy snapshot does not flip it.

    ``T`` and ``init_std`` broadcast against (...).
    """
    from dysonbm.observables import drift_dominated

    if rule not in DRIFT_RULES:
        raise ValueError(f"rule = {rule!r}: one of {', '.join(DRIFT_RULES)}")
    K_t = np.asarray(K_t, dtype=float)
    V_t = np.asarray(V_t, dtype=float)
    S = K_t.shape[-1]
    first = S - 1 if rule == "final" else max(1, int(round((S - 1) * (1.0 - window))))
    T = np.asarray(T, dtype=float)[..., None]
    init_std = np.asarray(init_std, dtype=float)[..., None]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ok = drift_dominated(K_t[..., first:], V_t[..., first:], T, init_std, K, L)
    return ok.mean(axis=-1) > 0.5


def _point_mean(values, ok):
    """Mean over a point's valid replicas (NaN where none): (P, R) -> (P,)."""
    values = np.where(ok, np.asarray(values, dtype=float), np.nan)
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmean(values, axis=1)


def _point_median(values, ok):
    values = np.where(ok, np.asarray(values, dtype=float), np.nan)
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmedian(values, axis=1)


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings for all-divergent points."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def assemble(results, teacher_spectrum=None, **thresholds) -> dict:
    """Per-point summary of a multilayer sweep: coordinates, observables, both classifiers.

    Returns a dict of arrays with one entry per grid point ``(P,)`` unless noted:
    ``lr, batch_size, init_std, T``; ``loss0, loss`` (median test loss at t = 0 and at the
    end over finite replicas), ``q, hs, lam`` (means), ``divergent`` (fraction),
    ``drift_fraction`` (among finite replicas), ``labels`` (P, R), ``majority``,
    ``fractions`` ({label: (P,)}), ``passes`` (P, R), ``finite`` (P, R), ``teacher`` (K,).
    ``thresholds`` go to `classify_trajectories`.

    Drift criterion: ``drift_passes`` and ``drift_fractions`` hold every variant of
    ``DRIFT_VARIANTS`` whose V_t the results carry ({name: (P, R)} and {name: (P,)});
    ``drift_rule`` names the one behind ``passes`` and ``drift_fraction``: the published
    "final/paper" when ``V_t_paper`` was recorded, else "final/sde". ``paper`` holds the
    observables in the published units (`paper_units`, from ``n_test`` and
    ``steps_per_epoch`` (P,)); ``T_c`` the crossing of the drift
    fraction at 0.68 along the smallest σ_W with its bootstrap error (`weakest_disorder_tc`).
    """
    lr, bs, sw = results.hp("lr"), results.hp("batch_size").astype(float), results.hp("init_std")
    T_r = temperature(lr, bs)[:, None]
    gram = np.asarray(results["gram"], dtype=float)
    K = gram.shape[-1]
    L = results.model().hidden
    if teacher_spectrum is None:
        teacher_spectrum = teacher_gram(results)
    finite = ~np.asarray(results.diverged, dtype=bool)
    finite &= np.all(np.isfinite(results["test_loss"]), axis=-1) & np.all(np.isfinite(gram), axis=(-2, -1))
    labels = classify_trajectories(
        results["test_loss"], gram, results["q"], teacher_spectrum, finite=finite, **thresholds
    )
    coulomb = {"V_t": results["V_t"]}
    if "pair_noise_paper" in results:
        coulomb["V_t_paper"] = coulomb_term(results["pair_noise_paper"])
    elif "V_t_paper" in results:
        coulomb["V_t_paper"] = results["V_t_paper"]
    variants = {
        name: drift_passes(results["K_t"], coulomb[v], T_r, sw[:, None], K, L, rule=rule)
        for name, (rule, v, _) in DRIFT_VARIANTS.items() if v in coulomb
    }
    rule = next(iter(variants))  # the published variant when V_t_paper was recorded
    passes = variants[rule]
    grid = phase_grid(labels)
    lam = spacing_growth(results["mean_spacing"], results.steps)
    summary = {
        "lr": lr, "batch_size": bs, "init_std": sw, "T": temperature(lr, bs),
        "loss0": _point_median(results["test_loss"][..., 0], finite),
        "loss": _point_median(results["test_loss"][..., -1], finite),
        "q": _point_mean(results["q"][..., -1], finite),
        "hs": _point_mean(results["hs"][..., -1], finite),
        "lam": _point_mean(lam, finite),
        "divergent": 1.0 - finite.mean(axis=1),
        "drift_fraction": drift_fraction(passes, valid=finite),
        "drift_rule": rule, "drift_passes": variants,
        "drift_fractions": {name: drift_fraction(p, valid=finite) for name, p in variants.items()},
        "labels": labels, "majority": grid["majority"], "fractions": grid["fractions"],
        "passes": passes, "finite": finite, "teacher": np.asarray(teacher_spectrum, dtype=float),
    }
    data = results.config["data"]
    summary["n_test"] = int(data["n_test"])
    summary["steps_per_epoch"] = steps_per_epoch(data, bs)
    summary["paper"] = paper_units(summary, summary["n_test"], summary["steps_per_epoch"])
    summary["T_c"] = weakest_disorder_tc(summary)
    return summary


def steps_per_epoch(data: dict, batch_size) -> np.ndarray:
    """SGD steps per pass over a replica's dataset: ``batches_per_epoch``, or ``n_data/|B|``
    (``data`` the config's [data] table, ``batch_size`` per point)."""
    bs = np.asarray(batch_size, dtype=float)
    if data.get("batches_per_epoch"):
        return np.full(bs.shape, float(data["batches_per_epoch"]))
    return float(data.get("n_data", 0)) / bs


def paper_units(summary, n_test, epoch_steps) -> dict:
    """The per-point observables of ``summary`` in the published units ({name: (P,)}):

        loss  mean (y − ŷ)², without the ½ of the training loss: 2 × ours
        hs    Σ_nk ĥ_nk ŝ_nk / n_test: ours / n_test
        lam   λ per epoch: ours (per step) × steps per epoch
    """
    return {
        "loss": 2.0 * summary["loss"],
        "hs": summary["hs"] / float(n_test),
        "lam": summary["lam"] * np.asarray(epoch_steps, dtype=float),
    }


def to_grid(values, rows, cols):
    """Arrange per-point ``values`` (P,) on the (rows × cols) grid of their coordinates.

    ``rows``, ``cols`` (P,) are the coordinates of each point (e.g. T and σ_W). Returns
    ``(row_values, col_values, grid)`` with sorted unique coordinates and NaN (or "" for
    strings) where a combination is absent.
    """
    values = np.asarray(values)
    r_u, c_u = np.unique(rows), np.unique(cols)
    fill = "" if values.dtype.kind in "US" else np.nan
    grid = np.full((r_u.size, c_u.size), fill, dtype=values.dtype if values.dtype.kind in "US" else float)
    for v, r, c in zip(values, rows, cols):
        grid[np.searchsorted(r_u, r), np.searchsorted(c_u, c)] = v
    return r_u, c_u, grid
