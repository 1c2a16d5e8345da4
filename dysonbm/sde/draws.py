"""Random draws of the integrators: a split-scheme sub-step's block from `dysonbm.counter_rng`, normals and
uniforms from one threefry call for the samplers, χ² with traced degrees of freedom."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dysonbm import counter_rng
from dysonbm.sde.numerics import _dtype

Array = jax.Array


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


class SubstepDraws(NamedTuple):
    """A split-scheme sub-step's randomness: noise (N,) standard normal, and the χ² variables of
    the bond couplings, gap (N−1,) ~ χ²_β and origin (N,) ~ χ²_dof0 (None off the chiral case)."""

    noise: Array
    gap: Array
    origin: Array | None


def _substep_draws(key, n: int, beta, dof0, chiral: bool, dtype) -> SubstepDraws:
    """All of a sub-step's randomness from ONE `counter_rng` block of ``key``, shape
    (blocks, 12, N) (blocks = 2 if chiral else 1); per level and block:

    rows 0, 1: a Box–Muller pair. Block 0: the noise is its cosine normal, the sine normal
      serves χ²_β; block 1 (chiral): its cosine normal serves χ²_dof0.
    rows 2, 3: two uniforms: χ²_k = [k odd]·normal² − 2 log(u₂^[k≥2] u₃^[k≥4]), exact for
      integer k ≤ 5 (χ²_{2j} is −2 log of j uniforms): β = 1, 2, 4 and most Wishart dof0.
    rows 4–11: two Box–Muller pairs and four uniforms, the proposals of the general sampler
      (`_chi2_from`) taken for any other β or dof0. Computing both and selecting costs less
      than a loop entered only when needed.
    """
    blocks = 2 if chiral else 1
    words = counter_rng.bits(key, (blocks, 12, n))
    first = counter_rng.normal_pairs(words[:, 0], words[:, 1], dtype)  # (blocks, N, 2): cos, sin
    more = counter_rng.normal_pairs(words[:, 2:4], words[:, 4:6], dtype)  # (blocks, 2, N, 2)
    x = jnp.stack([more[:, 0, :, 0], more[:, 0, :, 1], more[:, 1, :, 0]], axis=1)  # (blocks, 3, N)
    u = counter_rng.uniform_from_bits(words[:, 6:], dtype)  # (blocks, 6, N)
    gap = _chi2_exact_or_general(beta, first[0, :, 1] ** 2, u[0, :2], x[0], u[0, 2:])[: n - 1]
    if not chiral:
        return SubstepDraws(first[0, :, 0], gap, None)
    origin = _chi2_exact_or_general(dof0, first[1, :, 0] ** 2, u[1, :2], x[1], u[1, 2:])
    return SubstepDraws(first[0, :, 0], gap, origin)


def _chi2_exact_or_general(dof, normal_sq, u, x, v):
    """χ²_dof (traced scalar dof ≥ 0) per entry: exact from a squared normal (m,) and two
    uniforms u (2, m) if dof is an integer ≤ 5, else `_chi2_from` on the proposals x, v."""
    dof = jnp.asarray(dof, normal_sq.dtype)
    half = jnp.floor(0.5 * dof)
    exact = (dof == jnp.round(dof)) & (dof <= 5)
    prod = jnp.where(half >= 1, u[0], 1.0) * jnp.where(half >= 2, u[1], 1.0)
    value = jnp.where(dof - 2.0 * half > 0, normal_sq, 0.0) - 2.0 * jnp.log(prod)
    return jnp.where(exact, value, _chi2_from(x, v, dof))


def chi2(key, dof, shape, candidates: int = 3) -> Array:
    """χ² samples (2·Gamma(dof/2)) of the given shape; ``dof`` traced, broadcastable to it.

    With the default 3 proposals a fraction < 1.3e-4 of the entries takes the Wilson–Hilferty
    approximation (see `_chi2_from`); use more candidates where exactness matters.
    """
    x, u = _draw(key, candidates, candidates + 1, shape, _dtype())
    return _chi2_from(x, u, dof)
