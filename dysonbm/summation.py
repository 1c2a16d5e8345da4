"""`tree_sum`: a sum over the leading axis whose order does not depend on what surrounds it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def tree_sum(values: Array) -> Array:
    """Sum over the leading axis by pairwise halving, in an order fixed by the length alone.

    XLA lowers a reduction with a vectorisation (and so a summation order) chosen from the
    whole shape, replica axis included: the same replica would give different last bits in
    chunks of different sizes. Halving with elementwise adds has one order whatever surrounds
    it. Zero padding to a power of two adds exact zeros.
    """
    values = jnp.asarray(values)
    n = values.shape[0]
    size = 1 << max(n - 1, 0).bit_length()
    if size != n:
        values = jnp.concatenate([values, jnp.zeros((size - n,) + values.shape[1:], values.dtype)])
    while values.shape[0] > 1:
        half = values.shape[0] // 2
        values = values[:half] + values[half:]
    return values[0]
