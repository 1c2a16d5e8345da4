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


def per_matrix(fn):
    """``fn`` of one matrix, batched (under ``vmap``, or a stack passed directly) as a loop of
    single-matrix calls on CPU (module docstring) and as the batched library call elsewhere."""
    sequential = jax.custom_batching.sequential_vmap(fn)

    def call(x):
        if jax.default_backend() != "cpu":
            return fn(x)
        if x.ndim > 2:  # a stack of matrices passed directly (not under vmap): the same loop
            out = jax.vmap(sequential)(x.reshape((-1,) + x.shape[-2:]))
            return jax.tree_util.tree_map(lambda o: o.reshape(x.shape[:-2] + o.shape[1:]), out)
        return sequential(x)

    call.__doc__ = fn.__doc__
    return call


@per_matrix
def eigh(x):
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix."""
    return jnp.linalg.eigh(x)


@per_matrix
def eigvalsh(x):
    """Eigenvalues (ascending) of a symmetric matrix."""
    return jnp.linalg.eigvalsh(x)


@per_matrix
def svdvals(x):
    """Singular values (ascending, like `eigvalsh`: the package's one order for spectra)."""
    return jnp.linalg.svd(x, compute_uv=False)[::-1]


@per_matrix
def _cholesky(x):
    return jnp.linalg.cholesky(x, symmetrize_input=False)


SMALL = 32


def cholesky(x):
    """Lower Cholesky factor L of the symmetrised x (NaN where it is not positive definite).

    Up to `SMALL`×`SMALL` the column algorithm runs unrolled in plain array operations: it
    vectorises across replicas (a library call per matrix per step would dominate a small
    model's step) and is differentiated by JAX directly. Larger matrices use LAPACK.
    """
    if x.shape[-1] <= SMALL:
        return _cholesky_unrolled(x)
    return _cholesky_lapack(0.5 * (x + jnp.swapaxes(x, -1, -2)))


def _cholesky_unrolled(a):
    # column j: L_ij = (a_ij − Σ_{k<j} L_ik L_jk) / L_jj for i ≥ j, the sum as one
    # matrix–vector product per column (per-term updates cost 2× under vmap); a is
    # symmetrised a column at a time, which a transpose of the whole batch would cost 1.5×
    n = a.shape[-1]
    chol = jnp.zeros_like(a)
    for j in range(n):
        partial = 0.5 * (a[..., :, j] + a[..., j, :])
        if j:
            partial = partial - jnp.einsum("...ik,...k->...i", chol[..., :, :j], chol[..., j, :j])
        below = (jnp.arange(n) >= j).astype(a.dtype)
        chol = chol.at[..., :, j].set(below * partial / jnp.sqrt(partial[..., j:j + 1]))
    return chol


@jax.custom_jvp
def _cholesky_lapack(x):
    """LAPACK Cholesky, per matrix on CPU, with dL = L Φ(L⁻¹ dA L⁻ᵀ) (Φ: lower triangle,
    diagonal halved) since the batching wrapper has no derivative rules of its own."""
    return _cholesky(x)


@_cholesky_lapack.defjvp
def _cholesky_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    chol = _cholesky_lapack(x)
    dx = 0.5 * (dx + jnp.swapaxes(dx, -1, -2))
    inner = solve_triangular(chol, dx, lower=True)
    inner = jnp.swapaxes(solve_triangular(chol, jnp.swapaxes(inner, -1, -2), lower=True), -1, -2)
    phi = jnp.tril(inner) - 0.5 * inner * jnp.eye(x.shape[-1], dtype=x.dtype)
    return chol, chol @ phi


def solve_lower(chol, b):
    """x with L x = b for lower-triangular L (n×n) and b (n,) or (n, m)."""
    if chol.shape[-1] > SMALL:
        return solve_triangular(chol, b, lower=True)
    rows = []
    for i in range(chol.shape[-1]):
        acc = b[i]
        for k in range(i):
            acc = acc - chol[i, k] * rows[k]
        rows.append(acc / chol[i, i])
    return jnp.stack(rows)


def solve_lower_transposed(chol, b):
    """x with Lᵀ x = b for lower-triangular L (n×n) and b (n,) or (n, m)."""
    n = chol.shape[-1]
    if n > SMALL:
        return solve_triangular(chol, b, trans="T", lower=True)
    rows = [None] * n
    for i in reversed(range(n)):
        acc = b[i]
        for k in range(i + 1, n):
            acc = acc - chol[k, i] * rows[k]
        rows[i] = acc / chol[i, i]
    return jnp.stack(rows)


def cho_solve(chol, b):
    """x with (L Lᵀ) x = b, from the lower Cholesky factor L.

    Small systems are solved by unrolled substitution for the same reason as `cholesky`:
    the library triangular solve is a per-matrix call on CPU that also draws on the shared
    thread pool.
    """
    return solve_lower_transposed(chol, solve_lower(chol, b))
