"""Counter-based random numbers: many draws for the price of one key.

``jax.random.normal(key, shape)`` runs threefry (20 rounds) for every 64 bits it returns,
which bounds models that draw thousands of normals per step (the RBM's Gibbs sweeps). Here
one threefry call turns ``key`` into two 32-bit words ``k0, k1``, and draw ``i`` of an array
is the integer hash

    bits_i = h(h(i ⊕ k0) + k1),    h = Wellons' `lowbias32` (two multiply–xorshift rounds)

of its position ``i`` in row-major order: a pure function of the key and the index, so a
draw never depends on how the work is chunked. A normal is ``√2 erf⁻¹(v)`` with ``v`` the
midpoint of the cell of (−1, 1) that the top 24 bits pick out of 2²⁴, computed exactly in
float32 (never ±1): the normals are exact quantiles of a 24-bit grid, bounded by |z| < 5.5
(the mass beyond, 4×10⁻⁸, sits on the extreme grid points). tests/test_counter_rng.py holds
the statistical battery this has to pass.

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
    """Standard normals by inversion: ``√2 erf⁻¹(v)``, ``v`` the midpoints of 2²⁴ cells of (−1, 1)."""
    return normal_from_bits(bits(key, shape), dtype)


def uniform_from_bits(words, dtype=None) -> jax.Array:
    # (2k + 1) / 2²⁴ with k < 2²³ is exact in float32, so 0 and 1 are never reached
    dtype = dtype or jnp.result_type(float)
    k = (words >> 9).astype(jnp.int32)
    return (2 * k + 1).astype(dtype) * (2.0**-24)


def normal_from_bits(words, dtype=None) -> jax.Array:
    # (2k + 1 − 2²⁴) / 2²⁴ is an odd integer below 2²⁴ over a power of two: exact in float32,
    # symmetric about 0 and never ±1, where erf⁻¹ is infinite
    dtype = dtype or jnp.result_type(float)
    k = (words >> 8).astype(jnp.int32)
    v = (2 * k + 1 - (1 << 24)).astype(dtype) * (2.0**-24)
    return math.sqrt(2.0) * lax.erf_inv(v)
