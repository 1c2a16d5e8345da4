"""Linear one-hidden-layer network, both layers trained (SCIENCE.md §3.4).

    y = W₂ W₁ x,  W₁: N_h×N_in,  W₂: N_out×N_h,  x ~ N(0, I_{N_in}),  target M_t (N_out×N_in)
    loss                  ℓ = ½ |(W₂W₁ − M_t) x|²
    objective             ℓ − A ⟨a, W₂W₁⟩_F,   a: N_out×N_in, i.i.d. N(0, 1) entries per sample
    gradients             G_B = −mean_b [ (M_t − M) x_b x_bᵀ + A a_b ],  M = W₂W₁
                          ∇_{W₁} = W₂ᵀ G_B,   ∇_{W₂} = G_B W₁ᵀ

As in the teacher–student model the injected noise ``a`` drives the product M but is not part
of the reported loss. The target is a matrix with given singular values in random bases
(``teacher = "svd"``), a product of two Gaussian matrices (``"product"``) or any matrix
(``"matrix"``).

Theory (derivation; checked in tests/test_linear_net.py and `dbm reproduce linear-net`).

1. The conserved quantity. For ANY G, one step W₁' = W₁ − αW₂ᵀG, W₂' = W₂ − αGW₁ᵀ changes
   D = W₁W₁ᵀ − W₂ᵀW₂ by exactly

       ΔD = α² (W₂ᵀ G Gᵀ W₂ − W₁ Gᵀ G W₁ᵀ)                                   (exact)

   so D is conserved by gradient flow (over a time τ = αn its change is O(α)) and moves under
   SGD only at O(α²) per step.

2. The product. Exactly, E = M − M_t obeys E' = E − α(P G + G Q) + α² G Mᵀ G with
   P = W₂W₂ᵀ, Q = W₁ᵀW₁. Linearised around a point (W₁*, W₂*) of the solution manifold
   W₂W₁ = M_t (P, Q frozen there, G = E C_B − A ā, C_B = mean x xᵀ, ā = mean a):

       E' = E − α (P E C_B + E C_B Q) + α A (P ā + ā Q)

   a linear map with multiplicative noise, as in the teacher–student model. With x and a fresh
   every step, Σ = E[vec E vec Eᵀ] (row-major vec) obeys the exact recursion

       Σ' = L₀ Σ L₀ᵀ + (α²/|B|) Σ_{mj} K_mj Σ (K_mj + K_jm)ᵀ + (α²A²/|B|) L₁ L₁ᵀ
       L₀ = 1 − α(P⊗1 + 1⊗Q),  L₁ = P⊗1 + 1⊗Q,  K_mj = P⊗e_m e_jᵀ + 1⊗Q e_m e_jᵀ

   (Isserlis: Cov(C_mj, C_nl) = (δ_mn δ_jl + δ_ml δ_jn)/|B|). ``stationary_covariance`` solves
   (1 − T) Σ = noise. The dropped terms (α² G Mᵀ G, the motion of P and Q) are of relative order
   αA²/|B|: they shift the mean of E by O(αA²/|B|), not its second moments at this order.

   Square net, N_in = N_h = N_out = N, degenerate target M_t = s₀ U Vᵀ, balanced point: in the
   singular bases P = Q = s₀ 1 and the map is the teacher–student map with the effective rate
   α_e = 2 s₀ α and i.i.d. (not symmetric) noise. The solution is then isotropic, Σ = v δ_ik δ_jl
   (the b, c parts of the TS ansatz decouple and vanish), with

       v = α_e A² / (|B| (2 − α_e (1 + (N+1)/|B|)))                          (exact)

   (``stationary_entry_var``): entries of E i.i.d. with variance v; stable iff
   α_e (1 + (N+1)/|B|) < 2.

   Mean. At second order E has a mean μ·1 (balanced square point): the α²GMᵀG term gives
   +α²s₀(A²/|B| + v) per step, and P − s₀ ≈ Q − s₀ ≈ sym Ẽ, correlated with E, give
   −α E[sym(Ẽ)Ẽ + Ẽ sym(Ẽ)] = −α(N + 1)v; so μ = α(A²/|B| + v)/2 − (N + 1)v/(2s₀), negative
   for N ≳ 2 (``dysonbm.analysis.linear_net.predicted_centre``; measured at N = 32 to 4·10⁻⁵).

3. Zero modes. The kernel of (δW₁, δW₂) ↦ W₂*δW₁ + δW₂W₁* is the symmetry orbit
   δW₁ = X W₁*, δW₂ = −W₂* X (X ∈ gl(N_h), N_h ≤ rank): the linearised dynamics has no restoring
   force there. Its antisymmetric part (W₁ → O W₁, W₂ → W₂ Oᵀ) rotates both Gram matrices and
   leaves every spectrum unchanged: it diffuses freely and is invisible here. Its symmetric part
   changes D, and the linearised D is exactly conserved (δD' = δD, from 1.): the per-layer
   spectra are slaved to the product's through the conserved D₀ of the start. Beyond linear
   order D random-walks: at a balanced square point, with G ≈ −Aā, ΔD = α² s₀ A² R(āāᵀ − āᵀā)Rᵀ,
   of mean zero and variance (per step) α⁴s₀²A⁴·2N/|B|² off the diagonal, 4(N−1)α⁴s₀²A⁴/|B|² on
   it (``balance_step_var``), to leading order in α (the cross terms of Aā with E C_B and the
   correlation with later E Eᵀ terms add O(α_e): measured 1.23× at α_e = 0.1, 1.5× at 0.2, N = 2);
   for N_in ≠ N_out its mean
   α²A²/|B| (N_in W₂ᵀW₂ − N_out W₁W₁ᵀ) pulls D to N_out W₁W₁ᵀ = N_in W₂ᵀW₂. Both act on the slow
   time |B|/(α²A²N s₀) steps (8·10⁴ at α = 0.1, A = 0.1, |B| = 16, N = 2), so over a run D stays
   D₀ up to a random walk whose variance is O(α) of the levels' (the `balance_drift` observable
   records |D − D₀|_F). The physically right treatment is therefore: D is a conserved label of
   the replica, fixed by its init; the fluctuations live in E alone.

4. Per-layer levels. With D = D₀ commuting with the Gram matrices (in particular D₀ = 0, the
   balanced start ``start = "teacher"``; a small random init has D₀ = O(init_std²)), each level
   pair obeys λ_k − μ_k = d_k, λ_k μ_k = σ_k² (σ_k the product's singular values), so
   λ_k = (d_k + sqrt(d_k² + 4σ_k²))/2 and δλ_k = δμ_k = δσ_k · 2σ_k/sqrt(d_k² + 4σ_k²): both
   layers carry the same level fluctuation, and for D₀ = 0 the levels of W₁W₁ᵀ and W₂ᵀW₂ ARE the
   singular values of M. Around a degenerate σ = s₀ block δσ = eig of the symmetric part of
   Uᵀ E V, a GOE matrix with off-diagonal variance τ² = v/2 and diagonal v = 2τ². Hence, per
   layer, ⟨S⟩ = sqrt(2π) τ ∝ sqrt(α s₀ A²/|B|) for N = 2 (Gaussian (u, v) with the exact
   covariance, as `teacher_student.stationary_mean_spacing`), a semicircle of radius
   R = 2 sqrt(N τ²) (per-layer levels) about s₀ for large N, and for the product's squared
   singular values σ² ≈ s₀² + 2s₀ δσ the same laws scaled by 2s₀. Beyond linear order the layer
   level matrix is sym Ẽ ± D/2 (layer 1, layer 2): D's slow walk adds (1/N)E tr D²/4 to the
   layers' second moment (1% at N = 32 after 400 steps) and nothing to the product's.

5. Coupled level equations. In τ = α·n the level matrix s₀ + sym Ẽ is a GOE Ornstein–Uhlenbeck
   process (rate γ = 2s₀, off-diagonal noise D = 2s₀²αA²/|B| to leading order; exactly, for the
   discrete map, γ = −ln(1 − α_e)/α and D = γv), so the product's singular values near s₀ obey
   the β = 1 DBM dσ_i = −γ(σ_i − s₀)dτ + D Σ_j dτ/(σ_i − σ_j) + sqrt(2D) dB_i. The layer levels
   follow λ_i = f(σ_i, d_i), μ_i = λ_i − d_i: two species bound level by level by the conserved
   D (an infinitely stiff bond λ_i − μ_i = d_i), each with drift −γ c_i(λ_i − λ_i*), Coulomb
   weight c_i² D and noise c_i² D, c_i = 2σ_i/sqrt(d_i² + 4σ_i²) (1 balanced). The stationary
   gas of each species is the β = 1 gas in a quadratic potential: the semicircle of 4., scaled
   by c_i (the generalised semicircle) for an unbalanced start.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import linalg
from dysonbm.models.base import Model, masked_mean, tree_sum

TEACHERS = ("svd", "product", "matrix")
STARTS = ("random", "teacher")


# one matrix per LAPACK call under vmap on CPU (`dysonbm.linalg`: batched kernels can deadlock)
_svd = linalg.per_matrix(lambda x: jnp.linalg.svd(x, full_matrices=False))
_qr = linalg.per_matrix(lambda x: jnp.linalg.qr(x))


def haar_orthogonal(key, n: int, dtype):
    """Haar-random n×n orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = _qr(jax.random.normal(key, (n, n), dtype))
    return q * jnp.sign(jnp.diagonal(r))


def balanced_factors(target, n_hidden: int):
    """``(W₁, W₂)`` with W₂W₁ the best rank-N_h approximation of ``target`` and
    W₁W₁ᵀ = W₂ᵀW₂ (D = 0): W₁ = sqrt(S) Vᵀ, W₂ = U sqrt(S) on the top N_h singular directions."""
    u, s, vt = _svd(target)
    k = min(n_hidden, s.shape[0])
    root = jnp.sqrt(s[:k])
    w1 = jnp.zeros((n_hidden, target.shape[1]), target.dtype).at[:k].set(root[:, None] * vt[:k])
    w2 = jnp.zeros((target.shape[0], n_hidden), target.dtype).at[:, :k].set(u[:, :k] * root[None, :])
    return w1, w2


# ---------------------------------------------------------------------------------------
# theory (module docstring): numpy, float64


def _stability_check(lr_eff, batch_size, n):
    rho = (1.0 - lr_eff) ** 2 + (n + 1.0) * lr_eff**2 / batch_size
    if not rho < 1.0:
        raise ValueError(f"effective lr 2·s0·lr = {lr_eff:g}, batch_size = {batch_size:g}: no stationary state "
                         f"(spectral radius {rho:.4g} ≥ 1 of the second-moment recursion)")


def stationary_entry_var(lr, batch_size, noise, s0, n):
    """Exact stationary variance v of each entry of E = W₂W₁ − M_t (in the singular bases) for a
    square net (N_in = N_h = N_out = n) near a balanced point of a degenerate target s₀·U Vᵀ."""
    lr_eff = 2.0 * float(s0) * float(lr)
    _stability_check(lr_eff, float(batch_size), n)
    return lr_eff * noise**2 / (batch_size * (2.0 - lr_eff * (1.0 + (n + 1.0) / batch_size)))


def layer_tau2(lr, batch_size, noise, s0, n):
    """Off-diagonal variance τ² = v/2 of the per-layer level matrix (balanced start)."""
    return 0.5 * stationary_entry_var(lr, batch_size, noise, s0, n)


def layer_mean_spacing(lr, batch_size, noise, s0):
    """Per-layer ⟨S⟩ of the level pair (n = 2, degenerate target, balanced start): the spacing
    of a 2×2 GOE matrix with off-diagonal variance τ², sqrt(2π) τ (exact second moments; the law
    of E is Gaussian only to leading order, as in the teacher–student model)."""
    return math.sqrt(2.0 * math.pi * layer_tau2(lr, batch_size, noise, s0, 2))


def second_moment_map(lr, batch_size, noise, w1, w2):
    """``(T, q)`` of the exact linearised recursion vec Σ' = T vec Σ + q at the point (w1, w2),
    Σ = Cov(vec E), vec row-major, T of shape (n², n²), n = N_out·N_in (module docstring)."""
    w1, w2 = np.asarray(w1, float), np.asarray(w2, float)
    n_out, n_in = w2.shape[0], w1.shape[1]
    p, q = w2 @ w2.T, w1.T @ w1
    i_out, i_in = np.eye(n_out), np.eye(n_in)
    l1 = np.kron(p, i_in) + np.kron(i_out, q)
    l0 = np.eye(n_out * n_in) - lr * l1
    units = np.eye(n_in)[:, None, :, None] * np.eye(n_in)[None, :, None, :]  # e_m e_jᵀ at [m, j]
    k = np.array([[np.kron(p, units[m, j]) + np.kron(i_out, q @ units[m, j]) for j in range(n_in)]
                  for m in range(n_in)])
    t = np.kron(l0, l0)
    for m in range(n_in):
        for j in range(n_in):
            t += lr**2 / batch_size * (np.kron(k[m, j], k[m, j]) + np.kron(k[m, j], k[j, m]))
    noise_cov = lr**2 * noise**2 / batch_size * (l1 @ l1.T)
    return t, noise_cov.reshape(-1)


MAX_GENERAL = 36  # N_out·N_in up to which the dense (N_out·N_in)² system is solved


def stationary_covariance(lr, batch_size, noise, w1, w2):
    """Exact stationary Cov(vec E) of the linearised online update at the point (w1, w2) of the
    solution manifold, shape (N_out·N_in, N_out·N_in); directions the update never reaches
    (outside the tangent image) get zero. ValueError when the second moments have no fixed
    point or the system is too large for the dense solve (use `stationary_entry_var`)."""
    lr, batch_size, noise = float(lr), float(batch_size), float(noise)
    n = np.asarray(w2).shape[0] * np.asarray(w1).shape[1]
    if n > MAX_GENERAL:
        raise ValueError(f"N_out·N_in = {n}: more than {MAX_GENERAL} for the dense second-moment solve")
    t, q = second_moment_map(lr, batch_size, noise, w1, w2)
    # the update moves E only within the range of L₁ = P⊗1 + 1⊗Q (the tangent image): solve there
    w1, w2 = np.asarray(w1, float), np.asarray(w2, float)
    l1 = np.kron(w2 @ w2.T, np.eye(w1.shape[1])) + np.kron(np.eye(w2.shape[0]), w1.T @ w1)
    lam, vec = np.linalg.eigh(l1)
    b = vec[:, lam > 1e-10 * max(lam.max(), 1e-300)]
    bb = np.kron(b, b)
    t_b, q_b = bb.T @ t @ bb, bb.T @ q
    rho = np.max(np.abs(np.linalg.eigvals(t_b))) if t_b.size else 0.0
    if not rho < 1.0:
        raise ValueError(f"lr = {lr:g}, batch_size = {batch_size:g}: no stationary state (spectral radius {rho:.4g})")
    sol = bb @ np.linalg.solve(np.eye(t_b.shape[0]) - t_b, q_b)
    sigma = sol.reshape(n, n)
    return 0.5 * (sigma + sigma.T)


def balance_step_var(lr, batch_size, noise, s0, n):
    """Leading-order per-step variance of ΔD at a balanced square point: (off-diagonal, diagonal)
    = α⁴s₀²A⁴/|B|² · (2N, 4(N − 1)) (module docstring, 3.)."""
    c = lr**4 * s0**2 * noise**4 / batch_size**2
    return c * 2.0 * n, c * 4.0 * (n - 1.0)


def semicircle_density(x, centre, radius):
    """Wigner semicircle (2/(πR²)) sqrt(R² − (x − c)²)."""
    y = np.asarray(x, float) - centre
    return 2.0 / (math.pi * radius**2) * np.sqrt(np.clip(radius**2 - y * y, 0.0, None))


# ---------------------------------------------------------------------------------------
# the model


@dataclasses.dataclass(frozen=True)
class LinearNet(Model):
    """Two trained layers y = W₂W₁x learning a target matrix under injected gradient noise."""

    name: ClassVar[str] = "linear_net"
    sweepable: ClassVar[tuple[str, ...]] = ("noise",)
    has_noise: ClassVar[bool] = True
    # as the teacher–student model: inputs shared by a point's replicas, each replica its own
    # frozen noise sequence, one target for the run
    ensemble: ClassVar[dict] = {"problem": "run", "inputs": "point", "noise": "replica", "test": "run"}

    n_in: int = 2
    n_hidden: int = 2
    n_out: int = 2
    teacher: str = "svd"  # svd | product | matrix
    teacher_singular_values: tuple = (1.0, 1.0)  # "svd": at most min(n_in, n_out) values
    random_teacher_basis: bool = True  # "svd": Haar U, V (else the identity's columns)
    teacher_hidden: int = 2  # "product": inner width k of M_t = B A, A: k×n_in N(0, 1/n_in), B: n_out×k N(0, 1/k)
    teacher_matrix: tuple = ()  # "matrix": n_out rows of n_in values
    noise: float = 0.1  # A
    start: str = "random"  # random: W ~ N(0, init_std²); teacher: balanced factors of M_t + init_std·Z (D = 0)

    def __post_init__(self):
        for field in ("n_in", "n_hidden", "n_out", "teacher_hidden"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"model.{field} = {getattr(self, field)!r}: must be positive")
        if self.teacher not in TEACHERS:
            raise ValueError(f"model.teacher = {self.teacher!r}: one of {', '.join(TEACHERS)}")
        if self.start not in STARTS:
            raise ValueError(f"model.start = {self.start!r}: one of {', '.join(STARTS)}")
        if self.noise < 0:
            raise ValueError(f"model.noise = {self.noise!r}: must not be negative")
        if self.teacher == "svd":
            s = self.teacher_singular_values
            if not 1 <= len(s) <= min(self.n_in, self.n_out) or any(not v >= 0 for v in s):
                raise ValueError(f"model.teacher_singular_values = {list(s)!r}: needs 1 to "
                                 f"min(n_in, n_out) = {min(self.n_in, self.n_out)} non-negative values")
        if self.teacher == "matrix":
            rows = self.teacher_matrix
            if len(rows) != self.n_out or any(len(r) != self.n_in for r in rows):
                raise ValueError(f"model.teacher_matrix = {[list(r) for r in rows]!r}: needs n_out = {self.n_out} "
                                 f"rows of n_in = {self.n_in} values")

    # -- problem ----------------------------------------------------------------------------
    def target(self, key):
        dtype = jnp.result_type(float)
        if self.teacher == "matrix":
            return jnp.asarray(self.teacher_matrix, dtype)
        if self.teacher == "product":
            ka, kb = jax.random.split(key)
            a = jax.random.normal(ka, (self.teacher_hidden, self.n_in), dtype) / math.sqrt(self.n_in)
            b = jax.random.normal(kb, (self.n_out, self.teacher_hidden), dtype) / math.sqrt(self.teacher_hidden)
            return b @ a
        s = jnp.asarray(self.teacher_singular_values, dtype)
        k = s.shape[0]
        if self.random_teacher_basis:
            ku, kv = jax.random.split(key)
            u, v = haar_orthogonal(ku, self.n_out, dtype)[:, :k], haar_orthogonal(kv, self.n_in, dtype)[:, :k]
        else:
            u, v = jnp.eye(self.n_out, k, dtype=dtype), jnp.eye(self.n_in, k, dtype=dtype)
        return (u * s) @ v.T

    def problem(self, key):
        target = self.target(key)
        w1, w2 = balanced_factors(target, self.n_hidden)
        return {"teacher": target, "w1_star": w1, "w2_star": w2}

    # -- per replica --------------------------------------------------------------------------
    def init(self, key, problem, hp):
        k1, k2 = jax.random.split(key)
        dtype = problem["teacher"].dtype
        if self.start == "teacher":
            # balanced (D = 0 exactly) factors of the target moved by init_std·Z
            z = jax.random.normal(k1, problem["teacher"].shape, dtype)
            w1, w2 = balanced_factors(problem["teacher"] + hp["init_std"] * z, self.n_hidden)
            return {"w1": w1, "w2": w2}, ()
        w1 = hp["init_std"] * jax.random.normal(k1, (self.n_hidden, self.n_in), dtype)
        w2 = hp["init_std"] * jax.random.normal(k2, (self.n_out, self.n_hidden), dtype)
        return {"w1": w1, "w2": w2}, ()

    def draw_input(self, key):
        return jax.random.normal(key, (self.n_in,), jnp.result_type(float))

    def draw_noise(self, key):
        return jax.random.normal(key, (self.n_out, self.n_in), jnp.result_type(float))

    def make_sample(self, problem, inputs, noise):
        return {"x": inputs, "a": noise}

    @staticmethod
    def product(params):
        return params["w2"] @ params["w1"]

    def _residual(self, params, batch, problem):
        return jnp.einsum("ij,bj->bi", problem["teacher"] - self.product(params), batch["x"])  # (M_t − M) x_b

    def loss(self, params, batch, mask, problem, hp):
        r = self._residual(params, batch, problem)
        return masked_mean(0.5 * tree_sum((r * r).T), mask)

    def objective(self, params, batch, mask, problem, hp):
        """ℓ − A⟨a, W₂W₁⟩: the function whose gradient SGD follows."""
        drive = hp["noise"] * jnp.einsum("bij,ij->b", batch["a"], self.product(params))
        return self.loss(params, batch, mask, problem, hp) - masked_mean(drive, mask)

    def loss_and_grad(self, params, aux, batch, mask, key, problem, hp):
        r = self._residual(params, batch, problem)
        outer = r[:, :, None] * batch["x"][:, None, :]
        g = -masked_mean(outer + hp["noise"] * batch["a"], mask)  # ∂/∂M of the batch objective
        grads = {"w1": params["w2"].T @ g, "w2": g @ params["w1"].T}
        return masked_mean(0.5 * tree_sum((r * r).T), mask), grads, aux

    def trained_matrix(self, params):
        return self.product(params)

    def observables(self, params, params0, problem, test, hp, data=None):
        w1, w2 = params["w1"], params["w2"]
        balance = w1 @ w1.T - w2.T @ w2
        balance0 = params0["w1"] @ params0["w1"].T - params0["w2"].T @ params0["w2"]
        m = self.product(params)
        drift = balance - balance0
        return {
            "gram1": linalg.eigvalsh(w1 @ w1.T),  # W₁W₁ᵀ
            "gram2": linalg.eigvalsh(w2.T @ w2),  # W₂ᵀW₂
            "product_sv2": linalg.svdvals(m) ** 2,  # squared singular values of W₂W₁
            "balance": linalg.eigvalsh(0.5 * (balance + balance.T)),
            "balance_drift": jnp.sqrt(tree_sum((drift * drift).ravel())),  # |D − D₀|_F
            "balance_drift_01": drift[0, min(1, self.n_hidden - 1)],  # one entry of D − D₀
            "error_fro2": tree_sum(((m - problem["teacher"]) ** 2).ravel()),
        }

    def observable_axes(self):
        return {"gram1": ("hidden",), "gram2": ("hidden",), "product_sv2": ("level",), "balance": ("hidden",),
                "balance_drift": (), "balance_drift_01": (), "error_fro2": ()}
