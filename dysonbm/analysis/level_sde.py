"""Langevin cross-check of the SGD phase diagram (SCIENCE.md §3.3): the level SDE of X = W Wᵀ.

The levels x_1 ≤ … ≤ x_K of X = W Wᵀ obey, in the SGD time τ = α·steps at T = α/|B| and to
leading order in α,

    dx_i = [ K̄_ii + α S_ii + T Σ_{j≠i} Ṽ_ij/(x_i − x_j) + T C̃_ii ] dτ + sqrt(T Ṽ_ii) dB_i ,

with K̄_ii the drift of the mean step on the training data and α S_ii the O(α) part of the
discrete step (`dysonbm.observables.data_step_terms`), Ṽ the variance over samples of the
projected increment Uᵀ dX_n U (`dysonbm.observables.projected_increment_moments`) and C̃_ii
the Itô term of X = W Wᵀ (`dysonbm.observables.level_terms`). All are measured from the
network at SGD snapshots; the multilayer model records them with the drift's slope γ_i in the
level, on the replica's training data: the test set's mean gradient has an error of
O(1/sqrt(n_test)) against a drift that vanishes as training converges, an error that does
not average out over the intervals of one replica. The SDE itself, with fixed coefficients,
is the kernel `dysonbm.sde.LevelSDE` (`dysonbm.sde.integrate_levels`); this module holds the
science around it:

- `cross_check`: at one grid point of a multilayer run, start from the SGD levels at each
  snapshot, integrate with that replica's coefficients over the interval to the next
  snapshot, and compare the predicted and the SGD motion of the levels (mean spacing,
  distance to the teacher's levels), labelling both by `regime`.

Levels are handled in ascending order: what is read from the results is sorted here, the
coefficients permuted with their levels, whatever order the store keeps.

The coefficients depend on W, not on the levels alone, so a prediction is only as good as
the coefficients stay valid over one interval: the intervals must be short compared with the
time over which K̃ and Ṽ change, which is why the reproduction uses a run with dense
snapshots for the cross-check. Off-diagonal noise correlations Cov(P_ii, P_jj) and the
terms beyond O(α) of the discrete SGD step are not part of the SDE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm.sde.conversions import temperature
from dysonbm.sde.weighted import LevelCoefficients, integrate_levels


# ---------------------------------------------------------------------------------------
# The cross-check: one-interval predictions along an SGD run
# ---------------------------------------------------------------------------------------
#: regime labels, in the order the rule of `regime` tests them
REGIMES = ("frozen", "convergence", "growth", "undetermined")

#: "nothing moves": every net log change within ln 1.1 (the 10 % of the glassy rule of
#: `phases.classify_observables`)
FROZEN_TOL = float(np.log(1.1))


def interval_inputs(results, point: int, *, first: int = 0, clip_stiffness: bool = True) -> dict:
    """Inputs of the one-interval predictions at grid point ``point`` of a multilayer run.

    For every replica r and snapshot interval k = first … S−2 (S snapshots): the SGD levels
    at both ends, ``x_start`` and ``x_end`` (R, n, K), ascending, and the coefficients measured
    at the start as `dysonbm.sde.LevelCoefficients` (permuted with the levels): the
    multilayer model's ``sde_*`` observables, measured on the training data, or where a store
    lacks them the test set's ``level_drift``, ``pair_noise`` (and ``level_ito``,
    ``level_stiffness`` of older stores). The drift D_i = K̄_ii + α S_ii is linearised about
    x(t_k): D_i(x) = D_i(t_k) − γ_i (x_i − x_i(t_k)). Also ``T`` = α/|B|, ``dtau`` =
    α·(steps per interval), ``steps`` (n + 1,), ``finite`` (R,): replicas finite throughout,
    and at the start of each interval ``drift`` D and ``velocity`` v (R, n, K), `velocity`'s
    deterministic velocity.

    With ``clip_stiffness`` only restoring slopes (γ_i > 0) are kept: an unstable slope,
    exponentiated over an interval many times 1/|γ_i|, would extrapolate the drift far
    outside the neighbourhood where it was measured. Stores without ``level_ito`` or
    ``level_stiffness`` get zeros for them.
    """
    sl = slice(first, None)

    def get(name):
        return np.asarray(results[name][point], dtype=float)[:, sl]

    lr = float(results.hp("lr")[point])
    bs = float(results.hp("batch_size")[point])
    x = get("gram")
    if "sde_drift" in results:
        drift, pair = get("sde_drift") + lr * get("sde_step"), get("sde_noise")
        ito, gamma = get("sde_ito"), get("sde_stiffness")
    else:  # the published criterion's test-set coefficients
        drift, pair = get("level_drift"), get("pair_noise")
        ito = get("level_ito") if "level_ito" in results else np.zeros_like(drift)
        gamma = get("level_stiffness") if "level_stiffness" in results else np.zeros_like(drift)
    # ascending, each coefficient moved with its level
    order = np.argsort(x, axis=-1)
    x, drift, ito, gamma = (np.take_along_axis(a, order, axis=-1) for a in (x, drift, ito, gamma))
    pair = np.take_along_axis(np.take_along_axis(pair, order[..., :, None], axis=-2), order[..., None, :], axis=-1)
    if clip_stiffness:
        gamma = np.maximum(gamma, 0.0)
    steps = np.asarray(results.steps)[sl]
    every = np.diff(steps)
    if every.size == 0 or np.any(every != every[0]):
        raise ValueError("the cross-check needs at least two equally spaced snapshots")
    h = slice(None, -1)
    T, dtau = temperature(lr, bs), lr * float(every[0])
    x0, g = x[:, h], gamma[:, h]
    coef = LevelCoefficients(drift[:, h] + g * x0, pair[:, h], ito[:, h], g)
    v = velocity(x0, drift[:, h], pair[:, h], ito[:, h], T)
    finite = ~np.asarray(results.diverged[point], dtype=bool) & np.all(np.isfinite(x), axis=(1, 2))
    for c in coef:
        finite &= np.all(np.isfinite(c.reshape(c.shape[0], -1)), axis=1)
    return {"x_start": x0, "x_end": x[:, 1:], "coef": coef, "drift": drift[:, h], "velocity": v, "T": T, "dtau": dtau,
            "lr": lr, "batch_size": bs, "steps": steps, "finite": finite}


def velocity(x, drift, pair, ito, T: float):
    """The deterministic velocity of every level at x (ascending, any leading axes): the
    drift, the Itô term T C̃_ii and the Coulomb push T Σ_{j≠i} Ṽ_ij/(x_i − x_j)."""
    x = np.asarray(x, dtype=float)
    gap = x[..., :, None] - x[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        push = np.where(gap != 0, np.asarray(pair, dtype=float) / np.where(gap != 0, gap, 1.0), 0.0)
    return np.asarray(drift, dtype=float) + T * np.asarray(ito, dtype=float) + T * push.sum(axis=-1)


def predict_intervals(key, x_start, coef: LevelCoefficients, T: float, dtau: float, *, draws: int = 1,
                      courant: float = 0.1, max_steps: int = 20_000):
    """x̂(t_{k+1}) for every (replica, interval): `dysonbm.sde.integrate_levels` from the SGD
    levels x(t_k) (ascending) with the coefficients of t_k held fixed over Δτ; ``draws``
    independent noise paths each.

    ``x_start`` (R, n, K), ``coef`` with leading axes (R, n). Returns ``(x̂, info)``,
    x̂ (draws, R, n, K) ascending and info's ``steps``/``forced`` (draws, R, n).
    """
    x_start = np.asarray(x_start, dtype=float)
    lead = x_start.shape[:2]
    m = draws * lead[0] * lead[1]

    def flat(a):
        a = np.broadcast_to(np.asarray(a, dtype=float), (draws,) + np.shape(a))
        return jnp.asarray(a.reshape((m,) + a.shape[3:]), jnp.float32)

    x, info = integrate_levels(jax.random.split(key, m), flat(x_start), LevelCoefficients(*(flat(c) for c in coef)),
                               jnp.full((m,), T, jnp.float32), jnp.full((m,), dtau, jnp.float32),
                               courant=courant, max_steps=max_steps)
    shape = (draws,) + lead
    return np.asarray(x, dtype=float).reshape(shape + x_start.shape[2:]), {k: np.asarray(v).reshape(shape) for k, v in info.items()}


def log_changes(x_start, x_end, teacher) -> dict:
    """Per-interval log changes of what tells the regimes apart (any leading shape; each side
    and the teacher sorted ascending here): ``u`` the mean level spacing ū = (x_K − x_1)/(K − 1),
    ``d`` the distance to the teacher's levels max_i |x_(i) − x*_(i)| (level by level in
    ascending order), ``top`` the largest level."""
    x0 = np.sort(np.asarray(x_start, dtype=float), axis=-1)
    x1 = np.sort(np.asarray(x_end, dtype=float), axis=-1)
    t = np.sort(np.asarray(teacher, dtype=float), axis=-1)

    def parts(x):
        return {"u": (x[..., -1] - x[..., 0]) / (x.shape[-1] - 1), "d": np.max(np.abs(x - t), axis=-1), "top": x[..., -1]}

    a, b = parts(x0), parts(x1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {k: np.log(b[k] / a[k]) for k in a}


def regime(net: dict, se: dict | None = None, *, z: float = 2.0, frozen_tol: float = FROZEN_TOL) -> str:
    """``"frozen" | "convergence" | "growth" | "undetermined"`` from the net log changes over a
    window of intervals (``net[q]`` = mean over replicas of Σ_k ln q(t_{k+1})/q(t_k) for q in
    u, d, top, as from `log_changes`; ``se`` their standard errors over replicas):

    1. frozen        nothing moves: |net q| ≤ frozen_tol for u, d and top;
    2. convergence   the levels approach the teacher's: net d < 0;
    3. growth        they leave it while spreading: net d > 0 and net u > 0;
    4. undetermined  otherwise, or where the sign of net d (or of net u for growth) is within
                     z standard errors of 0.

    Only the largest level and the spacing enter: the smallest levels of X sit near 0, where
    a frozen noise amplitude (∝ x_K in truth) is a poor model over a long interval.
    """
    keys = ("u", "d", "top")
    if not all(np.isfinite(net[k]) for k in keys):
        return "undetermined"
    if max(abs(net[k]) for k in keys) <= frozen_tol:
        return "frozen"
    err = {k: 0.0 for k in keys} if se is None else se

    def sure(k):
        return abs(net[k]) > z * err[k]

    if net["d"] < 0 and sure("d"):
        return "convergence"
    if net["d"] > 0 and net["u"] > 0 and sure("d") and sure("u"):
        return "growth"
    return "undetermined"


def top_level_terms(x, drift, coef: LevelCoefficients, T: float, dtau: float) -> dict:
    """Medians over (replica, interval) of the terms of the largest level's SDE at the start of
    each interval (x ascending, ``drift`` D_i and ``coef`` indexed alike, as from
    `interval_inputs`): ``drift`` D_K, ``coulomb`` T Σ_j Ṽ_Kj/(x_K − x_j), ``ito`` T C̃_KK,
    ``noise`` sqrt(T Ṽ_KK/Δτ) (the noise as a velocity over one interval) and ``gamma_dtau``
    γ_K·Δτ (≫ 1: fluctuations of the level relax within the interval)."""
    gamma = np.asarray(coef.stiffness, dtype=float)
    pair = np.asarray(coef.pair, dtype=float)
    coulomb = velocity(x, np.zeros_like(drift), pair, np.zeros_like(drift), T)[..., -1]
    terms = {"drift": np.asarray(drift, dtype=float)[..., -1], "coulomb": coulomb,
             "ito": T * np.asarray(coef.ito, dtype=float)[..., -1],
             "noise": np.sqrt(T * np.maximum(pair[..., -1, -1], 0.0) / dtau), "gamma_dtau": gamma[..., -1] * dtau}
    return {k: float(np.nanmedian(v)) for k, v in terms.items()}


def top_velocity(x_start, x_end, v, dtau: float) -> dict:
    """SGD's mean velocity of the largest level, (x_K(t_{k+1}) − x_K(t_k))/Δτ, against the SDE's
    deterministic velocity ``v`` at the start of each interval (`velocity`: the noise has mean
    zero), both averaged over the intervals of each replica and then over replicas (levels
    ascending, leading axes (R, n), as from `interval_inputs`). Returns ``sgd``, ``sde`` and
    ``se``, the standard error over replicas of their difference: a test of the measured
    coefficients free of the noise's effect on the regime statistics."""
    x0 = np.asarray(x_start, dtype=float)
    sgd = (np.asarray(x_end, dtype=float)[..., -1] - x0[..., -1]) / dtau
    a, b = sgd.mean(axis=-1), np.asarray(v, dtype=float)[..., -1].mean(axis=-1)
    n = a.size
    se = float(np.std(a - b, ddof=1) / np.sqrt(n)) if n > 1 else np.inf
    return {"sgd": float(np.mean(a)), "sde": float(np.mean(b)), "se": se}


def cross_check(results, point: int, teacher, *, key=None, first: int = 0, draws: int = 2,
                courant: float = 0.1, max_steps: int = 20_000) -> dict:
    """SGD against the one-interval Langevin predictions at one grid point of a multilayer run.

    Over the intervals from snapshot ``first`` on, each side's net log changes
    Σ_k ln q(t_{k+1})/q(t_k) (q = ū, d, x_1; the Langevin side with x(t_{k+1}) replaced by
    x̂(t_{k+1}) and averaged over ``draws``) are averaged over the finite replicas (levels
    ascending on both sides, compared level by level in that order); ``regime``
    labels both. Returns a dict: the point's ``lr, batch_size, T, init_std``, the window
    (``steps``), ``replicas``, per side (``"sgd"``, ``"langevin"``) ``net`` and ``se`` dicts,
    ``lam`` = net ln ū per SGD step (the spacing growth rate of the phase diagram) and
    ``regime``; ``agree``; ``forced`` (the fraction of sub-steps at the budget floor);
    ``top_terms`` (`top_level_terms`); ``top_velocity`` (`top_velocity`); and for figures ``x_start``, ``x_end`` (R, n, K),
    ``x_hat`` (draws, R, n, K) and ``teacher`` (R, n, K), all ascending.
    """
    if key is None:
        key = jax.random.key(point)
    inp = interval_inputs(results, point, first=first)
    ok = inp["finite"]
    out = {"point": int(point), "lr": inp["lr"], "batch_size": inp["batch_size"], "T": inp["T"],
           "init_std": float(results.hp("init_std")[point]), "steps": (int(inp["steps"][0]), int(inp["steps"][-1])),
           "dtau": inp["dtau"], "intervals": int(inp["steps"].size - 1), "replicas": int(ok.sum())}
    if not ok.any():
        nan = {k: np.nan for k in ("u", "d", "top")}
        for side in ("sgd", "langevin"):
            out[side] = {"net": nan, "se": nan, "lam": np.nan, "regime": "undetermined"}
        return {**out, "agree": False, "forced": np.nan, "top_terms": {},
                "top_velocity": {"sgd": np.nan, "sde": np.nan, "se": np.nan}}
    x0, x1 = inp["x_start"][ok], inp["x_end"][ok]
    teacher = np.sort(np.asarray(teacher, dtype=float), axis=-1)
    if teacher.ndim == 2:  # one teacher per replica: (R, K) → (R_ok, 1, K) against (R_ok, n, K)
        teacher = teacher[ok][:, None]
    coef = LevelCoefficients(*(c[ok] for c in inp["coef"]))
    x_hat, info = predict_intervals(key, x0, coef, inp["T"], inp["dtau"], draws=draws, courant=courant,
                                    max_steps=max_steps)
    span = float(inp["steps"][-1] - inp["steps"][0])
    sides = {"sgd": log_changes(x0, x1, teacher),
             "langevin": {k: v.mean(axis=0) for k, v in log_changes(x0[None], x_hat, teacher).items()}}
    for side, ch in sides.items():
        per_replica = {k: np.sum(v, axis=1) for k, v in ch.items()}
        n = max(len(per_replica["u"]), 1)
        net = {k: float(np.mean(v)) for k, v in per_replica.items()}
        se = {k: float(np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else np.inf for k, v in per_replica.items()}
        out[side] = {"net": net, "se": se, "lam": net["u"] / span, "regime": regime(net, se)}
    out["agree"] = out["sgd"]["regime"] == out["langevin"]["regime"]
    out["forced"] = float(info["forced"].sum() / max(info["steps"].sum(), 1))
    out["top_terms"] = top_level_terms(x0, inp["drift"][ok], coef, inp["T"], inp["dtau"])
    out["top_velocity"] = top_velocity(x0, x1, inp["velocity"][ok], inp["dtau"])
    out.update(x_start=x0, x_end=x1, x_hat=x_hat, teacher=np.broadcast_to(teacher, x0.shape))
    return out
