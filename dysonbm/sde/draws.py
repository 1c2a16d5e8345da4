"""Random draws of the integrators: normals and uniforms from one threefry call, χ² with traced degrees of freedom."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

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


def chi2(key, dof, shape, candidates: int = 3) -> Array:
    """χ² samples (2·Gamma(dof/2)) of the given shape; ``dof`` traced, broadcastable to it.

    With the default 3 proposals a fraction < 1.3e-4 of the entries takes the Wilson–Hilferty
    approximation (see `_chi2_from`); use more candidates where exactness matters.
    """
    x, u = _draw(key, candidates, candidates + 1, shape, _dtype())
    return _chi2_from(x, u, dof)
