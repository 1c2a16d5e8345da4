"""Linear teacher–student model with injected symmetric noise (SCIENCE.md §3.1).

    y = W x,  W: N×N,  teacher W_t = O diag(d) Oᵀ,  x ~ N(0, I_N)
    loss                  ℓ = ½ |(W − W_t) x|²
    per-batch gradient    ∇L_B = −mean_b [ (W_t − W) x_b x_bᵀ + A a_b ]

The gradient is that of the objective ℓ − A ⟨a, W⟩_F: the injected noise drives W but is not
part of the reported loss (its mean over a finite set would only add a meaningless offset).

``a`` is a symmetric Gaussian matrix (off-diagonal variance 1, diagonal 2) drawn per sample;
its amplitude A (``noise``) enters through ``hp`` so it can be swept.

Stationary law with fresh data every step (protocol "online"). With E = W − W_t,
C_B = mean_b x_b x_bᵀ and ā = mean_b a_b, one step is E' = E (I − α C_B) + α A ā. Since x and a
are fresh and independent of E, the mean decays as (1 − α)ᵗ and Σ_{ij,kl} = E[E_ij E_kl] obeys
the exact linear recursion Σ' = T Σ + Q, Σ'_{ij,kl} = Σ_{mn} Σ_{im,kn} E[M_mj M_nl] + α²A² E[ā_ij ā_kl]
(M = I − α C_B). Isserlis gives E[C_mj C_nl] = δ_mj δ_nl + (δ_mn δ_jl + δ_ml δ_jn)/|B|, and
E[ā_ij ā_kl] = (δ_ik δ_jl + δ_il δ_jk)/|B|; with g = (1 − α)², h = α²/|B|:

    Σ'_{ij,kl} = g Σ_{ij,kl} + h (δ_jl Σ_m Σ_{im,km} + Σ_{il,kj}) + h A² (δ_ik δ_jl + δ_il δ_jk).

Call the two maps in h K and P: K² = N K, KP = PK = K, P² = 1, so T has eigenvalues
g + (N+1)h and g ± h, and a stationary state exists iff ρ(T) = (1 − α)² + (N+1)α²/|B| < 1, i.e.
0 < α < 2/(1 + (N+1)/|B|). ``stationary_covariance`` solves (1 − T) Σ = Q for the N⁴ unknowns.
The solution is isotropic, Σ = a δ_ik δ_jl + b δ_il δ_jk + c δ_ij δ_kl, and an off-diagonal element
of the symmetric part (E + Eᵀ)/2 has variance (a + b)/2 = τ² (1 − Nε/2)/(1 − ε²) with
ε = α/(|B|(2 − α)) and τ² = α A² / (|B| (2 − α (1 + (N+1)/|B|))) (``stationary_tau2``), its
small-α/|B| limit, which overestimates it by 0.3–2% at the published points (4% at α = 0.8).

The law is not Gaussian (the noise α E (I − C_B) is multiplicative): ``stationary_mean_spacing``
is ⟨S⟩ of the Gaussian with the exact covariance. Simulation puts the remainder between 0 and
−0.2% (±0.07%) at the published points and at α = 0.8, |B| = 16; it grows with α/|B|
(−1% at α = 1.2, |B| = 16; −2.4% at α = 0.5, |B| = 2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import counter_rng
from dysonbm.models.base import Model, masked_mean, tree_sum


def stationary_tau2(lr, batch_size, noise, n: int = 2):
    """Off-diagonal variance τ² of (W + Wᵀ)/2 − W_t in the stationary state with online data, to
    leading order: the small-α/|B| limit of ``stationary_offdiag_var`` (module docstring).
    Its pole α = 2/(1 + (N+1)/|B|) is the exact edge of stability."""
    return lr * noise**2 / (batch_size * (2.0 - lr * (1.0 + (n + 1.0) / batch_size)))


def second_moment_map(lr, batch_size, noise, n: int = 2):
    """``(T, Q)`` of the exact recursion vec Σ' = T vec Σ + Q, Σ_{ij,kl} = E[E_ij E_kl],
    vec(E) row-major (index i·n + j), T of shape (n⁴, n⁴) (module docstring)."""
    d = np.eye(n)
    g, h = (1.0 - lr) ** 2, lr**2 / batch_size
    # axes ijkl (new Σ) then pqrs (old Σ); E carries the left index along: δ_ip δ_kr
    left = np.einsum("ip,kr->ikpr", d, d)
    right = (g * np.einsum("jq,ls->jlqs", d, d)
             + h * np.einsum("jl,qs->jlqs", d, d)  # K: δ_jl Σ_m Σ_{im,km}
             + h * np.einsum("ql,sj->jlqs", d, d))  # P: Σ_{il,kj}
    t = np.einsum("ikpr,jlqs->ijklpqrs", left, right).reshape(n**4, n**4)
    q = h * noise**2 * (np.einsum("ik,jl->ijkl", d, d) + np.einsum("il,jk->ijkl", d, d))
    return t, q.reshape(n**4)


def stationary_covariance(lr, batch_size, noise, n: int = 2):
    """Exact stationary Cov(vec E), E = W − W_t, of the online-data update, shape (n², n²),
    vec row-major; ValueError when the second moments have no fixed point."""
    lr, batch_size, noise = float(lr), float(batch_size), float(noise)
    rho = (1.0 - lr) ** 2 + (n + 1.0) * lr**2 / batch_size  # spectral radius of T
    if not rho < 1.0:
        raise ValueError(
            f"lr = {lr:g}, batch_size = {batch_size:g}: no stationary state (spectral radius {rho:.4g} ≥ 1 "
            f"of the second-moment recursion; needs 0 < lr < {2.0 / (1.0 + (n + 1.0) / batch_size):.4g})")
    t, q = second_moment_map(lr, batch_size, noise, n)
    sigma = np.linalg.solve(np.eye(n**4) - t, q).reshape(n * n, n * n)
    return 0.5 * (sigma + sigma.T)


def stationary_offdiag_var(lr, batch_size, noise, n: int = 2):
    """Exact stationary variance of an off-diagonal element of (E + Eᵀ)/2 (what τ² approximates)."""
    if n < 2:
        raise ValueError(f"n = {n}: no off-diagonal element")
    s = stationary_covariance(lr, batch_size, noise, n)
    i, j = 1, n  # E_01, E_10
    return float((s[i, i] + s[j, j] + 2.0 * s[i, j]) / 4.0)


def gaussian_mean_norm(cov) -> float:
    """E|z| for z ~ N(0, cov) in two dimensions: with eigenvalues λ₁ ≥ λ₂ of ``cov``,
    sqrt(2λ₁/π) E(1 − λ₂/λ₁), E the complete elliptic integral of the second kind (by the
    arithmetic–geometric mean, exact to rounding). Isotropic cov = λ·I gives sqrt(πλ/2)."""
    lam = np.linalg.eigvalsh(np.asarray(cov, float))
    l2, l1 = max(lam[0], 0.0), lam[1]
    if l1 <= 0.0:
        return 0.0
    m = 1.0 - l2 / l1
    if m >= 1.0:
        return math.sqrt(2.0 * l1 / math.pi)  # E(1) = 1: one-dimensional
    # E(m) = K(m) (1 − Σ_k 2^(k−1) c_k²), K = π/(2 AGM(1, sqrt(1 − m))), c_0² = m
    a, b, total, p = 1.0, math.sqrt(1.0 - m), 0.5 * m, 0.5
    for _ in range(64):  # quadratic convergence; the cap guards against a one-ulp cycle
        if abs(a - b) <= 1e-15 * a:
            break
        c = 0.5 * (a - b)
        a, b = 0.5 * (a + b), math.sqrt(a * b)
        p *= 2.0
        total += p * c * c
    ellip_e = math.pi / (2.0 * a) * (1.0 - total)
    return math.sqrt(2.0 * l1 / math.pi) * ellip_e


def stationary_mean_spacing(lr, batch_size, noise):
    """⟨S⟩ of the two eigenvalues of (W + Wᵀ)/2 for N = 2 and a degenerate teacher (W_t ∝ I),
    S = sqrt(u² + v²), u = s₁₁ − s₂₂, v = 2 s₁₂ (s the symmetric part of E), taking (u, v)
    Gaussian with their exact stationary covariance (module docstring for the remainder).
    In the GOE limit (Var u = Var v = 4τ², uncorrelated) it is sqrt(2π) τ."""
    s = stationary_covariance(lr, batch_size, noise, 2)
    lin = np.array([[1.0, 0.0, 0.0, -1.0], [0.0, 1.0, 1.0, 0.0]])  # (u, v) from vec E
    return gaussian_mean_norm(lin @ s @ lin.T)


@dataclasses.dataclass(frozen=True)
class TeacherStudent(Model):
    """N×N linear student learning a symmetric teacher under injected gradient noise."""

    name: ClassVar[str] = "teacher_student"
    sweepable: ClassVar[tuple[str, ...]] = ("noise",)
    has_noise: ClassVar[bool] = True
    # published: inputs drawn once and shared by a point's replicas, each replica its own
    # noise sequence a_1 … a_n frozen per sample index; the teacher 2·I is the same for all
    ensemble: ClassVar[dict] = {"problem": "run", "inputs": "point", "noise": "replica", "test": "run"}

    n: int = 2
    teacher_eigs: tuple = (2.0, 2.0)  # d; its length must be n
    noise: float = 0.1  # A
    random_teacher_basis: bool = True  # O random orthogonal (else the identity)

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"model.n = {self.n!r}: must be positive")
        if len(self.teacher_eigs) != self.n:
            raise ValueError(f"model.teacher_eigs = {list(self.teacher_eigs)!r}: needs n = {self.n} values")
        if self.noise < 0:
            raise ValueError(f"model.noise = {self.noise!r}: must not be negative")

    def problem(self, key):
        d = jnp.asarray(self.teacher_eigs, jnp.result_type(float))
        if self.random_teacher_basis:
            # QR of a Gaussian matrix with the sign fix gives a Haar orthogonal O
            q, r = jnp.linalg.qr(jax.random.normal(key, (self.n, self.n)))
            o = q * jnp.sign(jnp.diagonal(r))
        else:
            o = jnp.eye(self.n)
        return {"teacher": (o * d) @ o.T}

    def init(self, key, problem, hp):
        w = hp["init_std"] * jax.random.normal(key, (self.n, self.n), problem["teacher"].dtype)
        return w, ()

    def draw_input(self, key):
        return self.draw_inputs(key, 1)[0]

    def draw_noise(self, key):
        return self.draw_noises(key, 1)[0]

    def draw_inputs(self, key, count):
        return counter_rng.normal(key, (count, self.n))

    def draw_noises(self, key, count):
        """Symmetric N×N Gaussian matrices, off-diagonal variance 1, diagonal variance 2 (GOE)."""
        g = counter_rng.normal(key, (count, self.n, self.n))
        return (g + jnp.swapaxes(g, -1, -2)) / jnp.sqrt(jnp.asarray(2.0, g.dtype))

    def make_sample(self, problem, inputs, noise):
        return {"x": inputs, "a": noise}

    def _residual(self, w, batch, problem):
        return jnp.einsum("ij,bj->bi", problem["teacher"] - w, batch["x"])  # (W_t − W) x_b

    def loss(self, params, batch, mask, problem, hp):
        r = self._residual(params, batch, problem)
        return masked_mean(0.5 * tree_sum((r * r).T), mask)

    def objective(self, params, batch, mask, problem, hp):
        """ℓ − A⟨a, W⟩: the function whose gradient SGD follows."""
        drive = hp["noise"] * jnp.einsum("bij,ij->b", batch["a"], params)
        return self.loss(params, batch, mask, problem, hp) - masked_mean(drive, mask)

    def loss_and_grad(self, params, aux, batch, mask, key, problem, hp):
        r = self._residual(params, batch, problem)
        # ∇L_B = −mean_b [ r_b x_bᵀ + A a_b ]
        outer = r[:, :, None] * batch["x"][:, None, :]
        grad = -masked_mean(outer + hp["noise"] * batch["a"], mask)
        return masked_mean(0.5 * tree_sum((r * r).T), mask), grad, aux

    def trained_matrix(self, params):
        return params

    def observables(self, params, params0, problem, test, hp, data=None):
        return {"error_fro2": jnp.sum((params - problem["teacher"]) ** 2)}

    def observable_axes(self):
        return {"error_fro2": ()}
