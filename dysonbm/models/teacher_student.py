"""Linear teacher–student model with injected symmetric noise (SCIENCE.md §3.1).

    y = W x,  W: N×N,  teacher W_t = O diag(d) Oᵀ,  x ~ N(0, I_N)
    loss                  ℓ = ½ |(W − W_t) x|²
    per-batch gradient    ∇L_B = −mean_b [ (W_t − W) x_b x_bᵀ + A a_b ]

The gradient is that of the objective ℓ − A ⟨a, W⟩_F: the injected noise drives W but is not
part of the reported loss (its mean over a finite set would only add a meaningless offset).

``a`` is a symmetric Gaussian matrix (off-diagonal variance 1, diagonal 2) drawn per sample;
its amplitude A (``noise``) enters through ``hp`` so it can be swept. With fresh data every
step W − W_t relaxes to a GOE-like matrix of off-diagonal variance
τ² = α A² / (|B| (2 − α (1 + (N+1)/|B|))): see ``stationary_tau2``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from dysonbm.models.base import Model, masked_mean, tree_sum


def symmetric_noise(key, n: int, dtype=jnp.float32):
    """Symmetric N×N Gaussian matrix, off-diagonal variance 1, diagonal variance 2 (GOE)."""
    g = jax.random.normal(key, (n, n), dtype)
    return (g + g.T) / jnp.sqrt(jnp.asarray(2.0, dtype))


def stationary_tau2(lr, batch_size, noise, n: int = 2):
    """Off-diagonal variance of W − W_t in the stationary state (online data, small lr)."""
    return lr * noise**2 / (batch_size * (2.0 - lr * (1.0 + (n + 1.0) / batch_size)))


@dataclasses.dataclass(frozen=True)
class TeacherStudent(Model):
    """N×N linear student learning a symmetric teacher under injected gradient noise."""

    name: ClassVar[str] = "teacher_student"
    sweepable: ClassVar[tuple[str, ...]] = ("noise",)

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

    def sample(self, key, problem):
        kx, ka = jax.random.split(key)
        dtype = problem["teacher"].dtype
        return {"x": jax.random.normal(kx, (self.n,), dtype), "a": symmetric_noise(ka, self.n, dtype)}

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

    def observables(self, params, params0, problem, test, hp):
        return {"error_fro2": jnp.sum((params - problem["teacher"]) ** 2)}

    def observable_axes(self):
        return {"error_fro2": ()}
