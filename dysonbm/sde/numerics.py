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


def _offdiag_mask(n: int):
    i = jax.lax.broadcasted_iota(jnp.int32, (n, n), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (n, n), 1)
    return i != j


def _far_sum(b: Array, y: Array, mirror: bool, rho: float = 0.25, weights: Array | None = None) -> Array:
    """Σ_{|i−j|≥2} w_ij/(b_i − b_j) (+ 1/(b_i + b_j) if mirror) at the sorted noisy positions b,
    w_ij = 1 or ``weights`` (N, N) symmetric; the distance of a pair two apart, and every mirror
    distance b_i + b_j, is floored at rho × its value in the sorted pre-noise y.

    The floor bounds the kick of a cluster of three levels made by the noise alone: the spread
    of three noisy levels has a density ∝ d at d = 0, so 1/d of the outer pair would have an
    infinite variance. Pairs further apart close only when three or more gaps close at once
    (a density ∝ d² or less: a finite variance); they are summed unfloored, which halves the
    cost of the pair sum. Pairs coincident in y (the degenerate start) contribute 0.
    b, y: (N,) -> (N,).
    """
    n = b.shape[0]
    i = jax.lax.broadcasted_iota(jnp.int32, (n, n), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (n, n), 1)
    db = b[:, None] - b[None, :]
    apart = (jnp.abs(i - j) >= 3) & (y[:, None] != y[None, :]) & (db != 0)
    num = 1.0 if weights is None else weights
    # selected around the division: dividing by a masked inf instead costs twice as much on CPU
    out = jnp.sum(jnp.where(apart, num / jnp.where(apart, db, 1.0), 0.0), axis=1)
    # pairs two apart, floored: both sorted, so b_{i+2} − b_i ≥ 0 and y_{i+2} − y_i ≥ 0
    dy2 = y[2:] - y[:-2]
    inv = jnp.where(dy2 > 0, 1.0 / jnp.where(dy2 > 0, jnp.maximum(b[2:] - b[:-2], rho * dy2), 1.0), 0.0)
    if weights is not None:
        inv = jnp.diagonal(weights, offset=2) * inv
    zero = jnp.zeros(min(2, n), b.dtype)
    out = out + jnp.concatenate([zero, inv]) - jnp.concatenate([inv, zero])
    if mirror:
        far = jnp.abs(i - j) >= 2
        py = y[:, None] + y[None, :]
        p = jnp.maximum(b[:, None] + b[None, :], rho * py)
        use = far & (py > 0)
        out = out + jnp.sum(jnp.where(use, 1.0 / jnp.where(use, p, 1.0), 0.0), axis=1)
    return out


def _resort(y: Array) -> Array:
    """Sort a nearly sorted (N,) vector by odd–even transposition passes until ordered.

    After the noise sub-step only a few neighbours are out of order, so one or two passes
    (O(N) each) replace a full sort; any input still ends sorted (at most N passes).
    """
    n = y.shape[0]
    if n < 2:
        return y

    def half_pass(y, start):
        # compare–exchange of the pairs (start, start + 1), (start + 2, start + 3), …: a min and
        # a max per pair (cheaper than shifting the vector both ways and selecting)
        m = (n - start) // 2 * 2
        pairs = y[start : start + m].reshape(-1, 2)
        lo = jnp.minimum(pairs[:, 0], pairs[:, 1])
        hi = jnp.maximum(pairs[:, 0], pairs[:, 1])
        return jnp.concatenate([y[:start], jnp.stack([lo, hi], axis=1).reshape(-1), y[start + m :]])

    def body(carry):
        y, _ = carry
        y = half_pass(half_pass(y, 0), 1)
        return y, jnp.any(jnp.diff(y) < 0)

    y, _ = jax.lax.while_loop(lambda c: c[1], body, (y, jnp.any(jnp.diff(y) < 0)))
    return y
