"""Observables at snapshots: spectra, spacings, overlaps and the drift-versus-Coulomb terms.

Every function works on ONE replica (no replica axis); the engine vmaps them. They are pure
JAX, jit-able, and written to stay accurate in float32 (two-pass variances, no differences
of large sums).

Multilayer teacher–student conventions (SCIENCE.md §3.3), for ``n`` inputs:

    x  (n, D)        φ0 = tanh(x Mᵀ)            (n, L)     M fixed, (L, D)
    W  (K, L)        a  = φ0 Wᵀ,  s = f(a)       (n, K)     f ∈ {tanh, relu, identity}
    Z  (K,)          ŷ  = s Z                    (n,)
    ℓ_n = ½ (ŷ_n − y_n)²,   g_n = −∂ℓ_n/∂W = −(ŷ_n − y_n) (Z ⊙ f'(a_n)) φ0_nᵀ   (K, L)

Spectra are of ``X = W Wᵀ`` (K×K), whose eigenvalues are the squared singular values of W.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dysonbm import linalg
from dysonbm.summation import tree_sum

Array = jnp.ndarray


# ---------------------------------------------------------------------------------------
# Spacings
# ---------------------------------------------------------------------------------------
def mean_spacing(levels: Array) -> Array:
    """Mean nearest-neighbour spacing ū = (x_max − x_min)/(N − 1) along the last axis.

    Equal to the mean of |x_{i+1} − x_i| over the sorted levels, whatever their order.
    """
    n = levels.shape[-1]
    return (jnp.max(levels, axis=-1) - jnp.min(levels, axis=-1)) / (n - 1)


# ---------------------------------------------------------------------------------------
# Feature statistics
# ---------------------------------------------------------------------------------------
def overlap(s0: Array, s: Array) -> Array:
    """Overlap with the initial features q = (1/(nK)) Σ_n Σ_k s0_nk s_nk."""
    return jnp.mean(s0 * s)


def _unit(a: Array) -> Array:
    norm = jnp.sqrt(jnp.sum(a * a))
    # a zero field or zero features has no direction: report 0 alignment, not NaN
    return a / jnp.where(norm > 0, norm, 1.0)


def field_alignment(s: Array, y: Array, Z: Array) -> Array:
    """hs = Σ_{nk} ĥ_nk ŝ_nk with the field h_nk = y_n Z_k; ĥ, ŝ have unit Frobenius norm."""
    h = y[:, None] * Z[None, :]
    return jnp.sum(_unit(h) * _unit(s))


# ---------------------------------------------------------------------------------------
# Drift versus Coulomb repulsion of the levels of X = W Wᵀ
# ---------------------------------------------------------------------------------------
def increments(W: Array, g: Array) -> Array:
    """Per-sample change of X = W Wᵀ per unit learning rate, dX_n = W g_nᵀ + g_n Wᵀ: ``(n, K, K)``."""
    wg = jnp.einsum("kl,njl->nkj", W, g)
    return wg + jnp.swapaxes(wg, -1, -2)


def _mean(a: Array, weights: Array | None) -> Array:
    """Mean over the leading (sample) axis, weighted by ``weights`` (n,) when given (padded
    samples weigh 0), summed in a fixed order (`tree_sum`)."""
    if weights is None:
        return tree_sum(a) / a.shape[0]
    w = weights.reshape((-1,) + (1,) * (a.ndim - 1))
    return tree_sum(w * a) / tree_sum(weights)


def increment_moments(W: Array, g: Array, weights: Array | None = None) -> dict:
    """Both noise matrices of the drift criterion from the per-sample gradients ``g`` (n, K, L)
    (means over samples weighted by ``weights`` when given).

    Returns {"drift": K̃, "noise": Ṽ, "noise_paper": Ṽ_paper, "levels": x} in the descending
    eigenbasis U of X = W Wᵀ (``projected_increment_moments`` for K̃ and Ṽ), with

        Ṽ_paper = Uᵀ Var_n(dX_n) U      (elementwise population variance of dX, then rotated)

    the matrix of the published criterion. Ṽ ≥ 0 elementwise and is what the eigenvalue SDE
    needs; Ṽ_paper is a rotated matrix and can have negative off-diagonal entries. The two
    coincide when U is a signed permutation (the rotation then commutes with the variance);
    on sample networks their V_t differ by factors of 0.03–3 and V_t from Ṽ_paper can even
    be negative, so the published contours need Ṽ_paper.
    """
    x, U = linalg.eigh(W @ W.T)
    x, U = x[::-1], U[:, ::-1]
    dX = increments(W, g)
    P = jnp.einsum("ai,nab,bj->nij", U, dX, U)
    drift = _mean(P, weights)
    dev = P - drift
    raw = dX - _mean(dX, weights)
    # sums in an order fixed by the shapes alone (`tree_sum`): a matrix product inside the
    # vmapped program would sum in an order chosen for the whole chunk
    var_dx = _mean(raw * raw, weights)
    return {
        "drift": drift,
        "noise": _mean(dev * dev, weights),
        "noise_paper": _ordered_matmul(_ordered_matmul(U.T, var_dx), U),
        "levels": x,
    }


def _ordered_matmul(a: Array, b: Array) -> Array:
    """a @ b summed over the inner index by `tree_sum`."""
    return tree_sum(a.T[:, :, None] * b[:, None, :])


def projected_increment_moments(W: Array, g: Array) -> tuple[Array, Array, Array]:
    """``(K̃, Ṽ, x)`` from the per-sample gradients ``g`` (n, K, L).

    With X = W Wᵀ = U diag(x) Uᵀ, eigenvalues x DESCENDING and P_n = Uᵀ dX_n U:

        K̃_ij = mean_n P_n,ij            (drift of the levels: K̃_ii)
        Ṽ_ij = Var_n[P_n,ij]            (elementwise, population variance, 1/n)

    Ṽ is the variance of the projected increment, not the projection of an elementwise
    variance of dX (that is the published criterion's Ṽ_paper, see ``increment_moments``):
    it is (Uᵀ dX U)_ij that enters the second-order (Coulomb) term of the eigenvalue SDE,
    T Σ_j Ṽ_ij/(x_i − x_j). Both are invariant under the sign of each eigenvector, so the
    arbitrary signs returned by ``eigh`` do not matter.
    """
    m = increment_moments(W, g)
    return m["drift"], m["noise"], m["levels"]


def drift_coulomb_from_moments(drift: Array, noise: Array) -> tuple[Array, Array]:
    """``(K_t, V_t)`` from K̃ and Ṽ in the descending eigenbasis (1-based indices below).

        K_t = |K̃_11| − |K̃_KK|
        V_t = 2 Ṽ_1K/(K − 1) + Σ_{k=1}^{K−2} (Ṽ_{1,k+1} + Ṽ_{K,K−k})/k

    V_t is the Coulomb push apart of the extreme levels for equally spaced levels (unit
    spacing): level 1 is repelled by level k+1 at distance k, level K by level K−k; the
    pair (1, K) at distance K−1 appears in both sums, hence the factor 2. ``noise`` is Ṽ
    (the SDE's) or Ṽ_paper (the published criterion's); the formula is the same.
    """
    K = drift.shape[-1]
    k_t = jnp.abs(drift[0, 0]) - jnp.abs(drift[K - 1, K - 1])
    k = jnp.arange(1, K - 1)  # k = 1 … K−2
    # 1-based Ṽ_{1,k+1} -> noise[0, k];  Ṽ_{K,K−k} -> noise[K−1, K−1−k]
    pairs = (noise[0, k] + noise[K - 1, K - 1 - k]) / k
    v_t = 2.0 * noise[0, K - 1] / (K - 1) + tree_sum(pairs)  # fixed order: Ṽ_paper's terms cancel
    return k_t, v_t


def drift_dominated(K_t, V_t, T, init_std, K: int, L: int):
    """Drift-dominated (ordered) test: K_t / (sqrt(r) (K − 1)) ≥ T V_t / (4 σ_W²), r = L/K.

    Plain arithmetic, so it works on JAX and numpy arrays alike (broadcasting over replicas).
    """
    r = L / K
    return K_t / (r**0.5 * (K - 1)) >= T * V_t / (4.0 * init_std**2)


def data_step_terms(W: Array, G: Array) -> tuple[Array, Array]:
    """``(K̄_ii, S_ii)``, levels descending, of the mean SGD step W → W + α G, with
    G = −∂L/∂W the full-batch gradient on the replica's training data. To second order,

        x_i(W + α G) = x_i + α K̄_ii + α² S_ii,   K̄ = Uᵀ (W Gᵀ + G Wᵀ) U,
        S_ii = (Uᵀ G Gᵀ U)_ii + Σ_{j≠i} K̄_ij² / (x_i − x_j).

    K̄_ii is the drift SGD actually follows: the mean over the samples it trains on, not over
    the test set, whose mean gradient differs by O(1/sqrt(n_test)) and does not vanish where
    training converges. α S_ii is the O(α) part of the drift per unit τ = α·steps that the
    continuous-time SDE leaves out (the batch noise's part of the same expansion is the Itô
    and Coulomb terms of `level_terms` and Ṽ).
    """
    x, U = linalg.eigh(_ordered_matmul(W, W.T))
    x, U = x[::-1], U[:, ::-1]
    wg = _ordered_matmul(W, G.T)
    K_bar = _ordered_matmul(_ordered_matmul(U.T, wg + wg.T), U)
    ug = _ordered_matmul(U.T, G)
    gap = x[:, None] - x[None, :]
    safe = jnp.where(gap != 0, gap, 1.0)
    second = jnp.where(gap != 0, K_bar * K_bar / safe, 0.0)
    return jnp.diagonal(K_bar), tree_sum((ug * ug).T) + tree_sum(second.T)


def level_terms(W: Array, per_sample_grads: Callable[[Array], Array],
                weights: Array | None = None) -> tuple[Array, Array]:
    """``(C̃_ii, γ_i)`` of the level SDE at W (K×L), levels descending; ``per_sample_grads``
    maps W to g_n = −∂ℓ_n/∂W on a set of samples, ``(n, K, L)``, whose means are weighted by
    ``weights`` when given.

    - Itô term C̃_ii = Σ_l Var_n (Uᵀ g_n)_il: the dW dWᵀ part of dX = dW Wᵀ + W dWᵀ + dW dWᵀ,
      which raises every level by T C̃_ii dτ (for a Brownian W it is the D·M of the Wishart
      process). Without it the Coulomb sum, antisymmetric in i ↔ j, leaves tr X to the drift
      alone, while in SGD at high T this term carries most of the growth of tr X.
    - level stiffness γ_i = −∂K̃_ii/∂x_i along W → W + ε u_i v_iᵀ (u_i, v_i the i-th singular
      vectors): that direction changes x_i = (s_i + ε)² and leaves U and the other levels as
      they are, so γ_i is the slope of the drift in the level itself. It linearises the drift
      (K̃_ii(x) ≈ K̃_ii − γ_i (x_i − x_i(t))), which matters when 1/γ_i is shorter than the
      horizon of a prediction: a restoring drift held constant would overshoot.
    """
    # sums in an order fixed by the shape alone, so a replica's numbers do not depend on its
    # chunk (imported here: dysonbm.models imports this module)
    x, U = linalg.eigh(W @ W.T)
    x, U = x[::-1], U[:, ::-1]
    s = jnp.sqrt(jnp.maximum(x, 0.0))
    safe = jnp.where(s > 0, s, 1.0)
    V = (U.T @ W) / safe[:, None]  # rows: right singular vectors
    g = per_sample_grads(W)
    ug = jnp.einsum("ai,nal->nil", U, g)
    dev = ug - _mean(ug, weights)
    ito = tree_sum(_mean(dev * dev, weights).T)  # Σ_l Var_n (Uᵀ g_n)_il

    def drift_i(w, i):
        # K̃_ii = u_iᵀ (W ḡᵀ + ḡ Wᵀ) u_i with u_i held fixed (it is, along this direction)
        gbar = _mean(per_sample_grads(w), weights)
        u = U[:, i]
        gu = tree_sum(gbar * u[:, None])  # ḡᵀ u: (L,)
        return 2.0 * tree_sum(u * tree_sum((w * gu[None, :]).T))

    def slope(i):
        direction = jnp.outer(U[:, i], V[i])
        _, d = jax.jvp(lambda e: drift_i(W + e * direction, i), (jnp.zeros((), W.dtype),), (jnp.ones((), W.dtype),))
        return jnp.where(s[i] > 0, -d / (2.0 * safe[i]), 0.0)

    return ito, jax.vmap(slope)(jnp.arange(W.shape[0]))
