"""The one integrator of level SDEs: the split step shared by `DysonBM`, `WishartProcess` and `LevelSDE`.

Every level SDE of the package is, for levels y_1 < … < y_N (one replica),

    dy_i = [ a_i − r_i y_i + Σ_{j≠i} w_ij/(y_i − y_j) + f_i(y) ] dt + σ_i dB_i
           (chiral: + Σ_{j≠i} w_ij/(y_i + y_j) + (origin)/y_i),

and the differences between the processes are data (`LevelTerms`): the noise variances σ_i²,
the linear rates r_i (one scalar rate for DBM and Wishart, per-level stiffness γ_i for the
weighted SDE), the pair weights w_ij (a scalar κ = βD, or a symmetric matrix T·Ṽ_ij), the
constant drift a_i, a nonlinear force f (a potential's non-quadratic part), and for chiral
(singular-value) processes the mirror images and the origin term. See `dysonbm.sde.processes`
for the derivation of the scheme and its accuracy; in brief, a sub-step of length h is

1. the linear part and the noise by the exact Ornstein–Uhlenbeck transition:
   b = e^{−r_i h} y_i + φ(r_i) a_i + sqrt(σ_i² φ(2r_i)) ξ_i, φ(r) = (1 − e^{−rh})/r, reflected
   at 0 for Gram levels, relabelled in order;
2. explicit part at b: b += φ(2r_i) Σ_{|i−j|≥2} w_ij/(b_i − b_j) + φ(r_i) f_i(b). With one
   scalar rate this is DysonBM's Ornstein–Uhlenbeck time change written in the original
   frame: the repulsion is homogeneous of degree −1, so its weight φ(2r) = e^{−2rh}τ(h),
   τ(h) = (e^{2rh} − 1)/(2r), makes it exact for the time-changed process;
3. the nearest-neighbour bonds implicitly (`dysonbm.sde.bonds._repel`, the implicit midpoint
   rule by a Newton proximal solve), couplings c̄_i τ̄_i, τ̄_i = φ(2r) of the bond's two levels
   averaged, c̄_i = w_{i,i+1} — or, with random bonds, (s_i τ̄_i/4)·χ²_{4c̄_i/s_i},
   s_i = σ_i² + σ_{i+1}², with which an isolated pair's gap has exactly the (Bessel) law of
   the pair SDE (for DBM: the 2×2 eigenvalue-gap law). The barrier is homogeneous, so this is
   the time-changed prox of DysonBM scaled by e^{−rh}.

Step control (`Control`), per replica in a ``lax.while_loop``: the sub-step is the largest h
that passes every enabled criterion — ``theta`` (bond strength c̄τ ≤ θ ḡ², ḡ the mean gap, and
the nonlinear force changes no gap by more than θ·max(gap, ḡ)), ``courant`` (the explicit
velocity and one standard deviation of the noise move no level by more than ``courant``
times its distance to the levels two places away, floored at ``resolve``·ḡ) — but never below
(time left)/(sub-steps left), so that every replica reaches the end of the step within
``max_substeps``; sub-steps where that floor overrode the control are counted as ``forced``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from dysonbm.sde.bonds import Couplings, _repel
from dysonbm.sde.draws import _substep_draws
from dysonbm.sde.numerics import _expm1_over, _far_sum, _log1p_over, _resort

Array = jax.Array


class LevelTerms(NamedTuple):
    """The coefficients of a level SDE for one replica, per unit time (traced arrays).

    noise:  (N,) or () variance rates σ_i²
    rate:   (N,) or () linear rates r_i (drift −r_i y_i)
    bond:   (N−1,) or () nearest-neighbour couplings c̄_i (the weights w_{i,i+1}), ≥ 0
    far:    () uniform pair weight κ, or (N, N) symmetric weights w_ij (only |i − j| ≥ 2 are read)
    drift:  (N,) constant drift a_i, or None
    origin_dof: () degrees of freedom of the origin bond (chiral processes), or None: the
        origin coupling of level i is (σ_i²/2)·τ·χ²_{origin_dof}
    bond_dof: () the bonds' χ² degrees of freedom 4c̄/s where it is known exactly (β for DBM
        and Wishart: the exact integer-dof sampler is then used), or None: computed
    """

    noise: Array
    rate: Array
    bond: Array
    far: Array
    drift: Array | None = None
    origin_dof: Array | None = None
    bond_dof: Array | None = None


class Control(NamedTuple):
    """Static settings of the split step (see the module docstring)."""

    theta: float = 0.5
    courant: float = 0.0  # 0: criterion off
    resolve: float = 1e-3
    max_substeps: int = 16
    max_newton: int = 50
    newton_tol: float = 3e-3
    random_bonds: bool = True
    chiral: bool = False  # singular values: mirror images and the origin bond
    reflect: bool = False  # levels ≥ 0 (Gram levels): reflected at 0; implied by chiral


class StepInfo(NamedTuple):
    """Work of one step: sub-steps, Newton iterations, sub-steps forced by the budget (int32)."""

    substeps: Array
    newton: Array
    forced: Array


def _count():
    return jnp.asarray(0, jnp.int32)


def far_field(b: Array, y: Array, far: Array, chiral: bool) -> Array:
    """Σ_{|i−j|≥2} w_ij/(b_i − b_j) at the sorted positions b, the distances of pairs two apart
    floored at a quarter of those in the sorted reference y (see `dysonbm.sde.numerics._far_sum`);
    ``far`` a scalar κ (the fused uniform sum) or an (N, N) weight matrix."""
    if far.ndim == 0:
        return far * _far_sum(b, y, chiral)
    if chiral:
        raise ValueError("pair weights of a chiral process must be one scalar")
    return _far_sum(b, y, False, weights=far)


def _second_neighbour_distance(y: Array) -> Array:
    """Distance of each level (ascending) to the levels two places away, (N,), inf for none."""
    d2 = y[2:] - y[:-2]
    big = jnp.full((2,), jnp.inf, y.dtype)
    return jnp.minimum(jnp.concatenate([big, d2]), jnp.concatenate([d2, big]))


def _inverse_time_change(tau, rate):
    """h with h·(e^{2rh} − 1)/(2rh) = τ, per level; inf where no finite h reaches τ (2rτ ≤ −1)."""
    x = 2.0 * rate * tau
    ok = (x > -1.0) & jnp.isfinite(tau)
    return jnp.where(ok, tau * _log1p_over(jnp.where(ok, x, 0.0)), jnp.inf)


def _step_cap(y, terms: LevelTerms, nonlinear, ctl: Control):
    """The sub-step length the control allows at y (before the budget's floor)."""
    n = y.shape[0]
    gy = jnp.diff(y)
    mean_gap = y[-1] / n if ctl.chiral else (y[-1] - y[0]) / (n - 1)
    cap = jnp.full((), jnp.inf, y.dtype)
    if ctl.theta > 0:
        # on the time-changed step τ: bond strength c̄τ ≤ θ ḡ² and the nonlinear force changes
        # no gap by more than θ·max(gap, ḡ); a fully degenerate y (ḡ = 0) has no scale
        top = jnp.max(terms.bond)
        tau = jnp.where((mean_gap > 0) & (top > 0), mean_gap**2 / jnp.where(top > 0, top, 1.0), jnp.inf)
        if nonlinear is not None:
            rate = jnp.abs(jnp.diff(nonlinear(y)))
            scale = jnp.maximum(gy, mean_gap)
            tau = jnp.minimum(tau, jnp.min(jnp.where(rate > 0, scale / jnp.where(rate > 0, rate, 1.0), jnp.inf)))
        cap = jnp.min(_inverse_time_change(ctl.theta * tau, terms.rate))
    if ctl.courant > 0:
        # on h: |explicit velocity|·h and one noise standard deviation within courant·ℓ_i
        move = far_field(y, y, terms.far, ctl.chiral) - terms.rate * y
        if terms.drift is not None:
            move = move + terms.drift
        if nonlinear is not None:
            move = move + nonlinear(y)
        scale = ctl.courant * jnp.maximum(_second_neighbour_distance(y), ctl.resolve * mean_gap)
        h_move = jnp.min(jnp.where(jnp.abs(move) > 0, scale / jnp.abs(move), jnp.inf))
        h_noise = jnp.min(jnp.where(terms.noise > 0, scale * scale / terms.noise, jnp.inf))
        cap = jnp.minimum(cap, jnp.minimum(h_move, h_noise))
    return cap


def _bond_mean(a):
    """Per bond, the mean of its two levels' values; a scalar stays one (no per-level work)."""
    return a if a.ndim == 0 else 0.5 * (a[1:] + a[:-1])


def _couplings(d, terms: LevelTerms, tau, ctl: Control):
    """(couplings, their means) of the implicit part; ``d`` the sub-step's `SubstepDraws`
    (χ² of `_bond_dof` and of ``origin_dof``), ``tau`` the levels' effective steps
    (1 − e^{−2rh})/(2r) (a scalar or (N,)), a bond's the mean of its two levels'."""
    n = d.noise.shape[0]
    tau_bond = _bond_mean(tau)
    origin_scale = 0.5 * terms.noise * tau if ctl.chiral else None
    mean = Couplings(jnp.broadcast_to(terms.bond * tau_bond, (n - 1,)),
                     jnp.broadcast_to(origin_scale * terms.origin_dof, (n,)) if ctl.chiral else None)
    if not ctl.random_bonds:
        return mean, mean
    # the isolated pair's gap is a Bessel process of dimension 1 + 4c̄/s: g² = g_b² + sτ·χ²_{4c̄/s}
    unit = 0.5 * _bond_mean(terms.noise)  # s/4
    gap = jnp.where(unit > 0, unit * tau_bond * d.gap, mean.gap)
    if not ctl.chiral:
        return Couplings(gap), mean
    return Couplings(gap, origin_scale * d.origin), mean


def _bond_dof(terms: LevelTerms):
    """Degrees of freedom 4c̄_i/s_i of the bonds' χ² (a scalar, or padded to (N,) for the draws)."""
    if terms.bond_dof is not None:
        return terms.bond_dof
    unit = 0.5 * _bond_mean(terms.noise)
    noisy = unit > 0
    dof = jnp.where(noisy, terms.bond / jnp.where(noisy, unit, 1.0), 0.0)
    return dof if dof.ndim == 0 else jnp.concatenate([dof, dof[-1:]])


def split_step(y: Array, key, dt, terms: LevelTerms, ctl: Control,
               nonlinear: Callable[[Array], Array] | None = None) -> tuple[Array, StepInfo]:
    """Advance the ordered levels y (N,) by a time ``dt`` (see the module docstring).

    ``nonlinear``: the force f(y) (N,) treated explicitly, or None. Returns (y, `StepInfo`).
    """
    dtype = y.dtype
    n = y.shape[0]
    # scalars stay scalars (DysonBM, Wishart: one rate, one noise level, one weight)
    terms = LevelTerms(*(None if t is None else jnp.asarray(t, dtype) for t in terms))
    reflect = ctl.reflect or ctl.chiral
    tol = jnp.asarray(ctl.newton_tol, dtype)
    dof = _bond_dof(terms)
    dof0 = terms.origin_dof if ctl.chiral else 0.0
    # the reference of the far field's floor must be sorted: it is, unless the levels relax
    # towards different places (per-level rates or a drift)
    sort_ref = terms.drift is not None or terms.rate.ndim > 0

    def body(carry):
        y, t_left, n_sub, n_newton, n_forced = carry
        cap = _step_cap(y, terms, nonlinear, ctl)
        floor = t_left / (ctl.max_substeps - n_sub).astype(dtype)
        h = jnp.minimum(jnp.maximum(cap, floor), t_left)
        decay = jnp.exp(-terms.rate * h)
        phi2 = h * _expm1_over(-2.0 * terms.rate * h)  # (1 − e^{−2rh})/(2r): noise variance, repulsion
        phi1 = h * _expm1_over(-terms.rate * h)  # (1 − e^{−rh})/r: a force frozen over h
        # all randomness of a sub-step at once: noise ξ (N,) and the bonds' χ² variables
        d = _substep_draws(jax.random.fold_in(key, n_sub), n, dof, dof0, ctl.chiral, dtype)
        # 1. the linear drift a − r·y and the noise: the exact Ornstein–Uhlenbeck transition
        #    (its mean is the reference of the far field's distance floor); relabelled in order
        ref = decay * y if terms.drift is None else decay * y + phi1 * terms.drift
        b = ref + jnp.sqrt(terms.noise * phi2) * d.noise
        ref = jnp.sort(ref) if sort_ref else ref
        if reflect:
            b = jnp.abs(b)
        b = _resort(b)
        # 2. the explicit field at the noisy positions, so that the two members of a pair that
        #    the noise brings close feel every other level alike (no O(√τ) squeeze of close pairs)
        force = phi2 * far_field(b, ref, terms.far, ctl.chiral)
        if nonlinear is not None:
            force = force + phi1 * nonlinear(b)
        b = b + force
        if reflect:
            b = jnp.abs(b)
        b = _resort(b)
        # 3. the nearest neighbours implicitly
        y, it = _repel(b, *_couplings(d, terms, phi2, ctl), tol, ctl.max_newton)
        if reflect and not ctl.chiral:
            y = _resort(jnp.abs(y))  # no origin barrier: the bonds may push the lowest level below 0
        t_left = jnp.where(h >= t_left, jnp.zeros_like(t_left), t_left - h)
        return y, t_left, n_sub + 1, n_newton + it, n_forced + (cap < floor).astype(jnp.int32)

    carry = (y, jnp.asarray(dt, dtype), _count(), _count(), _count())
    # the first sub-step (dt > 0) outside the loop: a batch runs the loop only where the
    # step control cuts a step (one sub-step inside a vmapped loop costs 1.5× at N = 16)
    y, _, n_sub, n_newton, n_forced = jax.lax.while_loop(lambda c: c[1] > 0, body, body(carry))
    return y, StepInfo(n_sub, n_newton, n_forced)
