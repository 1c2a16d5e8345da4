"""Three-layer teacher–student network; only the middle matrix is trained (SCIENCE.md §3.3).

    x ∈ R^D → φ0 = tanh(M x) ∈ R^L → s = f(W φ0) ∈ R^K → ŷ = Z·s

M (L×D, entries N(0, 1/D)) and Z (K, entries N(0, 1/K)) are fixed and shared by teacher and
student; the teacher's W has entries N(0, 1/L); the student's starts with entries
N(0, σ_W²/L) where σ_W is the per-replica ``init_std``. Loss ℓ = ½ (ŷ − y)².

Samples store φ0 rather than x: M is fixed, so the first layer is computed once per sample
instead of once per step.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from dysonbm import counter_rng
from dysonbm import observables as obs
from dysonbm.models.base import Model, masked_mean, tree_sum
from dysonbm.summation import tree_sum_of

ACTIVATIONS = {
    "tanh": (jnp.tanh, lambda h, s: 1.0 - s * s),
    "relu": (jax.nn.relu, lambda h, s: (h > 0).astype(h.dtype)),
    "identity": (lambda h: h, lambda h, s: jnp.ones_like(h)),
}


# A product of the small matrices here, batched over replicas by ``vmap``, sums in an order
# that on XLA's CPU depends on the matrices' shapes but not on how many replicas the batch
# holds, provided there are at least two (the runner runs two or more per device, `simulate`
# pads to two) and the batch has two or more samples; `tests/test_engine.py` checks a
# replica's numbers bitwise across chunkings. A batch of one sample has its size-one axis
# simplified away, and XLA vectorises what is left with the chunk's shape, so it is summed
# elementwise in `tree_sum`'s order, as a dataset's labels are (`contract_hidden_by_sample`).
# HIGHEST: no reduced-precision (TF32) products on accelerators.
_EXACT = jax.lax.Precision.HIGHEST


def contract_hidden(phi0, w):
    """W φ0 for a batch (B, L) → (B, K): one matrix product (1.55× faster per step on CPU
    than products summed elementwise); elementwise in `tree_sum`'s order for a single sample."""
    if phi0.shape[0] == 1:
        return contract_hidden_by_sample(phi0, w)
    return jnp.matmul(phi0, w.T, precision=_EXACT)


def contract_hidden_by_sample(phi0, w):
    """W φ0 for a stack (n, L) → (n, K), summed over L in `tree_sum`'s order, one term per
    column of W: each sample's numbers are the same whatever n (a dataset's labels)."""
    return tree_sum_of(phi0[:, l, None] * w[None, :, l] for l in range(w.shape[1]))


def readout(s, z):
    """ŷ = s·Z for a batch s (B, K). As a matrix–vector product XLA turns it into a
    vectorised reduction whose order depends on the chunk; `tree_sum` fixes the order."""
    return tree_sum((s * z).T)


def per_sample_grads_from_features(W, Z, phi0, y, activation: str = "tanh") -> jax.Array:
    """g_n = −∂ℓ_n/∂W = −(ŷ_n − y_n) (Z ⊙ f'(W φ0_n)) φ0_nᵀ: ``(n, K, L)``, from the first-layer
    features φ0 (n, L), as samples store them."""
    f, fprime = ACTIVATIONS[activation]
    a = phi0 @ W.T
    s = f(a)
    residual = s @ Z - y
    back = -residual[:, None] * Z[None, :] * fprime(a, s)  # (n, K)
    return back[:, :, None] * phi0[:, None, :]


@dataclasses.dataclass(frozen=True)
class Multilayer(Model):
    """x (D) → tanh(M x) (L) → f(W ·) (K) → Z · (1); W (K×L) trained."""

    name: ClassVar[str] = "multilayer"
    # published: every seed draws its own M, Z, teacher W, dataset and test set
    ensemble: ClassVar[dict] = {"problem": "replica", "inputs": "replica", "test": "replica"}

    d_in: int = 3
    hidden: int = 32  # L
    features: int = 16  # K
    activation: str = "tanh"
    # record the Itô term and drift slope of the level SDE (the Langevin cross-check); they
    # cost K gradient JVPs on the test set per snapshot, about 5×10³ training steps' worth
    level_sde: bool = False

    def __post_init__(self):
        for name in ("d_in", "hidden", "features"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} = {getattr(self, name)!r}: must be positive")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation = {self.activation!r}: one of {', '.join(ACTIVATIONS)}")

    def problem(self, key):
        km, kz, kw = jax.random.split(key, 3)
        d, l, k = self.d_in, self.hidden, self.features
        return {
            "M": jax.random.normal(km, (l, d)) / jnp.sqrt(d),
            "Z": jax.random.normal(kz, (k,)) / jnp.sqrt(k),
            "teacher": jax.random.normal(kw, (k, l)) / jnp.sqrt(l),
        }

    def init(self, key, problem, hp):
        w = jax.random.normal(key, (self.features, self.hidden), problem["M"].dtype)
        return w * (hp["init_std"] / jnp.sqrt(self.hidden)), ()

    def features_of(self, w, phi0):
        """s = f(W φ0) for a batch φ0 (B, L) → (B, K), with the pre-activation."""
        h = phi0 @ w.T
        return self._f(h), h

    @property
    def _f(self):
        return ACTIVATIONS[self.activation][0]

    def output(self, w, phi0, z):
        return readout(self.features_of(w, phi0)[0], z)

    def draw_input(self, key):
        return self.draw_inputs(key, 1)[0]

    def draw_inputs(self, key, count):
        return counter_rng.normal(key, (count, self.d_in))

    def make_sample(self, problem, inputs, noise):
        return jax.tree_util.tree_map(lambda a: a[0], self.make_samples(problem, inputs[None], noise))

    def make_samples(self, problem, inputs, noises):
        # the whole stack at once, contractions summed elementwise in an order fixed by D, L
        # and K, so sample j's numbers depend neither on the stack's length nor on the chunk
        # (a sample at a time under vmap, by `tree_sum`, drew a dataset 6× slower)
        m = problem["M"]
        phi0 = jnp.tanh(tree_sum_of(inputs[:, d, None] * m[None, :, d] for d in range(m.shape[1])))  # (n, L)
        h = contract_hidden_by_sample(phi0, problem["teacher"])
        return {"phi0": phi0, "y": readout(self._f(h), problem["Z"])}

    def loss(self, params, batch, mask, problem, hp):
        r = self.output(params, batch["phi0"], problem["Z"]) - batch["y"]
        return masked_mean(0.5 * r * r, mask)

    def loss_and_grad(self, params, aux, batch, mask, key, problem, hp):
        f, fprime = ACTIVATIONS[self.activation]
        phi0, z = batch["phi0"], problem["Z"]
        h = contract_hidden(phi0, params)  # (B, K)
        s = f(h)
        r = readout(s, z) - batch["y"]  # (B,)
        weights = mask / jnp.sum(mask)
        # ∂ℓ/∂W = (ŷ − y) (Z ⊙ f'(h)) φ0ᵀ, batch-averaged with the mask folded into r
        delta = (r * weights)[:, None] * (z * fprime(h, s))  # (B, K)
        grad = tree_sum(delta[:, :, None] * phi0[:, None, :])  # Σ_b δ_b φ0_bᵀ
        return 0.5 * tree_sum(weights * r * r), grad, aux

    def trained_matrix(self, params):
        return params

    def observables(self, params, params0, problem, test, hp, data=None):
        """Phase-diagram observables on the shared test set (SCIENCE.md §3.3).

            q            (1/(nK)) Σ_nk s⁰_nk s_nk           overlap with the initial features
            hs           Σ_nk ĥ_nk ŝ_nk,  h_nk = y_n Z_k      alignment with the field
            gram         eigenvalues x_i of X = W Wᵀ, ascending (axis "level")
            mean_spacing ū = (x_1 − x_K)/(K − 1)
            K_t, V_t     drift and Coulomb terms of the extreme levels, V_t from Ṽ (the SDE's)
            V_t_paper    V_t from Ṽ_paper (the published criterion's)
            level_drift  K̃_ii,  pair_noise Ṽ_ij               coefficients of the level SDE
            pair_noise_paper  Ṽ_paper = Uᵀ Var_n(dX_n) U      the published noise matrix

        With ``level_sde``, the coefficients of the level SDE (`dysonbm.analysis.level_sde`), on
        the data the replica trains on (``data``; the test set without it), because SGD's drift
        and noise are those of its own samples: on the test set the mean gradient stays finite
        where training converges.

            sde_drift    K̄_ii of the full-batch gradient,  sde_step  S_ii, the O(α) term
                                                 (`dysonbm.observables.data_step_terms`)
            sde_noise    Ṽ_ij,  sde_ito  C̃_ii,  sde_stiffness  γ_i   on the first n_test training
                                                 samples (`dysonbm.observables.level_terms`)

        Per-level arrays are stored in the ascending order of ``gram`` (the package's one order
        for spectra); `dysonbm.observables` computes in the published descending basis.

        with K̃, Ṽ the mean and variance over test samples of Uᵀ dX_n U (dX_n = W g_nᵀ + g_n Wᵀ,
        g_n = −∂ℓ_n/∂W) in the eigenbasis U of X, and Ṽ_paper the elementwise variance of dX_n
        rotated into that basis; see `dysonbm.observables.increment_moments`. Units: the published
        hs carries a further 1/n_test (`dysonbm.analysis.phases.paper_units`).
        """
        phi0, y, z = test["phi0"], test["y"], problem["Z"]
        s = self.features_of(params, phi0)[0]
        s0 = self.features_of(params0, phi0)[0]
        g = per_sample_grads_from_features(params, z, phi0, y, self.activation)
        m = obs.increment_moments(params, g)
        drift, noise, levels = m["drift"], m["noise"], m["levels"]
        k_t, v_t = obs.drift_coulomb_from_moments(drift, noise)
        up = lambda a: a[::-1]  # noqa: E731  descending basis -> ascending
        out = {
            "q": obs.overlap(s0, s),
            "hs": obs.field_alignment(s, y, z),
            "gram": up(levels),
            "mean_spacing": obs.mean_spacing(levels),
            "K_t": k_t,
            "V_t": v_t,
            "level_drift": up(jnp.diagonal(drift)),
            "pair_noise": noise[::-1, ::-1],
            # V_t_paper, a sum of nearly cancelling terms, is formed from it on the host
            # (`phases.coulomb_term`): on device its last bits followed the chunk's shape
            "pair_noise_paper": m["noise_paper"][::-1, ::-1],
        }
        if self.level_sde:
            out.update(self._sde_coefficients(params, problem, test, hp, data))
        return out

    def _sde_coefficients(self, params, problem, test, hp, data):
        """The ``sde_*`` observables (``observables``), levels ascending."""
        batch, mask = data if data is not None else (test, jnp.ones_like(test["y"]))
        full = -jax.grad(self.loss)(params, batch, mask, problem, hp)
        # the noise, Itô and slope terms need per-sample gradients, K of them JVPs for the
        # slope: a subset of test-set size keeps their cost that of the published criterion
        m = min(test["y"].shape[0], mask.shape[0])
        phi0, y, weights = batch["phi0"][:m], batch["y"][:m], mask[:m]

        def grads(w):
            return per_sample_grads_from_features(w, problem["Z"], phi0, y, self.activation)

        drift, step = obs.data_step_terms(params, full)
        noise = obs.increment_moments(params, grads(params), weights)["noise"]
        ito, stiffness = obs.level_terms(params, grads, weights)
        return {"sde_drift": drift[::-1], "sde_step": step[::-1], "sde_noise": noise[::-1, ::-1],
                "sde_ito": ito[::-1], "sde_stiffness": stiffness[::-1]}

    def observable_axes(self):
        return {
            "q": (), "hs": (), "gram": ("level",), "mean_spacing": (), "K_t": (), "V_t": (),
            "level_drift": ("level",), "pair_noise": ("level", "level2"), "pair_noise_paper": ("level", "level2"),
            **({"sde_drift": ("level",), "sde_step": ("level",), "sde_noise": ("level", "level2"),
                "sde_ito": ("level",), "sde_stiffness": ("level",)} if self.level_sde else {}),
        }
