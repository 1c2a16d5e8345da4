"""One compiled program per chunk of replicas: vmap over replicas, lax.scan over steps.

A `Simulation` is three pure functions of ONE replica (no replica axis)::

    init(keys, hp)              -> (state, data)    # keys: the replica's and its ingredients'
    step(state, t, hp, data)    -> state            # t: the global step index
    observe(state, hp, data)    -> {name: array}    # at snapshots only

``hp`` holds the replica's hyperparameters (traced scalars), ``data`` its quenched disorder:
its problem, its test set and its training set (or, online, the keys of its data stream),
each drawn from the key of its granularity (`dysonbm.ensemble`), so a replica that shares
its inputs with its grid point draws the same inputs as its neighbours, by itself. Everything
a replica reads is its own array: a contraction of a replica-batched with an unbatched
operand would be lowered to one large product whose summation order depends on the chunk.
`segment_fn` turns a simulation into ``run_segment(state, hp, data, t0) -> (state,
observables[snapshot])``, the function the runner jits and calls between checkpoints.

Randomness: a replica's own key is fixed; step t uses ``fold_in(key, t)``. So a replica's
numbers depend on neither the chunk it runs in, nor the segment boundaries, nor the largest
batch size of the grid (batches are masked).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dysonbm import linalg
from dysonbm.config import Config
from dysonbm.models.base import tree_sum


@dataclasses.dataclass(frozen=True)
class Simulation:
    init: Callable
    step: Callable
    observe: Callable
    axes: dict  # observable -> axis names after (replica, snapshot)


def make_optimizer(train, lr) -> optax.GradientTransformation:
    """The optax transform for one replica; ``lr`` may be a traced per-replica scalar."""
    if train.optimizer == "sgd":
        return optax.sgd(lr)
    if train.optimizer == "momentum":
        return optax.sgd(lr, momentum=train.momentum, nesterov=train.nesterov)
    return optax.adam(lr, b1=train.b1, b2=train.b2, eps=train.eps)


def _outcome_init() -> dict:
    return {"diverged": jnp.asarray(False), "diverge_step": jnp.asarray(-1, jnp.int32)}


def _outcome_after(state: dict, bad, t) -> dict:
    """A replica that goes bad at step t is flagged once, with the step, and stays frozen."""
    return {
        "diverged": state["diverged"] | bad,
        "diverge_step": jnp.where(bad & ~state["diverged"], t + 1, state["diverge_step"]).astype(jnp.int32),
    }


def _tree_any(pred, tree) -> jnp.ndarray:
    leaves = [jnp.any(pred(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.any(jnp.stack(leaves)) if leaves else jnp.asarray(False)


def draw_samples(model, key, problem, count: int):
    """``count`` samples keyed by index, so sample i never depends on ``count``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(count))
    return jax.vmap(lambda k: model.sample(k, problem))(keys)


def dataset(model, input_key, noise_key, problem, count: int):
    """Samples 0 … count−1: sample j from ``fold_in(input_key, j)`` and ``fold_in(noise_key, j)``,
    so a dataset shares its inputs and its noise at their own granularities, and sample j is
    the same whatever ``count``."""

    def one(j):
        noise = model.draw_noise(jax.random.fold_in(noise_key, j)) if model.has_noise else ()
        return model.make_sample(problem, model.draw_input(jax.random.fold_in(input_key, j)), noise)

    return jax.vmap(one)(jnp.arange(count))


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

    @classmethod
    def from_config(cls, cfg: Config, max_batch: int) -> "DataLayout":
        d = cfg.data
        if d.protocol == "online":
            return cls("online", max_batch, n_test=d.n_test)
        n_max = d.n_data if d.n_data else d.batches_per_epoch * max_batch
        return cls(d.protocol, max_batch, n_max, d.batches_per_epoch, d.n_data, d.reshuffle, d.n_test)

    def dataset_size(self, batch_size):
        """Samples a replica of this batch size trains on (a whole number of batches)."""
        if self.batches_per_epoch:
            return self.batches_per_epoch * batch_size
        return (self.n_data // batch_size) * batch_size


def make_sim(model, cfg: Config, layout: DataLayout) -> Simulation:
    """The simulation a config describes: SGD replicas of a model, or an SDE process."""
    if is_process(model):
        return make_sde_sim(model)
    return make_sgd_sim(model, cfg, layout)


def is_process(model) -> bool:
    """An eigenvalue SDE (`dysonbm.dyson.Process`) rather than a trained model."""
    from dysonbm.dyson import Process

    return isinstance(model, Process)


def make_sde_sim(process) -> Simulation:
    """Replicas of an SDE process (`dysonbm.dyson`): step t uses ``fold_in(key, t)``; a replica
    whose state turns non-finite is frozen at its last finite state and flagged, as in SGD."""

    def init(keys, hp):
        k_init, k_run = jax.random.split(keys["replica"])
        state = {
            "proc": process.init(k_init, hp),
            "key": k_run,
            **_outcome_init(),
        }
        return state, {}

    def step(state, t, hp, data):
        new = process.step(state["proc"], jax.random.fold_in(state["key"], t), hp)
        outcome = _outcome_after(state, _tree_any(lambda x: ~jnp.isfinite(x), new), t)
        keep = lambda n, o: jnp.where(outcome["diverged"], o, n)  # noqa: E731
        return {**state, **outcome, "proc": jax.tree_util.tree_map(keep, new, state["proc"])}

    def observe(state, hp, data):
        return process.observe(state["proc"], hp)

    hp0 = {"lr": 0.1, "batch_size": 1, "init_std": 0.1, **process.defaults()}
    shapes = jax.eval_shape(lambda k: process.observe(process.init(k, hp0), hp0), jax.random.key(0))
    axes = {name: ("level",) * len(v.shape) if len(v.shape) <= 1 else tuple(f"axis{i}" for i in range(len(v.shape)))
            for name, v in shapes.items()}
    return Simulation(init, step, observe, axes)


def make_sgd_sim(model, cfg: Config, layout: DataLayout) -> Simulation:
    """SGD replicas of ``model`` under the config's optimiser, data protocol and bounds."""
    train, bounds = cfg.train, cfg.divergence
    bmax = layout.max_batch
    record = cfg.record

    def shuffled(key, epoch, n_valid):
        # argsort of per-index uniforms; invalid (padding) indices sort last
        u = jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, epoch), j)))(
            jnp.arange(layout.n_max)
        )
        return jnp.argsort(jnp.where(jnp.arange(layout.n_max) < n_valid, u, jnp.inf)).astype(jnp.int32)

    def init(keys, hp):
        k_init, k_run, k_shuffle = jax.random.split(keys["replica"], 3)
        problem = model.problem(keys["problem"])
        data = {"problem": problem, "test": test_set(model, keys["test"], problem, layout.n_test)}
        if model.uses_data:
            noise_key = keys["noise"] if model.has_noise else keys["inputs"]
            if layout.protocol == "online":
                data["stream"] = {"inputs": keys["inputs"], "noise": noise_key}
            else:
                data["train"] = dataset(model, keys["inputs"], noise_key, problem, layout.n_max)
        params, aux = model.init(k_init, problem, hp)
        state = {
            "params": params,
            "params0": params,  # kept for overlaps with the initial state
            "aux": aux,
            "opt": make_optimizer(train, hp["lr"]).init(params),
            "key": k_run,
            **_outcome_init(),
            "loss_sum": jnp.zeros((), jnp.result_type(float)),
            "loss_count": jnp.zeros((), jnp.int32),
        }
        if layout.reshuffle:
            state["shuffle_key"] = k_shuffle
            state["perm"] = jnp.arange(layout.n_max, dtype=jnp.int32)
        return state, data

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

    def step(state, t, hp, data):
        k_model = jax.random.fold_in(state["key"], t)
        batch, mask, state = batch_at(state, t, hp, data)
        loss, grads, aux = model.loss_and_grad(
            state["params"], state["aux"], batch, mask, k_model, data["problem"], hp
        )
        updates, opt = make_optimizer(train, hp["lr"]).update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        bad = (
            ~jnp.isfinite(loss)
            | (jnp.abs(loss) > bounds.max_loss)
            | _tree_any(lambda x: ~jnp.isfinite(x) | (jnp.abs(x) > bounds.max_weight), params)
        )
        outcome = _outcome_after(state, bad, t)
        frozen = outcome["diverged"]
        keep = lambda new, old: jnp.where(frozen, old, new)  # noqa: E731
        return {
            **state,
            "params": jax.tree_util.tree_map(keep, params, state["params"]),
            "aux": jax.tree_util.tree_map(keep, aux, state["aux"]),
            "opt": jax.tree_util.tree_map(keep, opt, state["opt"]),
            **outcome,
            "loss_sum": state["loss_sum"] + jnp.where(frozen, 0.0, loss),
            "loss_count": state["loss_count"] + jnp.where(frozen, 0, 1),
        }

    def observe(state, hp, data):
        params, problem, test = state["params"], data["problem"], data["test"]
        test_mask = jnp.ones(layout.n_test, jnp.result_type(float))
        out = {
            "train_loss": state["loss_sum"] / state["loss_count"],  # mean since the last snapshot
            "test_loss": model.loss(params, test, test_mask, problem, hp),
        }
        if layout.protocol == "online" or not model.uses_data:
            gbatch, gmask = test, test_mask
        else:
            gbatch = data["train"]
            gmask = (jnp.arange(layout.n_max) < layout.dataset_size(hp["batch_size"])).astype(jnp.result_type(float))
            out["data_loss"] = model.loss(params, gbatch, gmask, problem, hp)
        grads = jax.grad(model.loss)(params, gbatch, gmask, problem, hp)
        flat = jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(grads)])
        out["grad_norm"] = jnp.sqrt(tree_sum(flat * flat))
        w = model.trained_matrix(params)
        if record.spectra:
            out["svals"] = linalg.svdvals(w)
            if w.shape[0] == w.shape[1]:
                out["eigs"] = linalg.eigvalsh(0.5 * (w + w.T))
        if record.weights:
            out["weights"] = w
        out.update(model.observables(params, state["params0"], problem, test, hp))
        return out

    axes = {
        "train_loss": (), "test_loss": (), "grad_norm": (),
        **({} if layout.protocol == "online" or not model.uses_data else {"data_loss": ()}),
        **({"svals": ("level",)} if record.spectra else {}),
        **({"weights": ("row", "col")} if record.weights else {}),
        **model.observable_axes(),
    }
    if record.spectra and _is_square(model):
        axes["eigs"] = ("level",)
    return Simulation(init, step, observe, axes)


def _is_square(model) -> bool:
    shape = jax.eval_shape(
        lambda: model.trained_matrix(model.init(jax.random.key(0), model.problem(jax.random.key(0)), _dummy_hp(model))[0])
    ).shape
    return shape[0] == shape[1]


def _dummy_hp(model) -> dict:
    return {"lr": 0.1, "batch_size": 1, "init_std": 0.1, **model.defaults()}


def reset_interval(state: dict) -> dict:
    """Start a new snapshot interval (the running mean of the training loss)."""
    if "loss_sum" not in state:
        return state
    return {**state, "loss_sum": jnp.zeros_like(state["loss_sum"]), "loss_count": jnp.zeros_like(state["loss_count"])}


def segment_fn(sim: Simulation, snapshot_every: int, n_snapshots: int, unroll: int = 1):
    """``run_segment(state, hp, data, t0)`` for a chunk: vmapped, not yet jitted.

    Runs ``n_snapshots * snapshot_every`` steps from global step ``t0`` and returns the final
    state and the observables after every ``snapshot_every`` steps (leading axes: replica,
    snapshot).
    """
    def one_replica(state, hp, data, t0):
        def interval(state, t_start):
            def body(state, t):
                return sim.step(state, t, hp, data), None

            state = reset_interval(state)
            state, _ = jax.lax.scan(body, state, t_start + jnp.arange(snapshot_every), unroll=unroll)
            return state, sim.observe(state, hp, data)

        starts = t0 + snapshot_every * jnp.arange(n_snapshots)
        return jax.lax.scan(interval, state, starts)

    def run_segment(state, hp, data, t0):
        return jax.vmap(one_replica, in_axes=(0, 0, 0, None))(state, hp, data, t0)

    return run_segment


def init_fn(sim: Simulation):
    """``init(keys, hp) -> (state, data, observables at t = 0)``, vmapped over replicas."""

    def one(keys, hp):
        state, data = sim.init(keys, hp)
        return state, data, sim.observe(state, hp, data)

    return jax.vmap(one)


def outcome(state: dict) -> tuple[Any, Any]:
    return state.get("diverged"), state.get("diverge_step")
