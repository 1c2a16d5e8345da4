"""Eigenvalue SDEs (Dyson Brownian motion, Wishart process) with batched, stable integrators.

Processes
---------
`DysonBM` integrates the β-Dyson Brownian motion of N levels,

    dλ_i = −U'(λ_i) dt + β D Σ_{j≠i} 1/(λ_i − λ_j) dt + sqrt(2D) dB_i,

whose stationary law is the Coulomb gas  P(λ) ∝ Π_{i<j}|λ_i − λ_j|^β exp(−Σ_i U(λ_i)/D); for
U = γλ²/2 its density tends to the semicircle of radius R = sqrt(2βND/γ).

`WishartProcess` integrates the eigenvalues x_i = s_i² of X = WᵀW, W an M×N Brownian matrix
(entries of variance D dt), written for any β > 0 as

    dx_i = β D [ M + Σ_{j≠i} (x_i + x_j)/(x_i − x_j) ] dt − U'(x_i) dt + 2 sqrt(D x_i) dB_i

(β = 1 real, 2 complex, 4 quaternion W; each real component of an entry has variance D dt).
It is integrated in the singular values s_i = sqrt(x_i) (Itô), where the noise is additive:

    ds_i = [ (β(M−N+1) − 1) D/(2 s_i) + (βD/2) Σ_{j≠i} (1/(s_i − s_j) + 1/(s_i + s_j))
             − U'(s_i²)/(2 s_i) ] dt + sqrt(D) dB_i.

`MatrixDBM` and `MatrixWishart` are the matrix-space references: the matrix SDE is an
Ornstein–Uhlenbeck process, advanced by its exact Gaussian transition (no time-step error),
and diagonalised at each observation.

Protocol
--------
Each process is a frozen (hashable) dataclass of static settings with pure functions of ONE
replica; the engine vmaps them over replicas and scans them over steps::

    init(key, hp) -> state ;  step(state, key, hp) -> state ;  observe(state, hp) -> dict

``hp`` is a dict of per-replica scalars (traced); the names a process reads are its
``sweepable`` tuple, whose defaults are the dataclass fields of the same name. ``validate(hp)``
checks concrete values on the host and raises ``ValueError`` naming the field.

Scheme ``"split"`` (default): exact OU part, explicit far field, exact-2×2 implicit pairs
-----------------------------------------------------------------------------------------
The quadratic part of the potential (rate r = γ for DBM; r = γ/2 for the singular values of
the Wishart process) is removed exactly by the Ornstein–Uhlenbeck time change
λ(t) = e^{−rt} μ(τ(t)), τ(t) = (e^{2rt} − 1)/(2r), under which μ obeys the same SDE without
the quadratic term (the repulsion is homogeneous of degree −1). A step of length h, with
τ = τ(h), κ = βD and y the ordered levels, is then:

1. noise: b = sort(y + sqrt(2Dτ) ξ)  (Wishart: sqrt(Dτ) ξ, reflected at 0);
2. explicit part at b: b += τ[κ Σ_{|i−j|≥2} 1/(b_i − b_j) − U_nl'(b_i)] (Wishart: also the
   mirror images 1/(b_i + b_j)); evaluated after the noise so that both members of a pair
   that the noise brings close feel every other level alike;
3. implicit part, the nearest-neighbour bonds, by the implicit midpoint rule
   y = b + F_nn((y + b)/2), i.e. m = argmin ½|m − b|² − Σ_i (c_i/2) log(m_{i+1} − m_i),
   y = 2m − b. The bond couplings are c_i = Dτ·X_i, X_i ~ χ²_β (mean κτ): for an isolated
   pair the gap becomes g² = g_b² + 4Dτ χ²_β, which is exactly the 2×2 law (the eigenvalue
   gap of [[a, z], [z*, b]] with |z|² = Dτ χ²_β) — so the level-repulsion hole at gaps
   ≲ sqrt(Dτ) is reproduced exactly, where a deterministic splitting would empty it.
   Wishart: bonds also carry −c_i log(m_{i+1} + m_i), and each level the origin term
   −c0_i log m_i with c0_i = (Dτ/2)·χ²_{β(M−N+1)−1} (the exact Bessel law of a singular
   value near 0). The objective is strictly convex and infinite on the boundary of the
   ordered cone: damped Newton steps with a tridiagonal Hessian (parallel cyclic reduction,
   O(N log N), 1–3 iterations) find m. A gap that the neighbours compress below a quarter
   of its midpoint value is widened back; if a gap is still not positive (clusters,
   degenerate starts) the step falls back to backward Euler y = prox_c(b), always ordered.
   A near-zero χ² draw lets the neighbours squeeze its bond below the float resolution of
   the positions, where Newton cannot converge; such a step (≈1% of replica-steps at
   N = 1024, none at N ≤ 256) is redone with the mean couplings βuτ;
4. y ← e^{−rh} y.

The repulsion is not softened: the singular nearest pairs are implicit, the rest is a
smooth field (each distance floored at a quarter of its pre-noise value, which only acts on
clusters made by the noise alone and keeps the explicit kick bounded). Levels stay strictly
ordered and finite for every dt (for β < 1, where the exact levels collide, they may touch).
Cost per step: one O(N²) vectorised pair sum, like Euler–Maruyama, plus O(N log N).

Step control: with mean gap ḡ, a step is cut into sub-steps (per replica, in a
``lax.while_loop``, at most ``max_substeps``, the last taking the remaining time, none
dropped) when κτ > theta·ḡ² or the nonlinear force would change a gap by more than
theta·max(gap, ḡ): only at very large dt, stiff potentials, or the compressed
configurations right after the degenerate start "zero" (all levels at 0: the first step
has no far field and the prox splits the levels).

Weak order 1 in dt (Lie splitting, Euler far field); the OU part is exact, and N = 2 with a
quadratic or no potential is exact for any dt. Recommended dt (`recommended_dt`):
D·dt ≤ 0.05 s̄², s̄ the bulk level spacing (U = γλ²/2: s̄² = π²βD/(2γN)), and γ·dt ≤ 0.005;
the first bound is the tighter one for N ≳ 30β (dt ≈ 0.25β/(γN)). Measured there (N = 16,
β = 1.5 and N = 64, β = 1): the stationary ⟨Σλ²⟩ is biased by +0.2…0.4 %, the mean top
level by < 0.2 %, and ⟨r⟩ of the spacing ratio and the spacing distribution agree with the
exact ensemble within sampling error (|Δ⟨r⟩| ≤ 0.003); at 4× that dt ⟨Σλ²⟩ is biased by
≈ +1.5 % and ⟨r⟩ by −0.02 to −0.035. At N = 1024 (4 replicas from the exact stationary
start, 400 steps) ⟨Σλ²⟩ stays within 0.1 % of exact at 1× and 4× the recommended dt.

Scheme ``"euler"``: plain Euler–Maruyama on the same SDE (in x for the Wishart process), no
ordering or step control, for comparison: at large N or dt the levels cross and it returns
NaN.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any, Callable, ClassVar, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import linalg

Array = jax.Array
PyTree = Any

__all__ = [
    "Potential", "POTENTIALS", "get_potential",
    "Process", "DysonBM", "WishartProcess", "MatrixDBM", "MatrixWishart", "LevelState",
    "sample_hermite", "sample_laguerre", "recommended_dt", "mean_spacing",
    "temperature_from_sgd", "diffusion_from_noise", "simulate",
]


# --------------------------------------------------------------------------------------
# potentials
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Potential:
    """U(λ) = ½ hp[quadratic] λ² + nonlinear(λ, hp), a function of ONE level.

    The quadratic part (if ``quadratic`` names an hp entry) is integrated exactly; the
    nonlinear rest explicitly. ``params`` are the hp names it reads.
    """

    name: str
    quadratic: str | None = None
    nonlinear: Callable[[Array, Mapping], Array] | None = None
    params: tuple[str, ...] = ()

    def stiffness(self, hp) -> Array:
        """The coefficient γ of the exactly integrated part γλ²/2 (0 if none)."""
        return jnp.asarray(hp[self.quadratic]) if self.quadratic else jnp.asarray(0.0)

    def value(self, lam, hp) -> Array:
        """U(lam) for a scalar ``lam``."""
        u = 0.5 * self.stiffness(hp) * lam**2
        return u + self.nonlinear(lam, hp) if self.nonlinear is not None else u

    def nonlinear_force(self, lam: Array, hp) -> Array:
        """−d/dλ of the nonlinear part, elementwise over ``lam`` (any shape)."""
        if self.nonlinear is None:
            return jnp.zeros_like(lam)
        du = jax.grad(lambda x: jnp.asarray(self.nonlinear(x, hp), dtype=x.dtype))
        flat = lam.reshape(-1)
        return -jax.vmap(du)(flat).reshape(lam.shape)

    def force(self, lam: Array, hp) -> Array:
        """−U'(lam), elementwise."""
        return -self.stiffness(hp).astype(lam.dtype) * lam + self.nonlinear_force(lam, hp)


def _quartic(lam, hp):
    return 0.25 * hp["g"] * lam**4


POTENTIALS: dict[str, Potential] = {
    "free": Potential("free"),
    "quadratic": Potential("quadratic", quadratic="gamma", params=("gamma",)),
    "quartic": Potential("quartic", quadratic="gamma", nonlinear=_quartic, params=("gamma", "g")),
}


def get_potential(spec) -> Potential:
    """A `Potential` from a name in `POTENTIALS`, a `Potential`, or a callable ``U(lam, hp)``
    (or ``U(lam)``) of one scalar level, differentiated with ``jax.grad``."""
    if isinstance(spec, Potential):
        return spec
    if isinstance(spec, str):
        if spec not in POTENTIALS:
            raise ValueError(f"potential must be one of {sorted(POTENTIALS)} or a callable, got potential={spec!r}")
        return POTENTIALS[spec]
    if callable(spec):
        try:
            n_args = len(inspect.signature(spec).parameters)
        except (TypeError, ValueError):
            n_args = 2
        fn = spec if n_args >= 2 else _OneArg(spec)
        return Potential(getattr(spec, "__name__", "custom"), nonlinear=fn)
    raise ValueError(f"potential must be a name, a Potential or a callable U(lam, hp), got potential={spec!r}")


@dataclasses.dataclass(frozen=True)
class _OneArg:
    fn: Callable

    def __call__(self, lam, hp):
        return self.fn(lam)


class _AnyHp(dict):
    """hp stand-in for shape checks: every name reads as 1.0."""

    def __missing__(self, key):
        return jnp.asarray(1.0)


def _check_potential(pot: Potential, hp, field: str = "potential") -> None:
    """Raise ValueError unless U maps one scalar level to a scalar."""
    if pot.nonlinear is None:
        return
    hp = _AnyHp({k: jnp.asarray(v).reshape(-1)[0] for k, v in hp.items()})
    try:
        out = jax.eval_shape(lambda x: pot.nonlinear(x, hp), jax.ShapeDtypeStruct((), jnp.float32))
    except Exception as err:  # any failure on a scalar input means it is not a one-level function
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{field}={pot.name!r} is not a function of one scalar level: {msg}") from None
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(f"{field}={pot.name!r} must map one scalar level to a scalar, got output shape {shape}")


def _check_confining(pot: Potential, hp) -> None:
    """Raise ValueError where a named potential is unbounded below (every level runs away):
    g < 0, or a negative quadratic coefficient with no positive quartic term to hold it."""
    ok = None
    if pot.name == "quartic" and "g" in pot.params and "g" in hp:
        g = np.asarray(hp["g"], dtype=float)
        if not np.all(g >= 0):
            raise ValueError(f"g must be >= 0 (U is unbounded below otherwise), got g={_first_bad(g, g >= 0)}")
        ok = g > 0  # a double well: γ < 0 is held by the quartic term
    if pot.quadratic is None or pot.quadratic not in hp:
        return
    v = np.asarray(hp[pot.quadratic], dtype=float)
    ok = v >= 0 if ok is None else (v >= 0) | ok
    if not np.all(ok):
        name = pot.quadratic
        raise ValueError(f"{name} must be >= 0 for potential={pot.name!r} (U is unbounded below otherwise), "
                         f"got {name}={_first_bad(v, np.broadcast_to(ok, v.shape))}")


def _check_rate(hp) -> None:
    """Raise ValueError for a negative decay rate γ of a matrix process (it would blow up)."""
    v = np.asarray(hp["gamma"], dtype=float)
    if not np.all(v >= 0):
        raise ValueError(f"gamma must be >= 0 (a negative rate grows without bound), got gamma={_first_bad(v, v >= 0)}")


# --------------------------------------------------------------------------------------
# small numerical helpers
# --------------------------------------------------------------------------------------
def _dtype():
    """The default float dtype (float32, or float64 under jax_enable_x64)."""
    return jnp.zeros(()).dtype


def _expm1_over(x):
    """(e^x − 1)/x, continuous at 0."""
    small = jnp.abs(x) < 1e-6
    xs = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 + 0.5 * x, jnp.expm1(xs) / xs)


def _log1p_over(x):
    """log(1 + x)/x, continuous at 0 (x > −1)."""
    small = jnp.abs(x) < 1e-6
    xs = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 - 0.5 * x, jnp.log1p(xs) / xs)


def _safe_recip(d):
    """1/d, and 0 where d == 0 (coincident levels contribute no finite force)."""
    nz = d != 0
    return jnp.where(nz, 1.0 / jnp.where(nz, d, 1.0), 0.0)


def _far_mask(n: int):
    """(n, n) bool, True for |i − j| ≥ 2; built from iota so XLA fuses it into the pair sum."""
    i = jax.lax.broadcasted_iota(jnp.int32, (n, n), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (n, n), 1)
    return jnp.abs(i - j) >= 2


def _offdiag_mask(n: int):
    i = jax.lax.broadcasted_iota(jnp.int32, (n, n), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (n, n), 1)
    return i != j


def _far_sum(b: Array, y: Array, mirror: bool, rho: float = 0.25) -> Array:
    """Σ_{|i−j|≥2} 1/(b_i − b_j) (+ 1/(b_i + b_j) if mirror) at the sorted noisy positions b,
    each distance floored at rho × its value in the sorted pre-noise y.

    The floor only acts where the noise alone squeezed a non-neighbour pair to a quarter of its
    distance (a clustering of ≥ 3 levels made by the noise, exponentially rare at a resolved
    dt) and keeps the explicit kick bounded there; pairs coincident in y (the degenerate start)
    contribute 0.  b, y: (N,) -> (N,).
    """
    n = b.shape[0]
    far = _far_mask(n)
    sign = jnp.sign(jax.lax.broadcasted_iota(jnp.int32, (n, n), 0) - jax.lax.broadcasted_iota(jnp.int32, (n, n), 1))
    dy = jnp.abs(y[:, None] - y[None, :])
    d = jnp.maximum(jnp.abs(b[:, None] - b[None, :]), rho * dy)
    out = jnp.sum(1.0 / jnp.where(far & (dy > 0), sign * d, jnp.inf), axis=1)
    if mirror:
        py = y[:, None] + y[None, :]
        p = jnp.maximum(b[:, None] + b[None, :], rho * py)
        out = out + jnp.sum(1.0 / jnp.where(far & (py > 0), p, jnp.inf), axis=1)
    return out


def _resort(y: Array) -> Array:
    """Sort a nearly sorted (N,) vector by odd–even transposition passes until ordered.

    After the noise sub-step only a few neighbours are out of order, so one or two passes
    (O(N) each) replace a full sort; any input still ends sorted (at most N passes).
    """
    n = y.shape[0]
    if n < 2:
        return y
    idx = jnp.arange(n)

    def half_pass(y, parity):
        right = jnp.roll(y, -1)
        left = jnp.roll(y, 1)
        first = (idx % 2 == parity) & (idx < n - 1)  # y_i is the left member of a pair
        second = (idx % 2 != parity) & (idx > 0)  # y_i is the right member
        swap_here = first & (y > right)
        swap_prev = second & (left > y)
        return jnp.where(swap_here, right, jnp.where(swap_prev, left, y))

    def body(carry):
        y, _ = carry
        y = half_pass(half_pass(y, 0), 1)
        return y, jnp.any(jnp.diff(y) < 0)

    y, _ = jax.lax.while_loop(lambda c: c[1], body, (y, jnp.any(jnp.diff(y) < 0)))
    return y


# --------------------------------------------------------------------------------------
# implicit nearest-neighbour repulsion: a log-barrier proximal map, damped Newton
# --------------------------------------------------------------------------------------
class Couplings(NamedTuple):
    """Per-step couplings of the implicit part (already multiplied by the step τ).

    gap: (N−1,) c_i of −Σ c_i log(y_{i+1} − y_i) (chiral: also of −Σ c_i log(y_{i+1} + y_i));
    origin: (N,) c0_i of −Σ c0_i log y_i, or None for the DBM (no origin, no mirror images).
    """

    gap: Array
    origin: Array | None = None

    def scale(self, theta):
        return Couplings(theta * self.gap, None if self.origin is None else theta * self.origin)


def _inv_weighted(cw, x):
    """(c/x, c/x²), zero where c == 0 (no barrier on that term)."""
    on = cw > 0
    ix = _safe_recip(x)
    return jnp.where(on, cw * ix, 0.0), jnp.where(on, cw * ix * ix, 0.0)


def _barrier_terms(y, cp: Couplings):
    """Gradient and Hessian of the barrier  −Σ c_i log g_i [− Σ c_i log p_i − Σ c0_i log y_i],
    g_i = y_{i+1} − y_i, p_i = y_{i+1} + y_i.

    The Hessian is tridiagonal, diag_i = q_i + w_{i−1} + w_i, off-diagonal −w_i (w ≥ 0, q ≥ 0):
    returns grad (N,), q (N,), w (N−1,).
    """
    zero = jnp.zeros(1, y.dtype)
    c = cp.gap
    g = jnp.diff(y)
    ig, w = _inv_weighted(c, g)  # c/g, c/g²
    grad = jnp.concatenate([ig, zero]) - jnp.concatenate([zero, ig])
    q = jnp.zeros_like(y)
    if cp.origin is None:
        return grad, q, w
    p = y[1:] + y[:-1]
    ip, ip2 = _inv_weighted(c, p)
    grad = grad - jnp.concatenate([ip, zero]) - jnp.concatenate([zero, ip])
    # off-diagonal −(c/g² − c/p²), written without cancellation: 4c y_i y_{i+1}/(g² p²) ≥ 0;
    # the diagonal then has the excess 2c/p² per bond
    w = jnp.where(c > 0, 4.0 * c * y[1:] * y[:-1] * jnp.square(_safe_recip(g) * _safe_recip(p)), 0.0)
    q = 2.0 * (jnp.concatenate([ip2, zero]) + jnp.concatenate([zero, ip2]))
    i0, i02 = _inv_weighted(cp.origin, y)
    return grad - i0, q + i02, w


def _shift(x, k: int, fill):
    """x shifted right by k (k < 0: left), padded with ``fill``."""
    pad = jnp.full((abs(k),), fill, x.dtype)
    return jnp.concatenate([pad, x[:-k]]) if k > 0 else jnp.concatenate([x[-k:], pad])


def _solve_mmatrix(s, w, r):
    """Solve A x = r, A tridiagonal with A_ii = s_i + w_{i−1} + w_i, A_{i,i±1} = −w, s > 0, w ≥ 0.

    Parallel cyclic reduction (log₂N vectorised sweeps, no sequential loop over N, so it suits
    GPUs) written in the excess s_i = A_ii − |off-diagonals|, which stays positive under the
    reduction (Schur complements of a diagonally dominant M-matrix): no cancellation even when
    w ≫ s, as for nearly coincident levels. s, r: (N,), w: (N−1,).
    """
    n = s.shape[0]
    zero = jnp.zeros(1, s.dtype)
    wl = jnp.concatenate([zero, w])  # coupling of row i to row i − k
    wr = jnp.concatenate([w, zero])  # … to row i + k
    k = 1
    while k < n:
        d = s + wl + wr
        d_lo, d_hi = _shift(d, k, 1.0), _shift(d, -k, 1.0)
        a = wl / d_lo  # multiplier of row i − k
        b = wr / d_hi  # multiplier of row i + k
        s = s + a * _shift(s, k, 1.0) + b * _shift(s, -k, 1.0)
        r = r + a * _shift(r, k, 0.0) + b * _shift(r, -k, 0.0)
        wl, wr = a * _shift(wl, k, 0.0), b * _shift(wr, -k, 0.0)
        k *= 2
    return r / (s + wl + wr)


def _pair_gap(gb, c):
    """Gap of an isolated pair after the backward-Euler prox: g − 2c/g = g_b."""
    return 0.5 * (gb + jnp.sqrt(gb**2 + 8.0 * c))


def _prox_guess(b, cp: Couplings, sweeps: int = 2):
    """A strictly feasible start for the Newton iteration of `_prox`.

    Gaps first: each nearest pair split as if alone, then Jacobi sweeps of the gap equation
    g_i = g_b,i + 2c_i/g_i − c_{i−1}/g_{i−1} − c_{i+1}/g_{i+1} (each solved for its positive
    root). Line case: the prox preserves the mean, which fixes the positions. Chiral case:
    level 0 against the origin alone, the gaps stacked on it.
    """
    zero = jnp.zeros(1, b.dtype)
    c = cp.gap
    gb = jnp.diff(b)
    g = _pair_gap(gb, c)
    for _ in range(sweeps):
        cig = c * _safe_recip(g)
        rhs = gb - jnp.concatenate([cig[1:], zero]) - jnp.concatenate([zero, cig[:-1]])
        g = _pair_gap(rhs, c)
    pos = jnp.concatenate([zero, jnp.cumsum(g)])
    if cp.origin is None:
        return pos - jnp.mean(pos) + jnp.mean(b)
    y0 = 0.5 * (b[0] + jnp.sqrt(b[0] ** 2 + 4.0 * cp.origin[0]))
    return pos + y0


def _prox(b, cp: Couplings, tol, max_iter: int):
    """argmin_y ½|y − b|² + barrier(y) (see `_barrier_terms`) by damped Newton steps.

    b: (N,) sorted (chiral: ≥ 0). Returns (y (N,) strictly ordered, iterations, converged).
    Convergence is judged on the full Newton step. The iteration stops unconverged when the
    fraction-to-boundary rule blocks the step (a gap below the float resolution of the
    positions, from a near-zero coupling squeezed by its neighbours: the whole chain would
    wait on it).
    """
    chiral = cp.origin is not None
    n = b.shape[0]
    span = (b[-1] if chiral else b[-1] - b[0]) / n
    # 1e-3 of the mean gap, and no less than what makes tol·floor 4 ulps of the positions:
    # finer changes cannot be represented, and asking for them would never converge
    ulp = jnp.max(jnp.abs(b)) * jnp.finfo(b.dtype).eps
    floor = jnp.maximum(1e-3 * span, 4.0 * ulp / tol) + jnp.finfo(b.dtype).tiny

    def newton(y):
        grad, q, w = _barrier_terms(y, cp)
        delta = -_solve_mmatrix(1.0 + q, w, grad + y - b)
        # fraction-to-boundary: keep every barred gap (and p_i, y_i) positive
        g, dgap = jnp.diff(y), jnp.diff(delta)
        lim = jnp.where((dgap < 0) & (cp.gap > 0), g / jnp.where(dgap < 0, -dgap, 1.0), jnp.inf)
        amax = jnp.min(lim, initial=jnp.inf)
        # convergence: gap changes relative to the gap, or to `floor` for gaps that small
        # (those sit at the float resolution of the positions and need no relative accuracy)
        rel = jnp.abs(dgap) / jnp.maximum(g, floor)
        if chiral:
            p, dp = y[1:] + y[:-1], delta[1:] + delta[:-1]
            limp = jnp.where((dp < 0) & (cp.gap > 0), p / jnp.where(dp < 0, -dp, 1.0), jnp.inf)
            lim0 = jnp.where((delta < 0) & (cp.origin > 0), y / jnp.where(delta < 0, -delta, 1.0), jnp.inf)
            amax = jnp.minimum(amax, jnp.minimum(jnp.min(limp, initial=jnp.inf), jnp.min(lim0, initial=jnp.inf)))
            rel = jnp.concatenate([rel, (jnp.abs(delta[0]) / jnp.maximum(y[0], floor))[None]])
        alpha = jnp.minimum(1.0, 0.95 * amax)
        return y + alpha * delta, jnp.max(rel, initial=0.0), alpha

    def cond(carry):
        _, it, err, alpha = carry
        return (it < max_iter) & (err > tol) & (alpha > 0.05)

    def body(carry):
        y, it, _, _ = carry
        y, err, alpha = newton(y)
        return y, it + 1, err, alpha

    one = jnp.asarray(1.0, b.dtype)
    carry = (_prox_guess(b, cp), jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, b.dtype), one)
    y, it, err, _ = jax.lax.while_loop(cond, body, carry)
    if chiral:
        y = jnp.abs(y)  # zero origin coupling: y_0 may sit at the reflecting origin
    # the last step was taken: an accepted full step of relative size ≤ tol has converged
    return y, it, err <= tol


def _ordered(y, chiral: bool):
    ok = jnp.all(jnp.diff(y) > 0)
    return ok & (y[0] >= 0) if chiral else ok


def _repel(b, cp: Couplings, fallback: Couplings, tol, max_iter: int, rho: float = 0.25):
    """One implicit-midpoint step of the nearest-neighbour repulsion: y = b + F((y + b)/2).

    With m = (y + b)/2 this is m = prox_{c/2}(b), y = 2m − b. For an isolated pair the gap
    becomes g² = g_b² + 4c (with c = Dτ·χ²_β the exact 2×2 law), and ⟨y, y⟩ − ⟨b, b⟩ =
    2⟨m, F(m)⟩ is the exact rate, so the singular part adds no O(τ²)F² error. A gap that the neighbours
    compress (the extrapolation would shrink it below rho × its midpoint value; ~0.2 % of the
    gaps per step at the recommended dt) is widened back to that symmetrically about its
    centre; if some gap still is not positive (clusters, degenerate starts) the whole step
    falls back to backward Euler, y = prox_c(b), which is always ordered. The fallback sits
    in a while_loop so that a batch without such cases never computes it.
    If the solver does not converge (see `_prox`) with the given couplings, the step is redone
    with ``fallback`` couplings (their means: a valid step of the same weak order that only
    lacks the exact 2×2 law for this step).
    Returns (y (N,), Newton iterations).
    """
    chiral = cp.origin is not None
    zero = jnp.zeros(1, b.dtype)

    def attempt(theta, cp):
        # θ-method: m = prox_{θc}(b), y = b + (m − b)/θ  (θ = ½ midpoint, θ = 1 backward Euler)
        m, it, converged = _prox(b, cp.scale(theta), tol, max_iter)
        y = b + (m - b) / theta
        fix = jnp.maximum(rho * jnp.diff(m) - jnp.diff(y), 0.0) * (theta < 1)
        y = y - 0.5 * jnp.concatenate([fix, zero]) + 0.5 * jnp.concatenate([zero, fix])
        if chiral:
            y = jnp.abs(y)  # zero origin coupling: the reflecting origin
        return y, it, converged

    def body(carry):
        _, stage, _, it = carry
        # stage 1: midpoint; 2: backward Euler (midpoint disordered); 3, 4: the same with the
        # fallback couplings (solver not converged)
        stage = stage + 1
        theta = jnp.where(stage % 2 == 1, 0.5, 1.0).astype(b.dtype)
        use = jax.tree_util.tree_map(lambda a, f: jnp.where(stage > 2, f, a), cp, fallback)
        y, it2, converged = attempt(theta, use)
        retry = (stage < 4) & ~converged
        stage = jnp.where(retry & (stage < 3), 2, stage)  # unconverged: go to the fallback couplings
        return y, stage, retry | ~_ordered(y, chiral), it + it2

    # one solver instance: the loop runs once, and again only for a batch in which some
    # replica needs a fallback (θ and the couplings come from the carry: nothing is hoisted)
    carry = (b, jnp.asarray(0, jnp.int32), jnp.asarray(True), jnp.asarray(0, jnp.int32))
    y, _, _, it = jax.lax.while_loop(lambda cr: cr[2] & (cr[1] < 4), body, carry)
    return y, it


def _draw(key, n_normal: int, n_uniform: int, shape, dtype):
    """(n_normal, *shape) standard normals and (n_uniform, *shape) uniforms on (0, 1] from ONE
    threefry call (normals by Box–Muller): random-bit generation dominates compile time."""
    shape = tuple(shape)
    pairs = (n_normal + 1) // 2
    u = jax.random.uniform(key, (2 * pairs + n_uniform,) + shape, dtype)
    u = 1.0 - u  # (0, 1]
    rad = jnp.sqrt(-2.0 * jnp.log(u[:pairs]))
    ang = (2.0 * math.pi) * u[pairs : 2 * pairs]
    z = jnp.concatenate([rad * jnp.cos(ang), rad * jnp.sin(ang)])[:n_normal]
    return z, u[2 * pairs :]


def _chi2_from(x, u, dof):
    """χ² samples with (traced, real, ≥ 0) degrees of freedom ``dof`` from given draws:
    x (C, …) standard normal, u (C + 1, …) uniform on (0, 1].

    Marsaglia–Tsang rejection for Gamma(a), a = dof/2 (a < 1 boosted: Gamma(a + 1)·U^{1/a}),
    with C proposals at once and the first accepted one kept: no loop, and much cheaper than
    jax.random.gamma. Each proposal is accepted with probability ≥ 0.95; if all C are
    rejected the last one's d·v (the Wilson–Hilferty value) is used. dof = 0 gives 0.
    """
    a = 0.5 * jnp.asarray(dof, x.dtype)
    boost = a < 1.0
    a1 = jnp.where(boost, a + 1.0, a)
    d = a1 - 1.0 / 3.0
    cc = 1.0 / jnp.sqrt(9.0 * d)
    v = (1.0 + cc * x) ** 3
    vs = jnp.where(v > 0, v, 1.0)
    ok = (v > 0) & (jnp.log(u[:-1]) < 0.5 * x * x + d - d * vs + d * jnp.log(vs))
    val = d * vs[-1]
    for i in range(x.shape[0] - 2, -1, -1):
        val = jnp.where(ok[i], d * vs[i], val)
    val = jnp.where(boost, val * jnp.exp(jnp.log(u[-1]) / jnp.where(a > 0, a, 1.0)), val)
    return jnp.where(a > 0, 2.0 * val, 0.0)


def chi2(key, dof, shape, candidates: int = 3) -> Array:
    """χ² samples (2·Gamma(dof/2)) of the given shape; ``dof`` traced, broadcastable to it.

    With the default 3 proposals a fraction < 1.3e-4 of the entries takes the Wilson–Hilferty
    approximation (see `_chi2_from`); use more candidates where exactness matters.
    """
    x, u = _draw(key, candidates, candidates + 1, shape, _dtype())
    return _chi2_from(x, u, dof)


# --------------------------------------------------------------------------------------
# exact samplers (Dumitriu–Edelman tridiagonal/bidiagonal models, any β > 0)
# --------------------------------------------------------------------------------------
def _chi(key, dof, shape=()):
    """χ-distributed samples with (possibly traced, non-integer) degrees of freedom ``dof``
    (8 proposals: the approximate fallback has probability < 1e-10)."""
    return jnp.sqrt(chi2(key, dof, shape, candidates=8))


def _tridiag_eigvals(d, e):
    """Eigenvalues of the symmetric tridiagonal matrix (diag d (n,), off-diagonal e (n−1,)):
    dense eigvalsh for small n (cheap to compile), bisection (O(n²)) for large n."""
    if d.shape[0] <= 64:
        return linalg.eigvalsh(jnp.diag(d) + jnp.diag(e, 1) + jnp.diag(e, -1))
    return jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True)


def sample_hermite(key, n: int, beta, scale=1.0) -> Array:
    """Sorted levels (n,) with density ∝ Π_{i<j}|λ_i−λ_j|^β exp(−Σλ²/(2 scale²)), exactly.

    With scale² = D/γ this is the stationary law of the DBM with U = γλ²/2; with
    scale² = 2Dt the law at time t of the free DBM started at 0 (for β = 1: a GOE with
    off-diagonal variance Dt).
    """
    k1, k2 = jax.random.split(key)
    beta = jnp.asarray(beta, _dtype())
    diag = _draw(k1, 1, 0, (n,), _dtype())[0][0]
    dofs = beta * jnp.arange(n - 1, 0, -1, dtype=_dtype())
    off = _chi(k2, dofs, (n - 1,)) / math.sqrt(2.0)
    lam = _tridiag_eigvals(diag, off)
    return jnp.sort(lam) * scale


def sample_laguerre(key, m, n: int, beta, scale2=1.0) -> Array:
    """Sorted eigenvalues (n,) of WᵀW, W m×n with i.i.d. entries whose β real components each
    have variance ``scale2`` (β-Laguerre ensemble; ``m`` may be any real ≥ n − 1 + 1/β).

    With scale2 = Dt it is the law at time t of the Wishart process started at W = 0.
    """
    k1, k2 = jax.random.split(key)
    beta = jnp.asarray(beta, _dtype())
    d = _chi(k1, beta * (m - jnp.arange(n, dtype=_dtype())), (n,))
    e = _chi(k2, beta * jnp.arange(n - 1, 0, -1, dtype=_dtype()), (n - 1,))
    # B lower bidiagonal (diag d, subdiag e); eigenvalues of BBᵀ (tridiagonal)
    tdiag = d**2 + jnp.concatenate([jnp.zeros(1, d.dtype), e**2])
    toff = d[:-1] * e
    x = _tridiag_eigvals(tdiag, toff)
    return jnp.sort(jnp.maximum(x, 0.0)) * scale2


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------
class LevelState(NamedTuple):
    """State of an eigenvalue process for one replica.

    y: (N,) the integrated coordinates, labelled (λ for DBM, singular values s for Wishart);
    substeps, newton: () int32, sub-steps and Newton iterations used by the last step.
    """

    y: Array
    substeps: Array
    newton: Array


def _count():
    return jnp.asarray(0, jnp.int32)


def _first_bad(values, ok) -> float:
    values = np.asarray(values, dtype=float).reshape(-1)
    bad = values[~np.asarray(ok).reshape(-1)]
    return float(bad[0]) if bad.size else float(values[0])


class Process:
    """Base class: a frozen dataclass of static settings; pure single-replica functions."""

    sweepable: ClassVar[tuple[str, ...]] = ()

    def init(self, key, hp) -> PyTree:
        raise NotImplementedError

    def step(self, state, key, hp) -> PyTree:
        raise NotImplementedError

    def observe(self, state, hp) -> dict[str, Array]:
        raise NotImplementedError

    def defaults(self) -> dict[str, float]:
        """Default per-replica parameters: the dataclass fields named in ``sweepable``."""
        return {name: float(getattr(self, name)) for name in self.sweepable}

    def validate(self, hp) -> None:
        """Check concrete hp values (scalars or arrays) on the host; raise ValueError."""
        hp = {**self.defaults(), **dict(hp)}
        checks = [("beta", lambda v: v > 0, "> 0"), ("D", lambda v: v >= 0, ">= 0"),
                  ("dt", lambda v: v > 0, "> 0")]
        for name in hp:
            if name in self.sweepable:
                v = np.asarray(hp[name], dtype=float)
                if not np.all(np.isfinite(v)):
                    raise ValueError(f"{name} must be finite, got {name}={_first_bad(v, np.isfinite(v))}")
        for name, test, text in checks:
            if name in self.sweepable and name in hp:
                v = np.asarray(hp[name], dtype=float)
                ok = test(v)
                if not np.all(ok):
                    raise ValueError(f"{name} must be {text}, got {name}={_first_bad(v, ok)}")
        self._validate_more(hp)

    def _validate_more(self, hp) -> None:
        pass

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _check_common(obj, n_min: int = 2):
    if not isinstance(obj.n, (int, np.integer)) or obj.n < n_min:
        raise ValueError(f"n must be an integer >= {n_min}, got n={obj.n!r}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")


class _LogGas(Process):
    """Shared integrator of the ordered log-gas processes (DBM, Wishart singular values)."""

    chiral: ClassVar[bool] = False

    # -- process-specific pieces ------------------------------------------------------
    def _coeffs(self, hp):
        """Per unit time: (u, dof0, noise variance rate, OU rate r).

        The nearest-pair coupling of a step τ is c_i = u·τ·X_i, X_i ~ χ²_β (mean κτ = βuτ);
        the origin coupling (chiral only) c0_i = u·τ·Y_i, Y_i ~ χ²_{dof0}.
        """
        raise NotImplementedError

    def _nonlinear_force(self, y, hp):
        raise NotImplementedError

    def _euler(self, y, key, hp):
        raise NotImplementedError

    # -- the split scheme -------------------------------------------------------------
    def _split(self, y, key, hp):
        dt = jnp.asarray(hp["dt"], y.dtype)
        unit, dof0, noise, r = (jnp.asarray(v, y.dtype) for v in self._coeffs(hp))
        beta = jnp.asarray(hp["beta"], y.dtype)
        kappa = beta * unit
        n = y.shape[0]
        tol = jnp.asarray(self.newton_tol, y.dtype)

        cand = 3  # proposals per χ² sample
        blocks = 2 if self.chiral else 1

        def draws(key):
            # all randomness of a sub-step at once: noise ξ (N,) and the χ² proposals
            return _draw(key, 1 + blocks * cand, blocks * (cand + 1), (n,), y.dtype)

        def couplings(z, u, tau):
            # nearest pairs: the exact 2×2 law, |off-diagonal|² = uτ·χ²_β (β real components);
            # pair_noise=False uses its mean βuτ. Returns (couplings, their means).
            mean = Couplings(jnp.full((n - 1,), kappa * tau),
                             jnp.full((n,), unit * tau * dof0) if self.chiral else None)
            if not self.pair_noise:
                return mean, mean
            gap = unit * tau * _chi2_from(z[1 : 1 + cand, : n - 1], u[: cand + 1, : n - 1], beta)
            if not self.chiral:
                return Couplings(gap), mean
            origin = unit * tau * _chi2_from(z[1 + cand :], u[cand + 1 :], dof0)
            return Couplings(gap, origin), mean

        def body(carry):
            y, t_left, k, n_sub, n_newton = carry
            # sub-step cap (O(N)): κτ ≤ θ·(mean gap)², and the nonlinear force changes no gap
            # by more than θ·max(gap, mean gap); a fully degenerate y (mean gap 0) has no scale
            gy = jnp.diff(y)
            mean_gap = y[-1] / n if self.chiral else (y[-1] - y[0]) / (n - 1)
            cap = jnp.where((mean_gap > 0) & (kappa > 0), mean_gap**2 / jnp.where(kappa > 0, kappa, 1.0), jnp.inf)
            if self.potential.nonlinear is not None:
                rate = jnp.abs(jnp.diff(self._nonlinear_force(y, hp)))
                scale = jnp.maximum(gy, mean_gap)
                cap = jnp.minimum(cap, jnp.min(jnp.where(rate > 0, scale / jnp.where(rate > 0, rate, 1.0), jnp.inf)))
            tau_cap = self.theta * cap
            # invert τ(h) = h·(e^{2rh} − 1)/(2rh): h = τ·log(1 + 2rτ)/(2rτ), no finite h if 1 + 2rτ ≤ 0
            x = 2.0 * r * tau_cap
            ok = (x > -1.0) & jnp.isfinite(tau_cap)
            h_cap = jnp.where(ok, tau_cap * _log1p_over(jnp.where(ok, x, 0.0)), jnp.inf)
            last = (n_sub + 1 >= self.max_substeps) | (h_cap >= t_left)
            h = jnp.where(last, t_left, h_cap)
            tau = h * _expm1_over(2.0 * r * h)
            z, u = draws(jax.random.fold_in(k, n_sub))
            # 1. noise (reflected at 0 for singular values), relabelled in order
            b = y + jnp.sqrt(noise * tau) * z[0]
            if self.chiral:
                b = jnp.abs(b)
            b = _resort(b)
            # 2. the explicit field at the noisy positions: pairs |i − j| ≥ 2 (+ mirror images)
            #    and the nonlinear force. Evaluated after the noise, so that the two members of
            #    a pair that the noise brings close feel every other level alike (the nearer
            #    one partly through the implicit part): no O(√τ) squeeze of close pairs.
            b = b + tau * (kappa * _far_sum(b, y, self.chiral) + self._nonlinear_force(b, hp))
            if self.chiral:
                b = jnp.abs(b)
            b = _resort(b)
            # 3. nearest neighbours implicitly, 4. the exact OU contraction
            y, it = _repel(b, *couplings(z, u, tau), tol, self.max_newton)
            y = jnp.exp(-r * h) * y
            t_left = jnp.where(last, jnp.zeros_like(t_left), t_left - h)
            return y, t_left, k, n_sub + 1, n_newton + it

        def cond(carry):
            return carry[1] > 0

        carry = (y, dt, key, _count(), _count())
        y, _, _, n_sub, n_newton = jax.lax.while_loop(cond, body, carry)
        return LevelState(y, n_sub, n_newton)

    def step(self, state: LevelState, key, hp) -> LevelState:
        """One step of length hp["dt"].  state.y: (N,) -> (N,)."""
        if self.scheme == "euler":
            return LevelState(self._euler(state.y, key, hp), _count(), _count())
        return self._split(state.y, key, hp)


# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DysonBM(_LogGas):
    """β-Dyson Brownian motion of ``n`` levels (one replica; no batch axis).

        dλ_i = −U'(λ_i) dt + β D Σ_{j≠i} 1/(λ_i − λ_j) dt + sqrt(2D) dB_i

    potential: "quadratic" (γλ²/2), "quartic" (γλ²/2 + gλ⁴/4), "free", a `Potential`, or a
        callable U(lam, hp) of one scalar level.
    start: "zero" (all levels at 0, the degenerate start, split by the first step),
        "semicircle" (exact draw from the stationary Coulomb gas of U = γλ²/2, whose density
        tends to the semicircle of radius sqrt(2βND/γ)), "given" (``initial_levels``).
    scheme: "split" (stable; see the module docstring) or "euler" (plain Euler–Maruyama).
    hp (per replica): D ≥ 0, beta > 0, gamma, g, dt > 0. Defaults are the fields below.
    observe -> {"levels": (N,) sorted, "min_gap": () min λ_{i+1} − λ_i of the labelled levels
        (≤ 0 after a crossing), "substeps": () int32}.
    """

    n: int
    potential: Any = "quadratic"
    start: str = "zero"
    scheme: str = "split"
    initial_levels: tuple[float, ...] | None = None
    D: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    g: float = 0.0
    dt: float = 1e-3
    theta: float = 0.5
    max_substeps: int = 16
    max_newton: int = 50
    newton_tol: float = 3e-3
    pair_noise: bool = True

    sweepable: ClassVar[tuple[str, ...]] = ("D", "beta", "gamma", "g", "dt")
    INITS: ClassVar[tuple[str, ...]] = ("zero", "semicircle", "given")
    SCHEMES: ClassVar[tuple[str, ...]] = ("split", "euler")

    def __post_init__(self):
        _check_common(self)
        _check_choice("start", self.start, self.INITS)
        _check_choice("scheme", self.scheme, self.SCHEMES)
        pot = get_potential(self.potential)
        object.__setattr__(self, "potential", pot)
        _check_potential(pot, self.defaults())
        if self.start == "given":
            lv = self.initial_levels
            if lv is None or len(lv) != self.n or not np.all(np.isfinite(np.asarray(lv, dtype=float))):
                raise ValueError(f"initial_levels must be {self.n} finite numbers for start='given', got initial_levels={lv!r}")
            object.__setattr__(self, "initial_levels", tuple(float(v) for v in lv))
        if self.start == "semicircle" and pot.quadratic is None:
            raise ValueError(f"start='semicircle' needs a potential with a quadratic part, got potential={pot.name!r}")
        if not 0 < self.theta < 1:
            raise ValueError(f"theta must be in (0, 1), got theta={self.theta!r}")
        if self.max_substeps < 1:
            raise ValueError(f"max_substeps must be >= 1, got max_substeps={self.max_substeps!r}")
        self.validate(self.defaults())

    def _validate_more(self, hp):
        _check_confining(self.potential, hp)
        if self.start == "semicircle":
            v = np.asarray(hp[self.potential.quadratic], dtype=float)
            if not np.all(v > 0):
                name = self.potential.quadratic
                raise ValueError(f"{name} must be > 0 for start='semicircle', got {name}={_first_bad(v, v > 0)}")
        _check_potential(self.potential, hp)

    def _coeffs(self, hp):
        D = jnp.asarray(hp["D"])
        return D, 0.0, 2.0 * D, self.potential.stiffness(hp)

    def _nonlinear_force(self, y, hp):
        return self.potential.nonlinear_force(y, hp)

    def init(self, key, hp) -> LevelState:
        dtype = _dtype()
        if self.start == "zero":
            y = jnp.zeros(self.n, dtype)
        elif self.start == "given":
            y = jnp.sort(jnp.asarray(self.initial_levels, dtype))
        else:
            scale = jnp.sqrt(hp["D"] / self.potential.stiffness(hp))
            y = sample_hermite(key, self.n, hp["beta"], scale)
        return LevelState(y, _count(), _count())

    def _euler(self, y, key, hp):
        h = hp["dt"]
        mask = _offdiag_mask(self.n)
        d = y[:, None] - y[None, :]
        rep = jnp.sum(jnp.where(mask, 1.0 / jnp.where(mask, d, 1.0), 0.0), axis=1)
        drift = self.potential.force(y, hp) + hp["beta"] * hp["D"] * rep
        return y + h * drift + jnp.sqrt(2.0 * hp["D"] * h) * jax.random.normal(key, y.shape, y.dtype)

    def observe(self, state: LevelState, hp) -> dict[str, Array]:
        y = state.y
        return {"levels": jnp.sort(y), "min_gap": jnp.min(jnp.diff(y)), "substeps": state.substeps}


# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class WishartProcess(_LogGas):
    """Eigenvalues x_i of X = WᵀW, W an m×n (m ≥ n) Brownian matrix (one replica).

        dx_i = β D [ m + Σ_{j≠i} (x_i + x_j)/(x_i − x_j) ] dt − U'(x_i) dt + 2 sqrt(D x_i) dB_i

    integrated in s_i = sqrt(x_i) (see the module docstring). β = 1 is real W; any β with
    β(m − n + 1) ≥ 1 is accepted (the singular values then never need an attractive origin).
    potential: "free" (default), "quadratic" U = γx²/2 (W decays at rate γ/2), "quartic",
        a `Potential` or a callable U(x, hp).
    start: "zero" (W = 0: all x = 0), "stationary" (exact draw, quadratic potential: W entries
        of variance D/γ), "given" (``initial_levels`` = x, non-negative).
    observe -> {"levels": (N,) sorted x, "min_gap": () min x_{i+1} − x_i, "substeps": () int32}.
    """

    m: int
    n: int
    potential: Any = "free"
    start: str = "zero"
    scheme: str = "split"
    initial_levels: tuple[float, ...] | None = None
    D: float = 1.0
    beta: float = 1.0
    gamma: float = 0.0
    g: float = 0.0
    dt: float = 1e-3
    theta: float = 0.5
    max_substeps: int = 16
    max_newton: int = 50
    newton_tol: float = 3e-3
    pair_noise: bool = True

    sweepable: ClassVar[tuple[str, ...]] = ("D", "beta", "gamma", "g", "dt")
    chiral: ClassVar[bool] = True
    INITS: ClassVar[tuple[str, ...]] = ("zero", "stationary", "given")
    SCHEMES: ClassVar[tuple[str, ...]] = ("split", "euler")

    def __post_init__(self):
        _check_common(self)
        if not isinstance(self.m, (int, np.integer)) or self.m < self.n:
            raise ValueError(f"m must be an integer >= n = {self.n}, got m={self.m!r}")
        _check_choice("start", self.start, self.INITS)
        _check_choice("scheme", self.scheme, self.SCHEMES)
        pot = get_potential(self.potential)
        object.__setattr__(self, "potential", pot)
        _check_potential(pot, self.defaults())
        if self.start == "given":
            lv = self.initial_levels
            arr = np.asarray(lv if lv is not None else [], dtype=float)
            if lv is None or len(lv) != self.n or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"initial_levels must be {self.n} finite numbers >= 0 for start='given', got initial_levels={lv!r}")
            object.__setattr__(self, "initial_levels", tuple(float(v) for v in lv))
        if self.start == "stationary" and pot.quadratic is None:
            raise ValueError(f"start='stationary' needs a potential with a quadratic part, got potential={pot.name!r}")
        if not 0 < self.theta < 1:
            raise ValueError(f"theta must be in (0, 1), got theta={self.theta!r}")
        if self.max_substeps < 1:
            raise ValueError(f"max_substeps must be >= 1, got max_substeps={self.max_substeps!r}")
        self.validate(self.defaults())

    def _validate_more(self, hp):
        beta = np.asarray(hp["beta"], dtype=float)
        ok = beta * (self.m - self.n + 1) >= 1 - 1e-12
        if not np.all(ok):
            raise ValueError(f"beta must satisfy beta*(m - n + 1) >= 1 for the Wishart process, got beta={_first_bad(beta, ok)}")
        _check_confining(self.potential, hp)
        if self.start == "stationary":
            name = self.potential.quadratic
            v = np.asarray(hp[name], dtype=float)
            if not np.all(v > 0):
                raise ValueError(f"{name} must be > 0 for start='stationary', got {name}={_first_bad(v, v > 0)}")
        _check_potential(self.potential, hp)

    def _coeffs(self, hp):
        D = jnp.asarray(hp["D"])
        dof0 = jnp.maximum(hp["beta"] * (self.m - self.n + 1) - 1.0, 0.0)  # Bessel dimension − 1
        return 0.5 * D, dof0, D, 0.5 * self.potential.stiffness(hp)

    def _nonlinear_force(self, s, hp):
        # dx = −U'(x) dt  ⇒  ds = −U'(s²)/(2s) dt
        f = self.potential.nonlinear_force(s * s, hp)
        return 0.5 * f * _safe_recip(s)

    def init(self, key, hp) -> LevelState:
        dtype = _dtype()
        if self.start == "zero":
            s = jnp.zeros(self.n, dtype)
        elif self.start == "given":
            s = jnp.sqrt(jnp.sort(jnp.asarray(self.initial_levels, dtype)))
        else:
            v = hp["D"] / self.potential.stiffness(hp)
            s = jnp.sqrt(sample_laguerre(key, self.m, self.n, hp["beta"], v))
        return LevelState(s, _count(), _count())

    def _euler(self, s, key, hp):
        # textbook Euler–Maruyama in x = s²
        h, D = hp["dt"], hp["D"]
        x = s * s
        mask = _offdiag_mask(self.n)
        num = x[:, None] + x[None, :]
        den = x[:, None] - x[None, :]
        rep = jnp.sum(jnp.where(mask, num / jnp.where(mask, den, 1.0), 0.0), axis=1)
        drift = hp["beta"] * D * (self.m + rep) + self.potential.force(x, hp)
        x = x + h * drift + 2.0 * jnp.sqrt(D * x * h) * jax.random.normal(key, x.shape, x.dtype)
        return jnp.sqrt(x)  # NaN once some x < 0: the failure this scheme is kept to show

    def observe(self, state: LevelState, hp) -> dict[str, Array]:
        x = state.y * state.y
        return {"levels": jnp.sort(x), "min_gap": jnp.min(jnp.diff(x)), "substeps": state.substeps}


# --------------------------------------------------------------------------------------
# matrix-space references (exact Ornstein–Uhlenbeck transitions)
# --------------------------------------------------------------------------------------
def _quaternion_to_complex(a, b, c, d):
    """rows×cols quaternion matrix a + bi + cj + dk -> 2rows×2cols complex matrix whose 2×2
    blocks are [[a+bi, c+di], [−c+di, a−bi]] (a *-homomorphism: adjoints map to adjoints)."""
    rows, cols = a.shape
    top = jnp.stack([a + 1j * b, c + 1j * d], axis=-1)  # (rows, cols, 2)
    bot = jnp.stack([-c + 1j * d, a - 1j * b], axis=-1)
    blocks = jnp.stack([top, bot], axis=-2)  # (rows, cols, 2, 2): [.., block row, block col]
    return jnp.swapaxes(blocks, 1, 2).reshape(2 * rows, 2 * cols)


def _gaussian_matrix(key, rows: int, cols: int, beta: int):
    """Entries with β i.i.d. N(0, 1) real components: real (β=1), complex (β=2) or, for β=4,
    the 2rows×2cols complex representation of a quaternion matrix."""
    dtype = _dtype()
    parts = jax.random.normal(key, (beta, rows, cols), dtype)
    if beta == 1:
        return parts[0]
    if beta == 2:
        return parts[0] + 1j * parts[1]
    return _quaternion_to_complex(*parts)


def _paired(e, beta: int):
    """Eigenvalues of a quaternion matrix's complex form come in pairs: average each pair."""
    e = jnp.sort(e)
    return 0.5 * (e[0::2] + e[1::2]) if beta == 4 else e


@dataclasses.dataclass(frozen=True)
class MatrixDBM(Process):
    """Matrix reference for the DBM with U = γλ²/2 (β ∈ {1, 2, 4}; one replica).

        dH = −γ H dt + sqrt(D) dG,   dG: Gaussian Hermitian increment, diagonal N(0, 2dt) real,
                                     off-diagonal entries with β real components each N(0, dt),

    advanced by the exact transition H ← e^{−γh} H + sqrt(D(1 − e^{−2γh})/(2γ)) G. Its sorted
    eigenvalues follow `DysonBM` with the same (β, D, γ); stationary radius sqrt(2βnD/γ).
    state: H, (n, n) real / complex, or (2n, 2n) complex for β = 4.
    """

    n: int
    beta: int = 1
    start: str = "zero"
    initial_levels: tuple[float, ...] | None = None
    D: float = 1.0
    gamma: float = 1.0
    dt: float = 1e-3

    sweepable: ClassVar[tuple[str, ...]] = ("D", "gamma", "dt")
    INITS: ClassVar[tuple[str, ...]] = ("zero", "semicircle", "given")

    def __post_init__(self):
        _check_common(self, n_min=1)
        _check_choice("beta", self.beta, (1, 2, 4))
        _check_choice("start", self.start, self.INITS)
        if self.start == "given" and (self.initial_levels is None or len(self.initial_levels) != self.n):
            raise ValueError(f"initial_levels must be {self.n} numbers for start='given', got initial_levels={self.initial_levels!r}")
        self.validate(self.defaults())

    def _validate_more(self, hp):
        _check_rate(hp)
        if self.start == "semicircle":
            v = np.asarray(hp["gamma"], dtype=float)
            if not np.all(v > 0):
                raise ValueError(f"gamma must be > 0 for start='semicircle', got gamma={_first_bad(v, v > 0)}")

    def _noise(self, key):
        a = _gaussian_matrix(key, self.n, self.n, self.beta)
        return (a + jnp.conj(a.T)) / math.sqrt(2.0)

    def _zero(self):
        size = self.n * (2 if self.beta == 4 else 1)
        return jnp.zeros((size, size), _dtype() if self.beta == 1 else jnp.result_type(_dtype(), jnp.complex64))

    def init(self, key, hp):
        H = self._zero()
        if self.start == "given":
            lv = jnp.asarray(self.initial_levels, _dtype())
            lv = jnp.repeat(lv, 2) if self.beta == 4 else lv
            return H + jnp.diag(lv).astype(H.dtype)
        if self.start == "semicircle":
            return H + jnp.sqrt(hp["D"] / (2.0 * hp["gamma"])).astype(H.real.dtype) * self._noise(key)
        return H

    def step(self, H, key, hp):
        """Exact OU transition over hp["dt"]."""
        h, gam = hp["dt"], hp["gamma"]
        a = jnp.exp(-gam * h)
        var = hp["D"] * h * jnp.exp(-2.0 * gam * h) * _expm1_over(2.0 * gam * h)  # D(1 − e^{−2γh})/(2γ)
        return (a * H + jnp.sqrt(var) * self._noise(key)).astype(H.dtype)

    def observe(self, H, hp):
        return {"levels": _paired(linalg.eigvalsh(H), self.beta)}


@dataclasses.dataclass(frozen=True)
class MatrixWishart(Process):
    """Matrix reference for the Wishart process (β ∈ {1, 2, 4}; one replica).

        dW = −(γ/2) W dt + sqrt(D) dB   (W m×n; each real component of an entry),

    advanced exactly: W ← e^{−γh/2} W + sqrt(D(1 − e^{−γh})/γ) G. observe: sorted eigenvalues
    of WᵀW (x_i, n of them). γ = 0 is plain Brownian motion of the entries. From W = 0 at time
    t the spectrum is Marchenko–Pastur-like with σ² = m·D·t, c = n/m.
    """

    m: int
    n: int
    beta: int = 1
    start: str = "zero"
    D: float = 1.0
    gamma: float = 0.0
    dt: float = 1e-3

    sweepable: ClassVar[tuple[str, ...]] = ("D", "gamma", "dt")
    INITS: ClassVar[tuple[str, ...]] = ("zero", "stationary")

    def __post_init__(self):
        _check_common(self, n_min=1)
        if not isinstance(self.m, (int, np.integer)) or self.m < self.n:
            raise ValueError(f"m must be an integer >= n = {self.n}, got m={self.m!r}")
        _check_choice("beta", self.beta, (1, 2, 4))
        _check_choice("start", self.start, self.INITS)
        self.validate(self.defaults())

    def _validate_more(self, hp):
        _check_rate(hp)
        if self.start == "stationary":
            v = np.asarray(hp["gamma"], dtype=float)
            if not np.all(v > 0):
                raise ValueError(f"gamma must be > 0 for start='stationary', got gamma={_first_bad(v, v > 0)}")

    def init(self, key, hp):
        W = _gaussian_matrix(key, self.m, self.n, self.beta)
        if self.start == "zero":
            return jnp.zeros_like(W)
        return jnp.sqrt(hp["D"] / hp["gamma"]).astype(W.real.dtype) * W

    def step(self, W, key, hp):
        h, gam = hp["dt"], hp["gamma"]
        var = hp["D"] * h * jnp.exp(-gam * h) * _expm1_over(gam * h)  # D(1 − e^{−γh})/γ
        return (jnp.exp(-0.5 * gam * h) * W + jnp.sqrt(var) * _gaussian_matrix(key, self.m, self.n, self.beta)).astype(W.dtype)

    def observe(self, W, hp):
        x = linalg.eigvalsh(jnp.conj(W.T) @ W)
        return {"levels": _paired(x, self.beta)}


# --------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------
def mean_spacing(n: int, D=1.0, gamma=1.0, beta=1.0):
    """Mean level spacing at the centre of the stationary semicircle, s̄ = πR/(2N),
    R = sqrt(2βND/γ); s̄² = π²βD/(2γN)."""
    return math.pi * math.sqrt(2.0 * beta * n * D / gamma) / (2.0 * n)


def recommended_dt(n: int, D=1.0, gamma=1.0, beta=1.0, accuracy: float = 0.05) -> float:
    """dt = accuracy · min(s̄²/D, 0.1/γ) for the DBM with U = γλ²/2 (s̄: `mean_spacing`).

    The first bound resolves the local level dynamics (spacing statistics), the second the
    global relaxation (rate 2γ), which is the tighter one for N ≲ 30β. At the default 0.05 the
    stationary ⟨Σλ²⟩ is biased by +0.2…0.4 % (N = 16…64) and the spacing statistics agree
    with the exact ensemble within sampling error; the biases are O(dt).
    """
    return accuracy * min(mean_spacing(n, D, gamma, beta) ** 2 / D, 0.1 / gamma)


def temperature_from_sgd(lr, batch_size):
    """The SGD temperature T = lr/|B| (SCIENCE.md §1): the one combination the noise depends on."""
    return lr / batch_size


def diffusion_from_noise(lr, batch_size, noise_var, symmetric_part: bool = False):
    """The DBM/Wishart D of an SGD run, in the time τ = lr·(step count).

    One SGD step W ← W − lr(∇L + ξ), Var ξ_e = noise_var/|B| per entry e, is an
    Euler–Maruyama step of length dτ = lr of dW = −∇L dτ + sqrt(lr/|B|) Σ^{1/2} dB_τ: each entry
    receives noise of variance lr²·noise_var/|B| = dτ·(lr·noise_var/|B|). The processes here
    take "entry (off-diagonal) variance D dτ", so

        D = lr·noise_var/|B| = T·noise_var,

    with ``noise_var`` the per-sample variance of an off-diagonal entry of a symmetric noise
    (its diagonal then has 2·noise_var, the GOE shape) or of an entry of W for the Wishart
    process. Example (teacher–student, SCIENCE.md §3.1): noise_var = A², drift rate γ = 1, so
    the stationary off-diagonal variance D/(2γ) = lr·A²/(2|B|), the small-lr τ².
    If the eigenvalues are those of the symmetric part (W + Wᵀ)/2 of a matrix with i.i.d.
    entry noise ``noise_var`` (``symmetric_part=True``), the off-diagonal variance halves:
    D = lr·noise_var/(2|B|).
    """
    d = lr * noise_var / batch_size
    return 0.5 * d if symmetric_part else d


# --------------------------------------------------------------------------------------
# a standalone driver
# --------------------------------------------------------------------------------------
def _replica_hp(process: Process, hp: Mapping, n_replicas: int) -> dict[str, Array]:
    merged = {**process.defaults(), **dict(hp)}
    out = {}
    for name, value in merged.items():
        v = jnp.asarray(value, _dtype())
        if v.ndim == 0:
            v = jnp.full((n_replicas,), v)
        if v.shape != (n_replicas,):
            raise ValueError(f"hp[{name!r}] must be a scalar or have shape ({n_replicas},), got shape {v.shape}")
        out[name] = v
    return out


@functools.partial(jax.jit, static_argnames=("process", "n_snapshots"))
def _simulate(process, hp, keys, n_snapshots, save_every):
    # save_every is traced (a fori_loop bound): one compiled program per number of snapshots
    def one(key, hp):
        k_init, k_run = jax.random.split(key)
        state = process.init(k_init, hp)

        def outer(state, seg):
            def inner(i, state):
                return process.step(state, jax.random.fold_in(k_run, seg * save_every + i), hp)

            state = jax.lax.fori_loop(0, save_every, inner, state)
            return state, process.observe(state, hp)

        return jax.lax.scan(outer, state, jnp.arange(n_snapshots))

    return jax.vmap(one)(keys, hp)


def simulate(process: Process, hp: Mapping, key, n_replicas: int, n_steps: int, save_every: int = 1,
             return_state: bool = False):
    """Run ``n_replicas`` independent replicas for ``n_steps`` steps.

    hp: {name: scalar or (R,) array}; missing sweepable names take the process defaults.
    Replica r uses ``fold_in(key, r)`` (its numbers do not depend on R), step t
    ``fold_in(run_key, t)``. Returns {name: (R, S, …)} with S = n_steps/save_every snapshots
    taken after steps save_every, 2·save_every, …, plus "time" (R, S); with
    ``return_state`` also the final state (R, …).
    """
    if n_steps < 1 or save_every < 1 or n_steps % save_every:
        raise ValueError(f"n_steps must be a positive multiple of save_every, got n_steps={n_steps}, save_every={save_every}")
    process.validate(hp)
    hp_r = _replica_hp(process, hp, n_replicas)
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(n_replicas))
    state, obs = _simulate(process, hp_r, keys, n_steps // save_every, jnp.asarray(save_every, jnp.int32))
    steps = save_every * jnp.arange(1, n_steps // save_every + 1)
    obs = dict(obs)
    obs["time"] = hp_r["dt"][:, None] * steps[None, :]
    return (obs, state) if return_state else obs
