"""Training data of SGD replicas: how samples are drawn, and which of them a step trains on.

A sample is drawn from its own position in a block (`Model.draw_inputs` / `draw_noises`), so
sample j is the same whatever the number drawn: a dataset, a test set and the online stream
are one sampling path with different keys (`dysonbm.ensemble` says whose key). `DataLayout`
holds the static facts of a run's data protocol; `batcher` selects step t's batch from them:
online, fresh samples from ``fold_in(stream key, t)``; fixed, consecutive batches of the
replica's dataset (optionally reshuffled every epoch), masked to the replica's batch size.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dysonbm import counter_rng


def draw_samples(model, key, problem, count: int):
    """``count`` samples from one key (inputs and noise from its two halves), drawn as a
    dataset is, so sample i never depends on ``count``."""
    input_key, noise_key = jax.random.split(key)
    return dataset(model, input_key, noise_key, problem, count)


def dataset(model, input_key, noise_key, problem, count: int):
    """Samples 0 … count−1, inputs from ``input_key`` and noise from ``noise_key`` (`Model.draw_inputs`),
    so a dataset shares its inputs and its noise at their own granularities, and sample j is
    the same whatever ``count``."""
    noises = model.draw_noises(noise_key, count) if model.has_noise else ()
    return model.make_samples(problem, model.draw_inputs(input_key, count), noises)


def test_set(model, test_key, problem, count: int):
    """The replica's test set: inputs (and noise) from its test key, labelled by its problem."""
    return dataset(model, jax.random.fold_in(test_key, 0), jax.random.fold_in(test_key, 1), problem, count)


@dataclasses.dataclass(frozen=True)
class DataLayout:
    """Static facts about the training data of a run."""

    protocol: str  # online | fixed
    max_batch: int
    n_max: int = 0  # dataset length stored per replica (0 for online)
    batches_per_epoch: int = 0  # shared by all replicas, or 0 when n_data fixes the size
    n_data: int = 0
    reshuffle: bool = False
    n_test: int = 128

    def dataset_size(self, batch_size):
        """Samples a replica of this batch size trains on (a whole number of batches)."""
        if self.batches_per_epoch:
            return self.batches_per_epoch * batch_size
        return (self.n_data // batch_size) * batch_size


def batcher(model, layout: DataLayout):
    """``batch_at(state, t, hp, data) -> (batch, mask, state)``: step t's batch of one replica
    (``data`` its quenched arrays: ``problem``, ``train`` or ``stream``), its mask over the
    ``layout.max_batch`` slots, and the state with the epoch's permutation when reshuffling."""
    bmax = layout.max_batch

    def shuffled(key, epoch, n_valid):
        # argsort of per-index uniforms; invalid (padding) indices sort last
        u = counter_rng.uniform(jax.random.fold_in(key, epoch), (layout.n_max,))
        return jnp.argsort(jnp.where(jnp.arange(layout.n_max) < n_valid, u, jnp.inf)).astype(jnp.int32)

    def batch_at(state, t, hp, data):
        b = hp["batch_size"]
        i = jnp.arange(bmax)
        mask = (i < b).astype(jnp.result_type(float))
        if not model.uses_data:  # e.g. an RBM with the exact data term
            return (), mask, state
        if layout.protocol == "online":
            stream = data["stream"]
            batch = dataset(model, jax.random.fold_in(stream["inputs"], t), jax.random.fold_in(stream["noise"], t),
                            data["problem"], bmax)
            return batch, mask, state
        n_valid = layout.dataset_size(b)
        per_epoch = n_valid // b
        k = t % per_epoch
        j = jnp.minimum(k * b + i, layout.n_max - 1)
        if layout.reshuffle:
            perm = jax.lax.cond(
                k == 0,
                lambda: shuffled(state["shuffle_key"], t // per_epoch, n_valid),
                lambda: state["perm"],
            )
            state = {**state, "perm": perm}
            j = perm[j]
        return jax.tree_util.tree_map(lambda a: a[j], data["train"]), mask, state

    return batch_at
