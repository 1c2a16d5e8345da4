"""Eigen- and singular-value solvers safe to call from vmapped code on every backend.

On CPU, jaxlib's LAPACK kernels split a batch of matrices over XLA's intra-op thread pool and
block a pool thread until the pieces finish. With one XLA device per core (how `dbm` uses
all cores) every pool thread may be running a device's program, each waiting for pieces
that no free thread can run: a deadlock. `sequential_vmap` turns the batch into a loop of
single-matrix calls, which the kernels run inline. On GPU the batched solvers are kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular


def _per_matrix(fn):
    sequential = jax.custom_batching.sequential_vmap(fn)

    def call(x):
        return sequential(x) if jax.default_backend() == "cpu" else fn(x)

    call.__doc__ = fn.__doc__
    return call


@_per_matrix
def eigh(x):
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix."""
    return jnp.linalg.eigh(x)


@_per_matrix
def eigvalsh(x):
    """Eigenvalues (ascending) of a symmetric matrix."""
    return jnp.linalg.eigvalsh(x)


@_per_matrix
def svdvals(x):
    """Singular values (descending)."""
    return jnp.linalg.svd(x, compute_uv=False)


@_per_matrix
def _cholesky(x):
    return jnp.linalg.cholesky(x, symmetrize_input=False)


@jax.custom_jvp
def cholesky(x):
    """Lower Cholesky factor L of the symmetrised x (NaN where it is not positive definite).

    Differentiable: dL = L Φ(L⁻¹ dA L⁻ᵀ), Φ = lower triangle with the diagonal halved (the
    batching wrapper alone has no derivative rules).
    """
    return _cholesky(0.5 * (x + jnp.swapaxes(x, -1, -2)))


@cholesky.defjvp
def _cholesky_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    chol = cholesky(x)
    dx = 0.5 * (dx + jnp.swapaxes(dx, -1, -2))
    inner = solve_triangular(chol, dx, lower=True)
    inner = jnp.swapaxes(solve_triangular(chol, jnp.swapaxes(inner, -1, -2), lower=True), -1, -2)
    phi = jnp.tril(inner) - 0.5 * inner * jnp.eye(x.shape[-1], dtype=x.dtype)
    return chol, chol @ phi
