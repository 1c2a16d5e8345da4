"""A second, plain implementation of the multilayer network (SCIENCE.md §3.3) that the tests check the
model and the observables against: inputs rather than stored features, one function per quantity."""

from __future__ import annotations

import jax.numpy as jnp

from dysonbm import linalg
from dysonbm.models.multilayer import ACTIVATIONS, per_sample_grads_from_features
from dysonbm.observables import drift_coulomb_from_moments, increment_moments, projected_increment_moments

Array = jnp.ndarray


def input_features(M: Array, x: Array) -> Array:
    """φ0 = tanh(M x) for each input: ``(n, L)``."""
    return jnp.tanh(x @ M.T)


def features(W: Array, M: Array, x: Array, activation: str = "tanh") -> Array:
    """Hidden features s = f(W φ0(x)): ``(n, K)``."""
    f, _ = ACTIVATIONS[activation]
    return f(input_features(M, x) @ W.T)


def predict(W: Array, M: Array, Z: Array, x: Array, activation: str = "tanh") -> Array:
    """Network output ŷ = Z·s: ``(n,)``."""
    return features(W, M, x, activation) @ Z


def multilayer_loss(W, M, Z, x, y, activation: str = "tanh") -> Array:
    """Mean loss ½ mean_n (ŷ_n − y_n)²."""
    r = predict(W, M, Z, x, activation) - y
    return 0.5 * jnp.mean(r * r)


def per_sample_grads(W, M, Z, x, y, activation: str = "tanh") -> Array:
    """g_n = −∂ℓ_n/∂W = −(ŷ_n − y_n) (Z ⊙ f'(W φ0_n)) φ0_nᵀ: ``(n, K, L)``."""
    return per_sample_grads_from_features(W, Z, input_features(M, x), y, activation)


def gradient_norm(W, M, Z, x, y, activation: str = "tanh") -> Array:
    """Frobenius norm of the full-batch gradient ‖mean_n g_n‖ on the given inputs."""
    g = jnp.mean(per_sample_grads(W, M, Z, x, y, activation), axis=0)
    return jnp.sqrt(jnp.sum(g * g))


def gram_spectrum(W: Array) -> Array:
    """Eigenvalues of X = W Wᵀ, ascending (the squared singular values of W)."""
    return linalg.eigvalsh(W @ W.T)


def singular_values(W: Array) -> Array:
    """Singular values of W, ascending."""
    return linalg.svdvals(W)


def symmetric_spectrum(W: Array) -> Array:
    """Eigenvalues of the symmetric part (W + Wᵀ)/2 of a square W, ASCENDING."""
    return linalg.eigvalsh(0.5 * (W + W.T))


def spacing_growth_rate(mean_spacing_t, mean_spacing_0, t) -> Array:
    """λ = ln(ū(t)/ū(0))/t for one replica; the ensemble mean ⟨·⟩ is taken over replicas later."""
    return jnp.log(mean_spacing_t / mean_spacing_0) / t


def drift_coulomb_terms(W, M, Z, x, y, activation: str = "tanh"):
    """``(K_t, V_t, extra)`` of SCIENCE.md §3.3 on the test inputs ``x`` (n, D), labels ``y``.

    Per test sample dX_n = W g_nᵀ + g_n Wᵀ with g_n = −∂ℓ_n/∂W; K̃, Ṽ as in
    ``projected_increment_moments``; K_t, V_t as in ``drift_coulomb_from_moments``.
    ``extra`` = {"drift": K̃ (K, K), "noise": Ṽ (K, K), "levels": x (K,) descending,
    "noise_paper": Ṽ_paper (K, K), "V_t_paper": V_t from Ṽ_paper} (``increment_moments``).
    """
    return drift_coulomb_from_features(W, Z, input_features(M, x), y, activation)


def drift_coulomb_from_features(W, Z, phi0, y, activation: str = "tanh"):
    """``drift_coulomb_terms`` from the first-layer features φ0 (n, L) instead of the inputs."""
    g = per_sample_grads_from_features(W, Z, phi0, y, activation)
    m = increment_moments(W, g)
    k_t, v_t = drift_coulomb_from_moments(m["drift"], m["noise"])
    _, v_paper = drift_coulomb_from_moments(m["drift"], m["noise_paper"])
    return k_t, v_t, {**m, "V_t_paper": v_paper}


def diagonal_drift_and_noise(W, M, Z, x, y, activation: str = "tanh") -> tuple[Array, Array]:
    """``(K̃_ii, Ṽ_ij)``: level drift (K,) and pair-noise matrix (K, K), descending eigenbasis.

    The coefficients of the eigenvalue Langevin equation of X = W Wᵀ in the time τ = α·steps
    (second-order perturbation theory to leading order in α, batch |B|, T = α/|B|):

        dx_i = [K̃_ii + T Σ_{j≠i} Ṽ_ij/(x_i − x_j) + T C̃_ii] dτ + sqrt(T Ṽ_ii) dB_i

    with the Itô term C̃_ii of `level_terms`.
    """
    g = per_sample_grads(W, M, Z, x, y, activation)
    drift, noise, _ = projected_increment_moments(W, g)
    return jnp.diagonal(drift), noise
