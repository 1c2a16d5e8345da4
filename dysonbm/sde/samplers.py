"""Exact samplers of the β-Hermite and β-Laguerre ensembles (Dumitriu–Edelman tridiagonal/bidiagonal models, any β > 0)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dysonbm import linalg
from dysonbm.sde.draws import _draw, chi2
from dysonbm.sde.numerics import _dtype

Array = jax.Array


def _chi(key, dof, shape=()):
    """χ-distributed samples with (possibly traced, non-integer) degrees of freedom ``dof``
    (8 proposals: the approximate fallback has probability < 1e-10)."""
    return jnp.sqrt(chi2(key, dof, shape, candidates=8))


def _tridiag_eigvals(d, e):
    """Eigenvalues of the symmetric tridiagonal matrix (diag d (n,), off-diagonal e (n−1,)):
    dense eigvalsh for small n (cheap to compile), bisection (O(n²)) for large n."""
    if d.shape[0] <= 64:
        return linalg.eigvalsh(jnp.diag(d) + jnp.diag(e, 1) + jnp.diag(e, -1))
    return jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True)


def sample_hermite(key, n: int, beta, scale=1.0) -> Array:
    """Sorted levels (n,) with density ∝ Π_{i<j}|λ_i−λ_j|^β exp(−Σλ²/(2 scale²)), exactly.

    With scale² = D/γ this is the stationary law of the DBM with U = γλ²/2; with
    scale² = 2Dt the law at time t of the free DBM started at 0 (for β = 1: a GOE with
    off-diagonal variance Dt).
    """
    k1, k2 = jax.random.split(key)
    beta = jnp.asarray(beta, _dtype())
    diag = _draw(k1, 1, 0, (n,), _dtype())[0][0]
    dofs = beta * jnp.arange(n - 1, 0, -1, dtype=_dtype())
    off = _chi(k2, dofs, (n - 1,)) / math.sqrt(2.0)
    lam = _tridiag_eigvals(diag, off)
    return jnp.sort(lam) * scale


def sample_laguerre(key, m, n: int, beta, scale2=1.0) -> Array:
    """Sorted eigenvalues (n,) of WᵀW, W m×n with i.i.d. entries whose β real components each
    have variance ``scale2`` (β-Laguerre ensemble; ``m`` may be any real ≥ n − 1 + 1/β).

    With scale2 = Dt it is the law at time t of the Wishart process started at W = 0.
    """
    k1, k2 = jax.random.split(key)
    beta = jnp.asarray(beta, _dtype())
    d = _chi(k1, beta * (m - jnp.arange(n, dtype=_dtype())), (n,))
    e = _chi(k2, beta * jnp.arange(n - 1, 0, -1, dtype=_dtype()), (n - 1,))
    # B lower bidiagonal (diag d, subdiag e); eigenvalues of BBᵀ (tridiagonal)
    tdiag = d**2 + jnp.concatenate([jnp.zeros(1, d.dtype), e**2])
    toff = d[:-1] * e
    x = _tridiag_eigvals(tdiag, toff)
    return jnp.sort(jnp.maximum(x, 0.0)) * scale2
