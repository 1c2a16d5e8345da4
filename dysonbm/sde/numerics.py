"""Small numerical helpers of the level-SDE integrators (stable expm1/log1p ratios, masks, far field, re-sorting)."""

from __future__ import annotations


import jax
import jax.numpy as jnp


Array = jax.Array


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
    # both sorted: b_i − b_j and y_i − y_j share the sign of i − j, so the floored distance is
    # b_i − b_j or ρ(y_i − y_j) (fewer operations per pair than |·|, max and a sign)
    db = b[:, None] - b[None, :]
    dy = y[:, None] - y[None, :]
    d = jnp.where(jnp.abs(db) < rho * jnp.abs(dy), rho * dy, db)
    out = jnp.sum(1.0 / jnp.where(far & (dy != 0), d, jnp.inf), axis=1)
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
