"""Gaussian restricted Boltzmann machine learning a free scalar field (SCIENCE.md §3.2).

Visible ``φ ∈ R^{N_v}``, hidden ``h ∈ R^{N_h}``, coupling ``W`` (``N_v × N_h``)::

    p(φ, h) ∝ exp(φᵀ W h − (μ²/2) φᵀφ − |h − η|²/(2σ_h²))
    p(φ)    ∝ exp(−½ φᵀ K φ + φᵀ b),    K = μ² 1 − σ_h² W Wᵀ,   b = W η
    p(h|φ)  = N(η + σ_h² Wᵀφ, σ_h²),    p(φ|h) = N(W h / μ², 1/μ²)

so the model marginal is ``N(m, K⁻¹)`` with ``m = K⁻¹ b`` (zero for ``η = 0``), defined only
while ``K`` is positive definite. The target is ``N(0, K_φ⁻¹)``; for the free field on a
periodic lattice ``K_φ = (m² + 2) δ_ij − δ_{i,j+1} − δ_{i,j−1}`` with eigenvalues
``κ_k = m² + 2 − 2 cos(2πk/N)``.

Log-likelihood gradient (``ĥ(φ) = η + σ_h² Wᵀφ`` the conditional mean of ``h``)::

    ∂⟨log p⟩/∂W = ⟨φ ĥᵀ⟩_target − ⟨φ ĥᵀ⟩_model
                = σ_h² (⟨φφᵀ⟩_target − ⟨φφᵀ⟩_model) W + (⟨φ⟩_target − ⟨φ⟩_model) ηᵀ

The second term vanishes for ``η = 0``, leaving ``W ← W + α σ_h² (C_target − C_model) W``.
``grads`` is minus this, so an optimiser step ``W ← W − α·grads`` is likelihood ascent.

Trained scalars (``learn``, off by default). The marginal is exactly ``N(m, K⁻¹)``, so the
population NLL ``L = ½[tr(K C) − log det K + bᵀK⁻¹b] + const`` (``C = ⟨φφᵀ⟩_target``) has
``dL = ½ tr(dK (C − K⁻¹ − m mᵀ)) + mᵀ db``. With ``dK = dμ² 1 − dσ_h² W Wᵀ`` and ``b = η W 1``
(one ``η`` shared by every hidden unit, as in ``hp``)::

    ∂L/∂μ²  = ½ (⟨|φ|²⟩_target − ⟨|φ|²⟩_model)
    ∂L/∂η   = ⟨1ᵀWᵀφ⟩_model − ⟨1ᵀWᵀφ⟩_target
    ∂L/∂σ_h = σ_h (⟨|Wᵀφ|²⟩_model − ⟨|Wᵀφ|²⟩_target)

the positive minus the negative phase of ``∂E/∂θ`` of the joint energy
``E = −φᵀWh + (μ²/2)|φ|² + |h − η|²/(2σ_h²)``, averaged over ``h|φ`` (the ``N_h/σ_h`` of
``⟨|h − η|²⟩_{h|φ}/σ_h³`` is the same in both phases and cancels). The model phase is the
persistent chains' masked mean, as for ``W``. With μ² trained the cut-off moves: a mode with
``κ > μ²`` pushes μ² up (``∂L/∂μ² = ½(1/κ − 1/μ²) < 0`` per cut mode) until it is learnt.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from dysonbm import counter_rng, linalg
from dysonbm.models.base import Model, tree_sum

_DATA_TERMS = ("exact", "samples")
#: scalars that ``learn`` may train along with ``W``
LEARNABLE = ("mu2", "eta", "sigma_h")


# -- theory (host side, numpy) --------------------------------------------------------------


def lattice_kernel(n: int, m2: float) -> np.ndarray:
    """Free-field kernel ``K_φ = (m² + 2) 1 − P − Pᵀ`` on a periodic chain of ``n`` sites.

    ``P`` is the cyclic shift; for ``n ≤ 2`` the two neighbours coincide and add up, which
    keeps the spectrum equal to :func:`lattice_eigenvalues`.
    """
    shift = np.roll(np.eye(n), 1, axis=1)
    return (m2 + 2.0) * np.eye(n) - shift - shift.T


def lattice_eigenvalues(n: int, m2: float) -> np.ndarray:
    """``κ_k = m² + 2 − 2 cos(2πk/n)``, ascending (pairs ``k, n − k`` are degenerate)."""
    k = np.arange(n)
    return np.sort(m2 + 2.0 - 2.0 * np.cos(2.0 * np.pi * k / n))


def fixed_points(kappa, mu2: float, sigma_h: float = 1.0, n_hidden: int | None = None) -> np.ndarray:
    """Stable fixed points of ``σ_h² ξ²`` (``ξ`` the singular values of ``W``), descending.

    The ``n_hidden`` softest target modes are learnt, ``σ_h² ξ_α² = μ² − κ_α``, if ``κ_α < μ²``;
    the rest, and hidden units beyond ``len(kappa)``, sit at 0. The scaled value is what the
    ``xi2`` observable records and does not depend on ``σ_h``; the eigenvalues of ``WᵀW``
    are the result divided by ``sigma_h**2``.
    """
    if not sigma_h > 0:
        raise ValueError(f"sigma_h must be positive, got {sigma_h!r}")
    kappa = np.sort(np.asarray(kappa, dtype=float))
    n_hidden = kappa.size if n_hidden is None else int(n_hidden)
    out = np.zeros(n_hidden)
    soft = kappa[: min(n_hidden, kappa.size)]
    out[: soft.size] = np.maximum(mu2 - soft, 0.0)
    return out


def relaxation_rates(kappa, mu2: float, sigma_h: float = 1.0) -> np.ndarray:
    """Linearised relaxation rate of each mode about its fixed point, per unit ``τ = α·steps``.

    In the target's eigenbasis the exact flow of ``x = σ_h² ξ²`` (``N_h ≥ N_v``, ``η = 0``) is
    ``dx/dτ = 2 σ_h² x (1/κ − 1/(μ² − x))``. Linearising about ``x* = μ² − κ`` gives
    ``2 σ_h² (μ² − κ)/κ²`` (the ``(μ² − κ)/κ²`` of SCIENCE.md §3.2 up to the factor
    ``2 σ_h²``); about ``x* = 0`` for cut-off modes (``κ > μ²``) it gives ``2 σ_h² (κ − μ²)/(κ μ²)``.
    """
    kappa = np.asarray(kappa, dtype=float)
    learnt = 2.0 * sigma_h**2 * (mu2 - kappa) / kappa**2
    cut = 2.0 * sigma_h**2 * (kappa - mu2) / (kappa * mu2)
    return np.where(kappa < mu2, learnt, cut)


#: relative tolerance below which two eigenvalues of K_φ are one (degenerate) target mode
DEGENERATE_RTOL = 1e-6


def target_modes(kernel, rtol: float = DEGENERATE_RTOL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenspaces of the target kernel ``K_φ``, softest first.

    Returns ``(kappa, Q, mode)``: the eigenvalues ascending ``(N_v,)``, the eigenvectors as the
    columns of ``Q`` in that order, and for each column the index of its eigenspace (target
    mode), eigenvalues within ``rtol`` of the largest |κ| of each other sharing one.
    """
    kappa, Q = np.linalg.eigh(np.asarray(kernel, dtype=float))
    scale = max(float(np.max(np.abs(kappa))), 1e-12)
    mode = np.concatenate([[0], np.cumsum(np.diff(kappa) > rtol * scale)]).astype(int)
    return kappa, Q, mode


def assign_modes(u, Q, mode):
    """Slot of each level by eigenvector overlap with the target modes (jit-able).

    ``u`` ``(N_v, n)``: eigenvectors of ``W Wᵀ`` of the ``n = min(N_v, N_h)`` largest levels,
    descending; ``Q``, ``mode`` from :func:`target_modes`. Slot ``j < n`` is the j-th softest
    eigenvector of ``K_φ``; a mode has as many slots as its dimension, cut at ``n`` (with fewer
    hidden units than sites only the softest modes are learnt, `fixed_points`). The overlap of
    level ``a`` with mode ``m`` is ``Σ_{j in m} (q_j·u_a)²``, which does not depend on the basis
    chosen inside a degenerate eigenspace. Greedy: the largest remaining overlap whose level is
    unassigned and whose mode has a free slot is assigned first. Within a mode, levels fill its
    slots in descending order.

    Returns ``(slot, overlap)``: ``(n,)`` int slot of each level and its overlap with its mode.
    """
    n = u.shape[1]
    n_modes = int(mode.max()) + 1
    onehot = np.eye(n_modes)[mode]  # (N_v, n_modes)
    capacity = jnp.asarray(onehot[:n].sum(axis=0), jnp.int32)
    start = jnp.asarray(np.searchsorted(mode, np.arange(n_modes)), jnp.int32)
    overlap = ((jnp.asarray(Q, u.dtype).T @ u) ** 2).T @ jnp.asarray(onehot, u.dtype)  # (n, n_modes)

    def pick(_, carry):
        assigned, cap = carry
        free = (assigned < 0)[:, None] & (cap > 0)[None, :]
        a, m = jnp.divmod(jnp.argmax(jnp.where(free, overlap, -jnp.inf)), n_modes)
        return assigned.at[a].set(m), cap.at[m].add(-1)

    assigned, _ = jax.lax.fori_loop(0, n, pick, (jnp.full(n, -1, jnp.int32), capacity))
    member = (assigned[:, None] == jnp.arange(n_modes)[None, :]).astype(jnp.int32)
    rank = jnp.take_along_axis(jnp.cumsum(member, axis=0) - member, assigned[:, None], axis=1)[:, 0]
    return start[assigned] + rank, jnp.take_along_axis(overlap, assigned[:, None], axis=1)[:, 0]


# -- the model ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GaussianRBM(Model):
    """Gaussian RBM trained by persistent contrastive divergence on a free scalar field.

    Static fields: ``n_visible`` (``N_v``, the lattice sites of the target), ``n_hidden``
    (``N_h``), ``m2`` (target mass², lattice kernel only), ``kernel`` (``"lattice"`` or a
    symmetric positive-definite ``N_v × N_v`` matrix, stored as a tuple of tuples),
    ``data_term`` (``"exact"``: ``⟨φφᵀ⟩_target = K_φ⁻¹``; ``"samples"``: masked mean over the
    mini-batch of target samples), ``gibbs_steps`` (``k``, Gibbs sweeps per update),
    ``chains`` (number of persistent chains, see below). ``mu2``, ``sigma_h`` and ``eta`` are
    defaults; the functions read the per-replica values from ``hp``, which also holds the
    init width ``init_std`` (a config's ``train.init_std``, not a model setting).

    Persistent chains: ``aux = {"phi": (chains, N_v)}`` holds one visible configuration per
    chain. Their number is a shape, so it is the static field ``chains``, which the engine
    sets to the padded batch size, ``model.replace(chains=B)``, before tracing (the runner
    pads to the batch size of the chunk's grid points). Chain ``b`` contributes to the model
    term iff ``mask[b] = 1``, so a replica with ``hp["batch_size"] = |B|`` averages over
    exactly ``|B|`` chains; the others are advanced but ignored. Chains start in equilibrium
    with the initial model (exact draws from ``N(m, K⁻¹)``), so there is no burn-in transient.

    ``learn``: the scalars of ``LEARNABLE`` trained by their likelihood gradient (module
    docstring), default none. A trained scalar is a parameter (shape ``()``), started at the
    replica's ``hp`` value; every function then reads it from ``params``, and ``observables``
    records it under its own name.

    Parameters ``{"W": (N_v, N_h)}`` plus the trained scalars. Batches (only with ``data_term = "samples"``, see
    ``uses_data``) are target samples of shape ``(B_max, N_v)``.

    Losses: both ``loss`` and ``loss_and_grad`` return the exact population negative
    log-likelihood per sample of the target under the model (the batch is not used, even for
    ``data_term = "samples"``, so the recorded loss carries no sampling noise)::

        NLL = ½ [tr(K K_φ⁻¹) − log det K + bᵀ K⁻¹ b + N_v log 2π]

    It is ``+inf`` whenever ``K`` is not positive definite (no exception), which marks the
    replica as diverged.
    """

    name: ClassVar[str] = "gaussian_rbm"
    sweepable: ClassVar[tuple[str, ...]] = ("mu2", "sigma_h", "eta")
    # the target is deterministic; target samples (data_term = "samples") are a replica's own
    ensemble: ClassVar[dict] = {"problem": "run", "inputs": "replica", "test": "run"}

    n_visible: int = 10
    n_hidden: int = 10
    mu2: float = 9.0
    sigma_h: float = 1.0
    eta: float = 0.0
    m2: float = 4.0
    kernel: str | tuple[tuple[float, ...], ...] = "lattice"
    data_term: str = "exact"
    gibbs_steps: int = 3
    chains: int = 0
    learn: tuple[str, ...] = ()

    def __post_init__(self):
        for field in ("n_visible", "n_hidden", "gibbs_steps"):
            value = getattr(self, field)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if not (isinstance(self.chains, (int, np.integer)) and self.chains >= 0):
            raise ValueError(f"chains must be a non-negative integer, got {self.chains!r}")
        for field in ("mu2", "sigma_h"):
            value = getattr(self, field)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{field} must be positive, got {value!r}")
        if not np.isfinite(self.eta):
            raise ValueError(f"eta must be finite, got {self.eta!r}")
        learn = (self.learn,) if isinstance(self.learn, str) else self.learn
        if not isinstance(learn, (tuple, list)) or any(x not in LEARNABLE for x in learn) or len(set(learn)) < len(learn):
            raise ValueError(f"learn must be a list of distinct names from {list(LEARNABLE)}, got {self.learn!r}")
        object.__setattr__(self, "learn", tuple(learn))
        if self.data_term not in _DATA_TERMS:
            raise ValueError(f"data_term must be one of {_DATA_TERMS}, got {self.data_term!r}")
        if isinstance(self.kernel, str):
            if self.kernel != "lattice":
                raise ValueError(f"kernel must be 'lattice' or a matrix, got {self.kernel!r}")
            if not (np.isfinite(self.m2) and self.m2 > 0):
                # κ_0 = m²: the lattice kernel is singular or indefinite otherwise
                raise ValueError(f"m2 must be positive for the lattice kernel, got {self.m2!r}")
        else:
            object.__setattr__(self, "kernel", _validated_kernel(self.kernel, self.n_visible))

    def unread_settings(self) -> dict[str, str]:
        """Fields that the other settings leave unread, with the reason (a config giving one is refused)."""
        if isinstance(self.kernel, str):
            return {}
        return {"m2": "the mass of the lattice kernel, unread with a kernel matrix"}

    @property
    def uses_data(self) -> bool:
        """Target samples are needed only for the sampled data term."""
        return self.data_term == "samples"

    # -- shared problem ------------------------------------------------------------------

    def target_kernel(self) -> np.ndarray:
        """``K_φ`` as a float64 numpy array."""
        if isinstance(self.kernel, str):
            return lattice_kernel(self.n_visible, self.m2)
        return np.asarray(self.kernel, dtype=float)

    def problem(self, key):
        """``{"kernel": K_φ, "cov": K_φ⁻¹, "cov_chol": L}`` with ``L Lᵀ = K_φ⁻¹``.

        Deterministic (``key`` unused); computed in float64 on the host, then cast to the
        default float dtype.
        """
        del key
        kernel = self.target_kernel()
        cov = np.linalg.inv(kernel)
        cov = 0.5 * (cov + cov.T)
        return {
            "kernel": jnp.asarray(kernel),
            "cov": jnp.asarray(cov),
            "cov_chol": jnp.asarray(np.linalg.cholesky(cov)),
        }

    def draw_input(self, key):
        return self.draw_inputs(key, 1)[0]

    def draw_inputs(self, key, count):
        return counter_rng.normal(key, (count, self.n_visible))

    def make_sample(self, problem, inputs, noise):
        """One target configuration ``φ = L z ~ N(0, K_φ⁻¹)``, shape ``(N_v,)``."""
        return tree_sum(problem["cov_chol"].T * inputs[:, None])  # L z, summed in a fixed order

    # -- per replica ---------------------------------------------------------------------

    def init(self, key, problem, hp):
        """``W_ij ~ N(0, init_std²)``; ``chains`` visible configurations drawn from ``N(m, K⁻¹)``.

        With ``chains = 0`` (not yet set) the chain array is empty, enough for shape queries;
        ``loss_and_grad`` then refuses to run.
        """
        k_w, k_phi = jax.random.split(key)
        dtype = problem["cov"].dtype
        w = hp["init_std"] * jax.random.normal(k_w, (self.n_visible, self.n_hidden), dtype)
        chol, mean, _ = self._marginal(w, hp)
        # one row of normals per chain, drawn by position: chain c starts the same whatever the
        # number of chains (the runner pads them to the replica's own batch size)
        z = counter_rng.normal(k_phi, (self.chains, self.n_visible), dtype)
        # φ = m + L⁻ᵀ z has covariance (L Lᵀ)⁻¹ = K⁻¹; NaN if K is not positive definite
        phi = mean[None, :] + linalg.solve_lower_transposed(chol, z.T).T
        return {"W": w, **{name: jnp.asarray(hp[name], dtype) for name in self.learn}}, {"phi": phi}

    def loss_and_grad(self, params, aux, batch, mask, key, problem, hp):
        """Advance each chain ``k`` Gibbs sweeps, then ``grads = ⟨φ ĥᵀ⟩_model − ⟨φ ĥᵀ⟩_target``.

        The model term is the masked mean over the chains, the data term ``σ_h² K_φ⁻¹ W``
        (exact) or the masked mean over ``batch`` (samples). ``loss`` is the exact NLL.
        """
        if mask.shape[0] != self.chains:
            raise ValueError(
                f"chains ({self.chains}) must equal the padded batch size ({mask.shape[0]}): "
                "set it with model.replace(chains=B_max) before init"
            )
        hp = self.live(params, hp)
        w = params["W"]
        power, shift, cov = self._gibbs_law(w, hp)
        kernel = self._kernel(w, hp)
        # both factors in one unrolled Cholesky: its cost is in the number of operations
        chol, chol_k = linalg.cholesky(jnp.stack([cov, kernel]))
        phi = self._gibbs_draw(aux["phi"], key, power, shift, chol)
        model_term, model_scalars = _phases(*_moments(phi, mask), w, hp)
        if self.data_term == "exact":
            data_term, data_scalars = _phases(problem["cov"], jnp.zeros(self.n_visible, w.dtype), w, hp)
        else:
            data_term, data_scalars = _phases(*_moments(batch, mask), w, hp)
        grads = {"W": model_term - data_term}
        grads.update({name: data_scalars[name] - model_scalars[name] for name in self.learn})
        return self._nll(w, problem, hp, (kernel, chol_k)), grads, {"phi": phi}

    def loss(self, params, batch, mask, problem, hp):
        """Exact population NLL per target sample (``batch`` and ``mask`` unused). Its
        derivative in ``params`` is `exact_grad`, in closed form: differentiated through the
        unrolled Cholesky factorisation, the gradient the engine records at every snapshot
        took seconds to compile for the same numbers."""
        del batch, mask
        return _loss(self, params, problem, hp)

    def trained_matrix(self, params):
        return params["W"]

    def observables(self, params, params0, problem, test, hp, data=None):
        """``k_eigs``: eigenvalues of ``K``, ascending (``N_v``); ``xi2``: ``σ_h² ξ²``, the
        eigenvalues of ``σ_h² WᵀW``, ascending (``N_h``), whose fixed points are
        :func:`fixed_points`.

        ``xi2_by_mode``: the same levels in target-mode order (``N_h``, axis "mode"): slot ``j``
        holds the level whose eigenvector of ``W Wᵀ`` was assigned to the j-th softest
        eigenvector of ``K_φ`` (the static ``target_kernel``, equal to ``problem["kernel"]``)
        by :func:`assign_modes`; slots past ``N_v`` hold the zero levels of ``N_h > N_v``.
        Degenerate pairs are adjacent slots of one mode, whatever the order of the levels, so
        a level that strays past a neighbouring mode's stays in its own pair.
        ``mode_overlap``: per slot, the overlap (0 to 1) of that level's eigenvector with its
        mode's eigenspace; 0 for the zero levels, which have no eigenvector in visible space.
        Trained scalars (``learn``) are recorded under their names, shape ``()``.
        """
        hp = self.live(params, hp)
        w = params["W"]
        s2 = _sigma2(hp)
        xi2 = s2 * linalg.eigvalsh(w.T @ w)
        x, u = linalg.eigh(w @ w.T)
        n = min(self.n_visible, self.n_hidden)
        _, Q, mode = target_modes(self.target_kernel())
        slot, overlap = assign_modes(u[:, ::-1][:, :n], Q, mode)
        # levels and vectors from one decomposition, so a level travels with its own vector;
        # slots past N_v keep the zero levels (the smallest, first in ascending order)
        by_mode = xi2[::-1].at[slot].set(s2 * x[::-1][:n])
        return {
            "k_eigs": linalg.eigvalsh(self._kernel(w, hp)),
            "xi2": xi2,
            "xi2_by_mode": by_mode,
            "mode_overlap": jnp.zeros_like(by_mode).at[slot].set(overlap),
            **{name: params[name] for name in self.learn},
        }

    def observable_axes(self):
        return {"k_eigs": ("level",), "xi2": ("level",), "xi2_by_mode": ("mode",), "mode_overlap": ("mode",),
                **{name: () for name in self.learn}}

    def live(self, params, hp):
        """``hp`` with the trained scalars (``learn``) replaced by their current values in ``params``."""
        return {**hp, **{name: params[name] for name in self.learn}}

    # -- building blocks (public for tests and deterministic flows) ----------------------

    def gibbs(self, w, phi, key, hp):
        """``gibbs_steps`` sweeps ``φ → h ~ p(h|φ) → φ ~ p(φ|h)`` of every chain in ``phi``,
        drawn in one step from their exact joint transition.

        A sweep is linear and Gaussian in the row vector φ: ``φ' = φA + c + ε``, with
        ``A = σ_h² WWᵀ/μ²``, ``c = η 1ᵀWᵀ/μ²`` and ``ε ~ N(0, C)``, ``C = (A + I)/μ²`` (from
        ``σ_h z_h Wᵀ/μ² + z_v/μ``). So ``k`` sweeps are ``φ_k = φ_0 Aᵏ + c Σ_{j<k} Aʲ + ε_k``,
        ``ε_k ~ N(0, Σ_k)``, ``Σ_k = C Σ_{j<k} A²ʲ`` (A and C commute): the same law of φ_k
        given φ_0 as k sweeps, for N_v normals per chain instead of k (N_h + N_v). Only φ_k
        enters the update (the hidden units are Rao–Blackwellised), so the training is the
        same Markov chain in law.
        """
        power, shift, cov = self._gibbs_law(w, hp)
        return self._gibbs_draw(phi, key, power, shift, linalg.cholesky(cov))

    def _gibbs_law(self, w, hp):
        """``(Aᵏ, c Σ_{j<k} Aʲ, Σ_k)`` of `gibbs`.

        ``Σ_k = C Σ_{j<k} A²ʲ = Σ_{j<2k} Aʲ / μ² = S (1 + Aᵏ) / μ²`` with ``S = Σ_{j<k} Aʲ``:
        k products of N_v × N_v matrices, not the 2k − 1 of the sum of even powers.
        """
        mu2 = hp["mu2"]
        a = _sigma2(hp) * (w @ w.T) / mu2
        c = hp["eta"] * jnp.sum(w, axis=1) / mu2
        power, partial = a, jnp.eye(self.n_visible, dtype=w.dtype)  # Aʲ and Σ_{i<j} Aⁱ at j = 1
        for _ in range(1, self.gibbs_steps):
            partial = partial + power
            power = power @ a
        return power, c @ partial, (partial + partial @ power) / mu2

    def _gibbs_draw(self, phi, key, power, shift, chol):
        """φ_k = φ₀Aᵏ + c Σ Aʲ + z Lᵀ, with L the Cholesky factor of Σ_k."""
        z = counter_rng.normal(key, (phi.shape[0], self.n_visible), phi.dtype)
        return phi @ power + shift + z @ chol.T

    def exact_grad(self, params, problem, hp):
        """The gradient with both terms exact, ``−∂⟨log p⟩_target/∂W`` (= ``∂NLL/∂W``)::

            σ_h² (K⁻¹ + m mᵀ − K_φ⁻¹) W + m ηᵀ

        the expectation of ``loss_and_grad``'s ``grads`` over chains in equilibrium (and over
        target samples). Gradient flow on it gives the deterministic fixed points. The trained
        scalars (``learn``) get the phases of the module docstring with both terms exact.
        """
        hp = self.live(params, hp)
        w = params["W"]
        chol, mean, _ = self._marginal(w, hp)
        model_cov = linalg.cho_solve(chol, jnp.eye(self.n_visible, dtype=w.dtype))
        # the phases of `loss_and_grad` with the chains' and the target's exact moments
        model_term, model = _phases(model_cov + jnp.outer(mean, mean), mean, w, hp)
        data_term, data = _phases(problem["cov"], jnp.zeros_like(mean), w, hp)
        return {"W": model_term - data_term, **{name: data[name] - model[name] for name in self.learn}}

    def _kernel(self, w, hp):
        """``K = μ² 1 − σ_h² W Wᵀ``."""
        eye = jnp.eye(self.n_visible, dtype=w.dtype)
        return hp["mu2"] * eye - _sigma2(hp) * w @ w.T

    def _factor(self, w, hp, factored=None):
        """``K``, its Cholesky factor (NaN if not positive definite), the ok flag and ``b = W η``;
        ``factored``: ``(K, L)`` computed already."""
        if factored is None:
            kernel = self._kernel(w, hp)
            factored = kernel, linalg.cholesky(kernel)
        kernel, chol = factored
        return kernel, chol, jnp.all(jnp.isfinite(chol)), hp["eta"] * jnp.sum(w, axis=1)

    def _marginal(self, w, hp):
        """Cholesky factor of ``K`` (NaN if not positive definite), mean ``m = K⁻¹ W η``, ok flag."""
        _, chol, ok, b = self._factor(w, hp)
        return chol, linalg.cho_solve(chol, b), ok

    def _nll(self, w, problem, hp, factored=None):
        """``½ [tr(K K_φ⁻¹) − log det K + bᵀK⁻¹b + N log 2π]``, ``+inf`` if ``K`` is not positive definite."""
        kernel, chol, ok, b = self._factor(w, hp, factored)
        half = linalg.solve_lower(chol, b)  # bᵀK⁻¹b = |L⁻¹b|²: one triangular solve, not two
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        nll = 0.5 * (
            jnp.sum(kernel * problem["cov"]) - logdet + half @ half + self.n_visible * math.log(2 * math.pi)
        )
        return jnp.where(ok, nll, jnp.inf)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _loss(model, params, problem, hp):
    return model._nll(params["W"], problem, model.live(params, hp))


def _loss_jvp(model, primals, tangents):
    params, problem, hp = primals
    d_params, d_problem, d_hp = tangents
    value = _loss(model, params, problem, hp)
    grads = model.exact_grad(params, problem, hp)
    out = jnp.zeros_like(value)
    for name, d in d_params.items():
        if not isinstance(d, SymbolicZero):
            out = out + jnp.sum(grads[name] * d)
    leaves, tree = jax.tree_util.tree_flatten((problem, hp))
    d_leaves = tree.flatten_up_to((d_problem, d_hp))
    moving = [i for i, d in enumerate(d_leaves) if not isinstance(d, SymbolicZero)]
    if moving:  # rare (a derivative in the target or the settings): through the factorisation
        def nll(*moved):
            now = list(leaves)
            for i, x in zip(moving, moved):
                now[i] = x
            pr, h = jax.tree_util.tree_unflatten(tree, now)
            return model._nll(params["W"], pr, model.live(params, h))

        out = out + jax.jvp(nll, tuple(leaves[i] for i in moving), tuple(d_leaves[i] for i in moving))[1]
    return value, out


_loss.defjvp(_loss_jvp, symbolic_zeros=True)


def _sigma2(hp):
    return hp["sigma_h"] ** 2


def _moments(phi, mask):
    """Masked second moment ``⟨φφᵀ⟩`` and mean ``⟨φ⟩`` of the rows of ``phi``: every phase of
    the update is a function of these two, so the chains are read once."""
    # zero the padding first: 0 × (inf or NaN) in an unused slot must not leak into the means
    phi = jnp.where(mask[:, None] > 0, phi, 0.0)
    count = jnp.sum(mask)
    return jnp.einsum("b,bi,bj->ij", mask, phi, phi) / count, mask @ phi / count


def _phases(second, mean, w, hp):
    """``⟨φ ĥᵀ⟩`` with ``ĥ = η + σ_h² Wᵀφ`` (the Rao–Blackwellised ``⟨φ hᵀ⟩``) and the means of
    ``∂E/∂θ`` over ``h|φ`` for the scalars of ``LEARNABLE`` (module docstring), for ``φ`` with
    second moment ``second`` and mean ``mean``."""
    w_second = second @ w
    phase = _sigma2(hp) * w_second + hp["eta"] * mean[:, None]
    scalars = {"mu2": 0.5 * jnp.trace(second), "eta": -jnp.sum(mean @ w),
               "sigma_h": -hp["sigma_h"] * jnp.sum(w * w_second)}
    return phase, scalars


def _validated_kernel(kernel, n_visible: int) -> tuple[tuple[float, ...], ...]:
    """A symmetric positive-definite ``n_visible × n_visible`` matrix as a tuple of tuples."""
    try:
        arr = np.asarray(kernel, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"kernel must be a numeric matrix, got {kernel!r}") from err
    if arr.shape != (n_visible, n_visible):
        raise ValueError(
            f"kernel must have shape ({n_visible}, {n_visible}) (n_visible), got shape {arr.shape}: {kernel!r}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"kernel must be finite, got {kernel!r}")
    scale = np.max(np.abs(arr))
    if not np.allclose(arr, arr.T, rtol=0.0, atol=1e-12 * scale):
        raise ValueError(f"kernel must be symmetric, got {kernel!r}")
    lowest = np.linalg.eigvalsh(arr)[0]
    if not lowest > 0:
        raise ValueError(f"kernel must be positive definite (lowest eigenvalue {lowest:.3g}), got {kernel!r}")
    return tuple(tuple(float(x) for x in row) for row in arr)
