"""Counter-based random numbers: many draws for the price of one key.

``jax.random.normal(key, shape)`` runs threefry (20 rounds) for every 64 bits it returns,
which bounds models that draw thousands of normals per step (the RBM's Gibbs sweeps). Here
one threefry call turns ``key`` into two 32-bit words ``k0, k1``, and draw ``i`` of an array
is the integer hash

    bits_i = h(h(i ⊕ k0) + k1),    h = Wellons' `lowbias32` (two multiply–xorshift rounds)

of its position ``i`` in row-major order: a pure function of the key and the index, so a
draw never depends on how the work is chunked. A uniform is the midpoint of the cell of
(0, 1) that the top 23 bits pick out of 2²³, exact in float32 (never 0 or 1). Normals 2k and
2k+1 are the Box–Muller pair of words 2k (radius) and 2k+1 (angle), so they too depend on
their index alone; the radius is below 5.77 (the mass beyond 5.65, 1.2×10⁻⁷ of the pairs, sits
in the outermost cell). Box–Muller with a polynomial sine costs two thirds of ``erf⁻¹``
inversion, which dominated the RBM's step, and a sixth of Box–Muller with XLA's sine and cosine.
tests/test_counter_rng.py holds the statistical battery this has to pass.

Keys are the caller's: derive them with ``fold_in`` / ``split`` as usual, once per call.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

_U32 = jnp.uint32


def _lowbias32(x):
    """A bijection of uint32 with low avalanche bias (C. Wellons, "Hash Prospector")."""
    x = x ^ (x >> 16)
    x = x * _U32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * _U32(0x846CA68B)
    return x ^ (x >> 16)


def bits(key, shape) -> jax.Array:
    """uint32 array of ``shape``, every entry a hash of its flat index keyed by ``key``."""
    shape = tuple(shape)
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"counter_rng draws at most 2**32 - 1 numbers per key, asked for {size}")
    k = jax.random.bits(key, (2,), _U32)
    counter = lax.iota(_U32, size).reshape(shape)
    return _lowbias32(_lowbias32(counter ^ k[0]) + k[1])


def uniform(key, shape, dtype=None) -> jax.Array:
    """Uniform on the open interval (0, 1): the midpoints of a grid of 2²³ cells."""
    return uniform_from_bits(bits(key, shape), dtype)


def normal(key, shape, dtype=None) -> jax.Array:
    """Standard normals by the Box–Muller transform of consecutive pairs of words."""
    shape = tuple(shape)
    half = (math.prod(shape) + 1) // 2
    words = bits(key, (half, 2))
    z = normal_pairs(words[:, 0], words[:, 1], dtype)
    return z.reshape(-1)[: math.prod(shape)].reshape(shape)


def uniform_from_bits(words, dtype=None) -> jax.Array:
    # (2k + 1) / 2²⁴ with k < 2²³ is exact in float32, so 0 and 1 are never reached
    dtype = dtype or jnp.result_type(float)
    k = (words >> 9).astype(jnp.int32)
    return (2 * k + 1).astype(dtype) * (2.0**-24)


def normal_pairs(radius_words, angle_words, dtype=None) -> jax.Array:
    """Box–Muller: ``r = √(−2 log u₁)``, ``(r cos 2πu₂, r sin 2πu₂)`` stacked on a last axis of 2.

    ``u₁`` never reaches 0 or 1, so ``0 < r < √(48 log 2) = 5.77``. The cosine and sine are
    polynomials on an eighth of a turn (error below 10⁻⁷): with XLA's own the transform is 6× dearer.
    """
    u1 = uniform_from_bits(radius_words, dtype)
    u2 = uniform_from_bits(angle_words, dtype)
    r = jnp.sqrt(-2.0 * jnp.log(u1))
    sin, cos = _sincos_turns(u2)
    return jnp.stack([r * cos, r * sin], axis=-1)


def _sincos_turns(v):
    """(sin 2πv, cos 2πv): the nearest quarter turn, then Taylor polynomials in |x| ≤ π/4."""
    quarter = jnp.round(v * 4.0)
    x = (v - 0.25 * quarter) * (2.0 * math.pi)
    x2 = x * x
    s = x * (1.0 + x2 * (-1.0 / 6 + x2 * (1.0 / 120 + x2 * (-1.0 / 5040 + x2 * (1.0 / 362880)))))
    c = 1.0 + x2 * (-0.5 + x2 * (1.0 / 24 + x2 * (-1.0 / 720 + x2 * (1.0 / 40320))))
    q = quarter.astype(jnp.int32) & 3
    sin = jnp.where(q == 0, s, jnp.where(q == 1, c, jnp.where(q == 2, -s, -c)))
    cos = jnp.where(q == 0, c, jnp.where(q == 1, -s, jnp.where(q == 2, -c, s)))
    return sin, cos
