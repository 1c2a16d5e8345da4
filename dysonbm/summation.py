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


def tree_sum_of(terms) -> Array:
    """``tree_sum`` of a sequence of equally shaped arrays, pairing them as `tree_sum` pairs
    the entries of its leading axis (a missing partner is no term, not a zero).

    For a few terms computed by elementwise expressions (the contraction over a short axis):
    XLA then fuses the whole sum into one pass, where `tree_sum` over a stacked product
    materialises it; a multiply and add may then be fused into one rounding, so the last bits
    can differ from `tree_sum`'s. They do not follow the arrays' other axes: `tests/test_kernels.py`
    checks a dataset's samples across its length and the replicas beside it.
    """
    terms = list(terms)
    while len(terms) > 1:
        half = 1 << (len(terms) - 1).bit_length() - 1
        terms = [terms[i] + terms[i + half] if i + half < len(terms) else terms[i] for i in range(half)]
    return terms[0]
