"""Langevin cross-check of the SGD phase diagram (SCIENCE.md §3.3): the level SDE of X = W Wᵀ.

The levels x_1 ≥ … ≥ x_K of X = W Wᵀ obey, in the SGD time τ = α·steps at T = α/|B| and to
leading order in α,

    dx_i = [ K̃_ii + T Σ_{j≠i} Ṽ_ij/(x_i − x_j) + T C̃_ii ] dτ + sqrt(T Ṽ_ii) dB_i ,

with K̃, Ṽ the mean and variance over samples of the projected increment Uᵀ dX_n U
(`dysonbm.observables.projected_increment_moments`) and C̃_ii the Itô term of X = W Wᵀ
(`dysonbm.observables.level_terms`). All are measured from the network at SGD snapshots; the
multilayer model records them with the drift's slope γ_i in the level.

- `integrate`: the SDE with fixed coefficients, batched over replicas (jit + vmap), with a
  per-replica step control that keeps the levels ordered and ≥ 0 without softening the
  repulsion;
- `cross_check`: at one grid point of a multilayer run, start from the SGD levels at each
  snapshot, integrate with that replica's coefficients over the interval to the next
  snapshot, and compare the predicted and the SGD motion of the levels (mean spacing,
  distance to the teacher's levels), labelling both by `regime`.

The coefficients depend on W, not on the levels alone, so a prediction is only as good as
the coefficients stay valid over one interval: the intervals must be short compared with the
time over which K̃ and Ṽ change, which is why the reproduction uses a run with dense
snapshots for the cross-check. Off-diagonal noise correlations Cov(P_ii, P_jj) and the
O(α) terms of the discrete SGD step are not part of the SDE.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dysonbm.sde.conversions import temperature


Array = jax.Array


class Coefficients(NamedTuple):
    """Coefficients of the level SDE, held fixed during `integrate`; leading axes free (e.g. R).

    drift      a_i (…, K): the drift is a_i − γ_i x_i (a_i = K̃_ii when γ = 0; a drift
               linearised about x(t) has a_i = K̃_ii(t) + γ_i x_i(t))
    pair       Ṽ_ij (…, K, K): Coulomb weights off the diagonal, noise variance T Ṽ_ii on it
    ito        C̃_ii (…, K), the Itô term of X = W Wᵀ (the SDE multiplies it by T)
    stiffness  γ_i (…, K), the drift's slope −∂K̃_ii/∂x_i (> 0: restoring)
    """

    drift: Array
    pair: Array
    ito: Array
    stiffness: Array


def coefficients(drift, pair, ito=None, stiffness=None) -> Coefficients:
    """`Coefficients` with the optional terms set to 0."""
    drift = jnp.asarray(drift)
    zeros = jnp.zeros_like(drift)
    return Coefficients(
        drift, jnp.asarray(pair, drift.dtype),
        zeros if ito is None else jnp.asarray(ito, drift.dtype),
        zeros if stiffness is None else jnp.broadcast_to(jnp.asarray(stiffness, drift.dtype), drift.shape),
    )


# ---------------------------------------------------------------------------------------
# The integrator
# ---------------------------------------------------------------------------------------
def _second_neighbour_distance(x: Array) -> Array:
    """Distance of each level (descending) to the levels two places away, ``(K,)`` (inf for
    none): the scale that the explicit part of a step must resolve once the nearest-neighbour
    repulsion is implicit. It does not vanish when one pair of levels collides."""
    d2 = x[:-2] - x[2:]
    big = jnp.full((2,), jnp.inf, x.dtype)
    return jnp.minimum(jnp.concatenate([big, d2]), jnp.concatenate([d2, big]))


def _coulomb(x: Array, weights: Array, mask: Array) -> Array:
    """Σ_j weights_ij/(x_i − x_j) over the pairs in ``mask``; an exactly degenerate pair (a
    measure-zero event) contributes 0 for that step instead of an infinite force."""
    d = x[:, None] - x[None, :]
    use = mask & (d != 0)
    return jnp.sum(jnp.where(use, weights / jnp.where(use, d, 1.0), 0.0), axis=1)


def _masks(k: int):
    i = jnp.arange(k)
    sep = jnp.abs(i[:, None] - i[None, :])
    return sep >= 1, sep >= 2  # all pairs, far pairs (not nearest neighbours)


def level_velocity(x: Array, coef: Coefficients, T) -> Array:
    """Deterministic part of the level SDE of one replica (levels descending):
    K̃_ii − γ_i x_i + T Σ_{j≠i} Ṽ_ij/(x_i − x_j) + T C̃_ii."""
    every, _ = _masks(x.shape[0])
    return coef.drift - coef.stiffness * x + T * (_coulomb(x, coef.pair, every) + coef.ito)


def _smooth_force(x, coef, T, far):
    """The explicit force of a step: `level_velocity` without the linear restoring term
    −γ_i x_i (integrated exactly) and without the nearest-neighbour repulsion (`_bonds`)."""
    return coef.drift + T * (_coulomb(x, coef.pair, far) + coef.ito)


def _relax(rate, h):
    """(1 − e^{−rate·h})/rate, → h as rate → 0: the weight of a constant force over a step
    of an Ornstein–Uhlenbeck relaxation at ``rate`` (any sign)."""
    small = jnp.abs(rate * h) < 1e-6
    safe = jnp.where(small, 1.0, rate)
    return jnp.where(small, h, -jnp.expm1(-safe * h) / safe)


def _bonds(x: Array, c: Array, h, parity: int) -> Array:
    """Nearest-neighbour repulsion of the bonds (b, b+1) with b ≡ parity (mod 2), which share
    no level, over a time h by the implicit midpoint rule.

    For the pair force ±c/(x_b − x_{b+1}) (c = T Ṽ_b,b+1) the rule keeps the centre and sets
    the gap to g' = sqrt(g² + 4 c h): exactly the mean growth E[g²] of the pair SDE, and
    positive whatever g was, so the pair stays ordered (a pair the noise crossed, g < 0,
    is reflected)."""
    b = jnp.arange(parity, x.shape[0] - 1, 2)
    top, bot = x[b], x[b + 1]
    centre = 0.5 * (top + bot)
    half = 0.5 * jnp.sqrt((top - bot) ** 2 + 4.0 * c[b] * h)
    return x.at[b].set(centre + half).at[b + 1].set(centre - half)


def _substep_size(x, move, sigma2, remaining, n_left, courant, resolve):
    """The step of `integrate`: the largest h ≤ remaining with |move_i|·h ≤ c·ℓ_i and
    T Ṽ_ii h ≤ (c·ℓ_i)², ℓ_i = max(d2_i, resolve·ū) (d2: `_second_neighbour_distance`, ū the
    mean spacing; ``move`` the explicit velocity), but at least remaining/n_left so the
    interval ends within the step budget. Returns ``(h, forced)``; forced: the floor overrode
    the control."""
    spacing = (x[0] - x[-1]) / (x.shape[0] - 1)
    scale = courant * jnp.maximum(_second_neighbour_distance(x), resolve * spacing)
    h_move = jnp.min(jnp.where(jnp.abs(move) > 0, scale / jnp.abs(move), jnp.inf))
    h_noise = jnp.min(jnp.where(sigma2 > 0, scale * scale / sigma2, jnp.inf))
    controlled = jnp.minimum(h_move, h_noise)
    floor = remaining / n_left
    h = jnp.minimum(jnp.maximum(controlled, floor), remaining)
    return h, controlled < floor


@partial(jax.jit, static_argnames=("courant", "max_steps", "resolve"))
def integrate(key, x0, coef: Coefficients, T, tau, *, courant: float = 0.1, max_steps: int = 20_000,
              resolve: float = 1e-3):
    """Advance the level SDE over a time ``tau`` with fixed coefficients; batched over replicas.

    Shapes (R replicas, K levels): ``key`` (R,) keys; ``x0`` (R, K) levels, any order, ≥ 0;
    ``coef`` `Coefficients` with leading axis R; ``T`` and ``tau`` (R,). Returns ``(x, info)``:
    the levels at τ (R, K), descending, and ``info`` with ``steps`` (sub-steps taken) and
    ``forced`` (sub-steps where the step budget overrode the control), both (R,).

    Scheme, one sub-step of length h (levels kept descending):

    1. explicit part: the force F_i = K̃_ii + T Σ_{|j−i|≥2} Ṽ_ij/(x_i − x_j) + T C̃_ii (all
       but the nearest-neighbour repulsion) and the noise, frozen over h, with the linear
       term −γ_i x_i integrated exactly (an Ornstein–Uhlenbeck step, stable for any γ_i h):
       x_i ← x_i + φ(γ_i) (F_i − γ_i x_i) + sqrt(T Ṽ_ii φ(2γ_i)) ξ_i,  φ(r) = (1 − e^{−rh})/r;
       a level pushed below 0 is reflected (levels of a Gram matrix are ≥ 0) and the levels
       are re-sorted, which reflects the gap of any pair the noise crossed;
    2. the nearest-neighbour repulsion T Ṽ_{i,i±1}/(x_i − x_{i±1}) by the implicit midpoint
       rule (`_bonds`), Strang-split into even bonds (h/2), odd bonds (h), even bonds (h/2):
       each bond's gap becomes sqrt(g² + 4 T Ṽ_i,i+1 h), its centre kept.

    The repulsion is never softened: the singular 1/gap force between neighbours is
    integrated implicitly, so a pair can never cross and no step has to shrink with the
    smallest gap (an explicit scheme needs h ∝ gap², whose sum has a heavy tail).

    Step control, per replica and afresh at each sub-step (`lax.while_loop`): neither the
    explicit kick |F_i − γ_i x_i| h nor one standard deviation of the noise moves a level by
    more than ``courant`` times ℓ_i, its distance to the levels two places away, floored at
    ``resolve`` times the mean spacing (so that a cluster of three or more levels piled
    against x = 0 does not stall the step; its bonds stay implicit and ordered). The budget
    ``max_steps`` caps the work: h is never below (time left)/(steps left), so every replica
    reaches τ; steps taken at that floor are counted in ``info["forced"]``.

    Accuracy: weak order 1 in h (Euler–Maruyama for the explicit part; first-order splitting
    between the parts), so with the step ∝ courant² where the noise limits it, the bias of a
    moment falls like courant². For an isolated pair the squared gap grows by exactly the mean
    of the SDE, T(Ṽ_ii + Ṽ_jj + 4 Ṽ_ij) h, for any h; with uniform couplings the second
    moment Σ x_i² is exact up to the O(h²) terms of the explicit far field. Reflection at
    x = 0 lowers the order to 1/2 there, as for any reflected Euler scheme.
    """
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    coef = Coefficients(*(jnp.asarray(c, dtype) for c in coef))
    one = partial(_integrate_one, courant=courant, max_steps=max_steps, resolve=resolve)
    return jax.vmap(one)(key, x0, coef, jnp.asarray(T, dtype), jnp.asarray(tau, dtype))


def _descending(x):
    return -jnp.sort(-x)


def _integrate_one(key, x0, coef, T, tau, *, courant, max_steps, resolve):
    dtype = x0.dtype
    k = x0.shape[0]
    _, far = _masks(k)
    bond_c = T * jnp.maximum(jnp.concatenate([jnp.diagonal(coef.pair, offset=1), jnp.zeros((1,), dtype)]), 0.0)
    sigma2 = T * jnp.maximum(jnp.diagonal(coef.pair), 0.0)
    sigma = jnp.sqrt(sigma2)

    def cond(state):
        x, t, n, forced, key = state
        return (t < tau) & (n < max_steps)

    def body(state):
        x, t, n, forced, key = state
        key, sub = jax.random.split(key)
        force = _smooth_force(x, coef, T, far)
        move = force - coef.stiffness * x  # the explicit velocity at the start of the step
        h, was_forced = _substep_size(x, move, sigma2, tau - t, (max_steps - n).astype(dtype), courant, resolve)
        # exact Ornstein–Uhlenbeck step for −γx with the force and noise frozen over h
        w = _relax(coef.stiffness, h)
        var = _relax(2.0 * coef.stiffness, h)
        xi = jax.random.normal(sub, x.shape, dtype)
        x = x + w * move + sigma * jnp.sqrt(var) * xi
        x = _descending(jnp.abs(x))
        x = _bonds(_bonds(_bonds(x, bond_c, 0.5 * h, 0), bond_c, h, 1), bond_c, 0.5 * h, 0)
        # the implicit bonds keep every pair they treat ordered; the sort and |x| settle the
        # rare chain where neighbouring bonds pushed a level past a third one, or below 0
        x = _descending(jnp.abs(x))
        t = jnp.where(h >= tau - t, tau, t + h)  # the last step lands exactly on τ
        return x, t, n + 1, forced + was_forced.astype(jnp.int32), key

    zero = jnp.zeros((), jnp.int32)
    state = (_descending(jnp.abs(x0)), jnp.zeros((), dtype), zero, zero, key)
    x, _, n, forced, _ = lax.while_loop(cond, body, state)
    return x, {"steps": n, "forced": forced}


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
    at both ends, ``x_start`` and ``x_end`` (R, n, K), and the coefficients measured at the
    start as `Coefficients` whose drift is linearised about x(t_k):
    K̃_ii(x) = K̃_ii(t_k) − γ_i (x_i − x_i(t_k)). Also ``T`` = α/|B|, ``dtau`` = α·(steps per
    interval), ``steps`` (n + 1,) and ``finite`` (R,): replicas finite throughout.

    With ``clip_stiffness`` only restoring slopes (γ_i > 0) are kept: an unstable slope,
    exponentiated over an interval many times 1/|γ_i|, would extrapolate the drift far
    outside the neighbourhood where it was measured. Stores without ``level_ito`` or
    ``level_stiffness`` get zeros for them.
    """
    sl = slice(first, None)

    def get(name):  # stored ascending; the levels here are descending
        a = np.asarray(results[name][point], dtype=float)[:, sl, ::-1]
        return a[..., ::-1] if name == "pair_noise" else a

    x, drift, pair = get("gram"), get("level_drift"), get("pair_noise")
    ito = get("level_ito") if "level_ito" in results else np.zeros_like(drift)
    gamma = get("level_stiffness") if "level_stiffness" in results else np.zeros_like(drift)
    if clip_stiffness:
        gamma = np.maximum(gamma, 0.0)
    steps = np.asarray(results.steps)[sl]
    every = np.diff(steps)
    if every.size == 0 or np.any(every != every[0]):
        raise ValueError("the cross-check needs at least two equally spaced snapshots")
    lr = float(results.hp("lr")[point])
    bs = float(results.hp("batch_size")[point])
    h = slice(None, -1)
    coef = Coefficients(drift[:, h] + gamma[:, h] * x[:, h], pair[:, h], ito[:, h], gamma[:, h])
    finite = ~np.asarray(results.diverged[point], dtype=bool) & np.all(np.isfinite(x), axis=(1, 2))
    for c in coef:
        finite &= np.all(np.isfinite(c.reshape(c.shape[0], -1)), axis=1)
    return {"x_start": x[:, :-1], "x_end": x[:, 1:], "coef": coef, "T": temperature(lr, bs), "dtau": lr * float(every[0]),
            "lr": lr, "batch_size": bs, "steps": steps, "finite": finite}


def predict_intervals(key, x_start, coef: Coefficients, T: float, dtau: float, *, draws: int = 1,
                      courant: float = 0.1, max_steps: int = 20_000):
    """x̂(t_{k+1}) for every (replica, interval): `integrate` from the SGD levels x(t_k) with the
    coefficients of t_k held fixed over Δτ; ``draws`` independent noise paths each.

    ``x_start`` (R, n, K), ``coef`` with leading axes (R, n). Returns ``(x̂, info)``,
    x̂ (draws, R, n, K) and info's ``steps``/``forced`` (draws, R, n).
    """
    x_start = np.asarray(x_start, dtype=float)
    lead = x_start.shape[:2]
    m = draws * lead[0] * lead[1]

    def flat(a):
        a = np.broadcast_to(np.asarray(a, dtype=float), (draws,) + np.shape(a))
        return jnp.asarray(a.reshape((m,) + a.shape[3:]), jnp.float32)

    x, info = integrate(jax.random.split(key, m), flat(x_start), Coefficients(*(flat(c) for c in coef)),
                        jnp.full((m,), T, jnp.float32), jnp.full((m,), dtau, jnp.float32),
                        courant=courant, max_steps=max_steps)
    shape = (draws,) + lead
    return np.asarray(x, dtype=float).reshape(shape + x_start.shape[2:]), {k: np.asarray(v).reshape(shape) for k, v in info.items()}


def log_changes(x_start, x_end, teacher) -> dict:
    """Per-interval log changes of what tells the regimes apart (any leading shape):
    ``u`` the mean level spacing ū = (x_1 − x_K)/(K − 1), ``d`` the distance to the teacher's
    levels max_i |x_i − x*_i| (both descending), ``top`` the largest level x_1."""
    x0 = np.asarray(x_start, dtype=float)
    x1 = np.asarray(x_end, dtype=float)
    t = np.asarray(teacher, dtype=float)

    def parts(x):
        return {"u": (x[..., 0] - x[..., -1]) / (x.shape[-1] - 1), "d": np.max(np.abs(x - t), axis=-1), "top": x[..., 0]}

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


def top_level_terms(x, coef: Coefficients, T: float, dtau: float) -> dict:
    """Medians over (replica, interval) of the terms of the largest level's SDE at the start of
    each interval: ``drift`` K̃_11, ``coulomb`` T Σ_j Ṽ_1j/(x_1 − x_j), ``ito`` T C̃_11,
    ``noise`` sqrt(T Ṽ_11/Δτ) (the noise as a velocity over one interval) and ``gamma_dtau``
    γ_1·Δτ (≫ 1: the drift relaxes the level within the interval)."""
    x = np.asarray(x, dtype=float)
    gamma = np.asarray(coef.stiffness, dtype=float)
    drift = np.asarray(coef.drift, dtype=float)[..., 0] - gamma[..., 0] * x[..., 0]
    pair = np.asarray(coef.pair, dtype=float)
    d = x[..., :1] - x[..., 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        coulomb = T * np.sum(pair[..., 0, 1:] / d, axis=-1)
    terms = {"drift": drift, "coulomb": coulomb, "ito": T * np.asarray(coef.ito, dtype=float)[..., 0],
             "noise": np.sqrt(T * np.maximum(pair[..., 0, 0], 0.0) / dtau), "gamma_dtau": gamma[..., 0] * dtau}
    return {k: float(np.nanmedian(v)) for k, v in terms.items()}


def cross_check(results, point: int, teacher, *, key=None, first: int = 0, draws: int = 2,
                courant: float = 0.1, max_steps: int = 20_000) -> dict:
    """SGD against the one-interval Langevin predictions at one grid point of a multilayer run.

    Over the intervals from snapshot ``first`` on, each side's net log changes
    Σ_k ln q(t_{k+1})/q(t_k) (q = ū, d, x_1; the Langevin side with x(t_{k+1}) replaced by
    x̂(t_{k+1}) and averaged over ``draws``) are averaged over the finite replicas; ``regime``
    labels both. Returns a dict: the point's ``lr, batch_size, T, init_std``, the window
    (``steps``), ``replicas``, per side (``"sgd"``, ``"langevin"``) ``net`` and ``se`` dicts,
    ``lam`` = net ln ū per SGD step (the spacing growth rate of the phase diagram) and
    ``regime``; ``agree``; ``forced`` (the fraction of sub-steps at the budget floor);
    ``top_terms`` (`top_level_terms`); and for figures ``x_start``, ``x_end`` (R, n, K) and
    ``x_hat`` (draws, R, n, K).
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
        return {**out, "agree": False, "forced": np.nan, "top_terms": {}}
    x0, x1 = inp["x_start"][ok], inp["x_end"][ok]
    teacher = -np.sort(-np.asarray(teacher, dtype=float), axis=-1)  # descending, like the levels here
    if teacher.ndim == 2:  # one teacher per replica: (R, K) → (R_ok, 1, K) against (R_ok, n, K)
        teacher = teacher[ok][:, None]
    coef = Coefficients(*(c[ok] for c in inp["coef"]))
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
    out["top_terms"] = top_level_terms(x0, coef, inp["T"], inp["dtau"])
    out.update(x_start=x0, x_end=x1, x_hat=x_hat, teacher=np.broadcast_to(teacher, x0.shape))
    return out
