"""The protocol every model follows: a frozen dataclass of static settings plus pure functions.

A model knows nothing of replicas, chunks or files. The engine vmaps these functions over
replicas and scans them over steps. Static fields (shapes, activation names) live on the
dataclass and are baked into the trace; anything that may differ between replicas arrives
in ``hp``, a dict of per-replica scalars (traced), so a sweep never recompiles per value.

``hp`` always holds ``lr``, ``batch_size`` (int) and ``init_std``; a model adds the names in
its ``sweepable`` tuple, whose defaults are the dataclass fields of the same name.

Batches may be padded beyond ``batch_size`` (the runner pads a chunk to its grid points' own
batch size; the kernels accept any padding): ``mask`` is a float vector with ones on the first
``batch_size`` entries and zeros after, and every mean over the batch is
``sum(mask * value) / sum(mask)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from dysonbm.summation import tree_sum  # noqa: F401  (models import it from here)

PyTree = Any
Array = jnp.ndarray


class Model:
    """Base class for models. Subclasses are frozen dataclasses (hashable, usable as static)."""

    name: ClassVar[str] = "model"
    #: model fields that may vary per replica; they reach the functions through ``hp``
    sweepable: ClassVar[tuple[str, ...]] = ()
    #: True when the model consumes data samples (all but models with internal sampling)
    uses_data: ClassVar[bool] = True
    #: True when a sample carries injected noise besides its input (`draw_noise`)
    has_noise: ClassVar[bool] = False
    #: granularity of each quenched ingredient in the published protocol (`dysonbm.ensemble`)
    ensemble: ClassVar[dict] = {"problem": "replica", "inputs": "replica", "noise": "replica", "test": "replica"}

    # -- problem: the quenched disorder of the task (teacher, fixed layers, target kernel) --
    def problem(self, key) -> PyTree:
        """Draw the problem (a dict of arrays: teacher etc.) from ``key``."""
        return {}

    # -- per replica ----------------------------------------------------------------------
    def init(self, key, problem, hp) -> tuple[PyTree, PyTree]:
        """Return ``(params, aux)``: trained parameters and model-internal state (``()`` if none)."""
        raise NotImplementedError

    # -- samples: an input and its noise, drawn apart (they may be shared apart), then
    #    made into what the loss reads (labels from the replica's own problem) ---------------
    def draw_input(self, key) -> PyTree:
        """One raw input, independent of the problem."""
        raise NotImplementedError

    def draw_noise(self, key) -> PyTree:
        """The injected noise of one sample (models with ``has_noise``)."""
        return ()

    def draw_inputs(self, key, count: int) -> PyTree:
        """Inputs of samples 0 … count−1 stacked on a leading axis; sample j depends on ``key``
        and ``j`` only, never on ``count``. By default sample j is ``draw_input(fold_in(key, j))``;
        models with Gaussian inputs draw the whole block at once with `dysonbm.counter_rng`."""
        return jax.vmap(lambda j: self.draw_input(jax.random.fold_in(key, j)))(jnp.arange(count))

    def draw_noises(self, key, count: int) -> PyTree:
        """The injected noise of samples 0 … count−1, keyed as in `draw_inputs`."""
        return jax.vmap(lambda j: self.draw_noise(jax.random.fold_in(key, j)))(jnp.arange(count))

    def make_sample(self, problem, inputs, noise) -> PyTree:
        """The sample the loss reads (a pytree of arrays without a batch axis)."""
        raise NotImplementedError

    def make_samples(self, problem, inputs, noises) -> PyTree:
        """`make_sample` of a stack of samples (leading axis); ``noises`` is ``()`` for models
        without noise. A model may compute the stack at once, provided sample j's numbers
        stay those of `make_sample` alone, whatever the stack's length."""
        if not self.has_noise:
            return jax.vmap(lambda x: self.make_sample(problem, x, ()))(inputs)
        return jax.vmap(lambda x, a: self.make_sample(problem, x, a))(inputs, noises)

    def sample(self, key, problem) -> PyTree:
        """One sample with its input and noise drawn from ``key``."""
        k_in, k_noise = jax.random.split(key)
        return self.make_sample(problem, self.draw_input(k_in), self.draw_noise(k_noise))

    def loss_and_grad(self, params, aux, batch, mask, key, problem, hp):
        """Return ``(loss, grads, aux)`` for a padded mini-batch.

        ``loss`` is the masked mean batch loss, ``grads`` has the structure of ``params``.
        """
        raise NotImplementedError

    def loss(self, params, batch, mask, problem, hp) -> Array:
        """Masked mean loss of ``params`` on ``batch``."""
        raise NotImplementedError

    def trained_matrix(self, params) -> Array:
        """The weight matrix whose spectrum is recorded."""
        raise NotImplementedError

    def observables(self, params, params0, problem, test, hp, data=None) -> dict[str, Array]:
        """Extra model-specific observables at a snapshot (beyond losses and spectra).

        ``params0`` are the replica's initial parameters (for overlaps with the start),
        ``test`` the replica's test set (a batch of samples, unmasked) and ``data`` the samples
        it trains on as ``(batch, mask)`` (its dataset, padding masked; the test set when every
        step draws fresh data), or None.
        """
        return {}

    def observable_axes(self) -> dict[str, tuple[str, ...]]:
        """Axis names (after replica and snapshot) of the arrays ``observables`` returns."""
        return {}

    # -- helpers --------------------------------------------------------------------------
    def defaults(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.sweepable}

    def replace(self, **changes) -> "Model":
        return dataclasses.replace(self, **changes)


def masked_mean(values: Array, mask: Array) -> Array:
    """Mean over the leading (batch) axis with weights ``mask`` (see `tree_sum`)."""
    values = jnp.asarray(values)
    weights = mask.reshape(mask.shape + (1,) * (values.ndim - 1))
    return tree_sum(values * weights) / tree_sum(mask)
