"""Replicas × steps: vmap over replicas, lax.scan over steps, of any simulation.

From Python, `simulate` runs any triple of single-replica functions in the protocol of the
eigenvalue SDEs (`dysonbm.sde.Process`)::

    init(key, hp) -> state ;  step(state, key, hp) -> state ;  observe(state, hp) -> {name: array}

an SDE process's own methods, or an SGD kernel (`dysonbm.sgd`) with the caller's batches,
and records ``observe`` and a function of the caller's (``save``, as diffrax's
``SaveAt(fn=...)``) every ``every`` steps. Replica r's key is ``fold_in(key, r)``, split into
an init key and a run key; step t uses ``fold_in(run_key, t)``.

Underneath, and what the runner compiles, a `Simulation` is three pure functions of ONE
replica (no replica axis)::

    init(keys, hp)              -> (state, data)    # keys: the replica's and its ingredients'
    step(state, t, hp, data)    -> state            # t: the global step index
    observe(state, hp, data)    -> {name: array}    # at snapshots only

``hp`` holds the replica's hyperparameters (traced scalars), ``data`` its quenched disorder,
which is read but never carried through the scan. `from_triple` puts a triple in this form;
`make_sgd_sim` builds the SGD replicas of a run on the SGD kernel: its problem, test set and
training set (or, online, the keys of its data stream; `dysonbm.data`), each drawn from the
key of its granularity (`dysonbm.ensemble`), so a replica that shares its inputs with its
grid point draws the same inputs as its neighbours, by itself. Everything a replica reads is its own
array: a contraction of a replica-batched with an unbatched operand would be lowered to one
large product whose summation order depends on the chunk. `segment_fn` turns a simulation
into ``run_segment(state, hp, data, t0) -> (state, observables[snapshot])``: what `simulate`
runs, and what the runner jits, shards and calls between checkpoints.

Randomness: a replica's own key is fixed; step t uses ``fold_in(key, t)``. So a replica's
numbers depend on neither the chunk it runs in, nor the segment boundaries, nor the largest
batch size of the grid (batches are masked).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import divergence, linalg
from dysonbm.data import DataLayout, batcher, dataset, test_set
from dysonbm.summation import tree_sum
from dysonbm.sgd import Bounds, sgd


@dataclasses.dataclass(frozen=True)
class Simulation:
    """One replica's ``init``, ``step`` and ``observe`` in the engine's form (module doc)."""

    init: Callable
    step: Callable
    observe: Callable
    axes: dict = dataclasses.field(default_factory=dict)  # observable -> axis names after (replica, snapshot)
    interval: Callable | None = None  # state -> state at the start of each snapshot interval


# ---------------------------------------------------------------------------------------
# any (init, step, observe) triple


def from_triple(init: Callable, step: Callable, observe: Callable | None = None, freeze: bool = False) -> Simulation:
    """The `Simulation` of a triple ``init(key, hp)``, ``step(state, key, hp)``,
    ``observe(state, hp)``: the replica's key splits into an init key and a run key, step t
    uses ``fold_in(run_key, t)``. With ``freeze``, a replica whose state turns non-finite is
    flagged and frozen at its last finite state (`dysonbm.divergence`)."""

    def init_(keys, hp):
        k_init, k_run = jax.random.split(keys["replica"])
        state = {"state": init(k_init, hp), "key": k_run}
        if freeze:
            state.update(divergence.flags())
        return state, {}

    def step_(state, t, hp, data):
        new = step(state["state"], jax.random.fold_in(state["key"], t), hp)
        if not freeze:
            return {**state, "state": new}
        flags = divergence.flag(state, divergence.non_finite(new), t)
        return {**state, **flags, "state": divergence.hold(flags["diverged"], new, state["state"])}

    def observe_(state, hp, data):
        return observe(state["state"], hp) if observe is not None else {}

    return Simulation(init_, step_, observe_)


class Trajectory(NamedTuple):
    """What `simulate` returns; the arrays have leading axes (replica, snapshot)."""

    steps: np.ndarray  # (S,) steps taken at each snapshot: 0, every, 2·every, …
    observed: dict  # observe's arrays
    saved: Any  # save's pytree (None without save)
    state: Any  # the final state of every replica (leading axis: replica)


def simulate(init: Callable, step: Callable, observe: Callable | None = None, *, key, hp: dict, steps: int,
             every: int | None = None, replicas: int | None = None, save: Callable | None = None,
             unroll: int = 1) -> Trajectory:
    """Run replicas of ``(init, step, observe)`` (module doc) for ``steps`` steps, vmapped over
    replicas and scanned over steps in one compiled program.

    ``hp``: {name: scalar, or array with a leading replica axis}; scalars are shared, and
    ``replicas`` is needed only when all are. ``observe(state, hp)`` and ``save(state, hp)``
    are recorded at step 0 and after every ``every`` steps (default: at the end only);
    ``save`` returns any pytree of arrays. A replica's numbers depend on neither the number of
    replicas nor its neighbours, as in the runner, whose chunks run this same program
    (`segment_fn`); the runner adds sharding, checkpoints and the results store.
    """
    every = steps if every is None else every
    if steps < 1 or every < 1 or steps % every:
        raise ValueError(f"steps must be a positive multiple of every, got steps={steps}, every={every}")
    hp, replicas = _per_replica(hp, replicas)
    # one replica runs as two, as the runner runs at least two per device: XLA simplifies a
    # batch axis of size one away and may then sum small products in another order
    slots = max(replicas, 2)
    hp = {name: jnp.concatenate([v, jnp.repeat(v[-1:], slots - replicas)]) for name, v in hp.items()}
    base = from_triple(init, step, observe)
    user_save = save if save is not None else (lambda state, hp: None)
    sim = dataclasses.replace(base, observe=lambda s, h, d: (base.observe(s, h, d), user_save(s["state"], h)))
    keys = {"replica": jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(slots))}
    state, data, first = jax.jit(init_fn(sim))(keys, hp)
    n = steps // every
    state, rest = jax.jit(segment_fn(sim, every, n, unroll))(state, hp, data, jnp.int32(0))
    observed, saved = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[:, None], b], axis=1)[:replicas],
                                             first, rest)
    return Trajectory(every * np.arange(n + 1), observed, saved,
                      jax.tree_util.tree_map(lambda a: a[:replicas], state["state"]))


def _per_replica(hp: dict, replicas: int | None) -> tuple[dict, int]:
    """``hp`` with every entry an array of leading axis ``replicas`` (scalars broadcast)."""
    hp = {name: value if isinstance(value, jax.Array) else jnp.asarray(np.asarray(value)) for name, value in hp.items()}
    sizes = {v.shape[0] for v in hp.values() if v.ndim}
    if replicas is None:
        if len(sizes) != 1:
            raise ValueError(f"give replicas=: the per-replica entries of hp have leading axes {sorted(sizes) or 'none'}")
        replicas = sizes.pop()
    out = {}
    for name, v in hp.items():
        if v.ndim and v.shape[0] != replicas:
            raise ValueError(f"hp[{name!r}] has leading axis {v.shape[0]}, not replicas = {replicas}")
        out[name] = v if v.ndim else jnp.full((replicas,), v)
    return out, replicas


def init_fn(sim: Simulation):
    """``init(keys, hp) -> (state, data, observables at t = 0)``, vmapped over replicas."""

    def one(keys, hp):
        state, data = sim.init(keys, hp)
        return state, data, sim.observe(state, hp, data)

    return jax.vmap(one)


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

            if sim.interval is not None:
                state = sim.interval(state)
            state, _ = jax.lax.scan(body, state, t_start + jnp.arange(snapshot_every), unroll=unroll)
            return state, sim.observe(state, hp, data)

        starts = t0 + snapshot_every * jnp.arange(n_snapshots)
        return jax.lax.scan(interval, state, starts)

    def run_segment(state, hp, data, t0):
        return jax.vmap(one_replica, in_axes=(0, 0, 0, None))(state, hp, data, t0)

    return run_segment


def outcome(state: dict) -> tuple[Any, Any]:
    """The divergence flags of a batch of replica states (None, None for a process without)."""
    return state.get("diverged"), state.get("diverge_step")


# ---------------------------------------------------------------------------------------
# eigenvalue SDEs


def make_sde_sim(process) -> Simulation:
    """Replicas of an SDE process (`dysonbm.sde`), frozen at their last finite state and
    flagged if they turn non-finite, as in SGD."""
    sim = from_triple(process.init, process.step, process.observe, freeze=True)
    hp0 = {"lr": 0.1, "batch_size": 1, "init_std": 0.1, **process.defaults()}
    shapes = jax.eval_shape(lambda k: process.observe(process.init(k, hp0), hp0), jax.random.key(0))
    axes = {name: ("level",) * len(v.shape) if len(v.shape) <= 1 else tuple(f"axis{i}" for i in range(len(v.shape)))
            for name, v in shapes.items()}
    return dataclasses.replace(sim, axes=axes)


# ---------------------------------------------------------------------------------------
# SGD replicas of a run: the SGD kernel on a data protocol (`dysonbm.data`), snapshots


def make_sgd_sim(model, tx, layout: DataLayout, bounds=Bounds(), spectra: bool = True,
                 weights: bool = False) -> Simulation:
    """SGD replicas of ``model`` under ``tx`` (as in `dysonbm.sgd`), with the data protocol of
    ``layout``, frozen beyond ``bounds``; ``spectra`` and ``weights`` say what is recorded."""
    init_kernel, step_kernel = sgd(model, tx, bounds)
    batch_at = batcher(model, layout)

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
        state = init_kernel(k_init, problem, hp)
        # beside the kernel's entries: the initial parameters (for overlaps with the start),
        # the key of the steps' randomness and the running mean of the training loss
        state.update({
            "params0": state["params"],
            "key": k_run,
            "loss_sum": jnp.zeros((), jnp.result_type(float)),
            "loss_count": jnp.zeros((), jnp.int32),
        })
        if layout.reshuffle:
            state["shuffle_key"] = k_shuffle
            state["perm"] = jnp.arange(layout.n_max, dtype=jnp.int32)
        return state, data

    def step(state, t, hp, data):
        batch, mask, state = batch_at(state, t, hp, data)
        state = step_kernel(state, batch, jax.random.fold_in(state["key"], t), data["problem"], hp, mask)
        frozen = state["diverged"]
        return {
            **state,
            "loss_sum": state["loss_sum"] + jnp.where(frozen, 0.0, state["loss"]),
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
        if spectra:
            out["svals"] = linalg.svdvals(w)
            if w.shape[0] == w.shape[1]:
                out["eigs"] = linalg.eigvalsh(0.5 * (w + w.T))
        if weights:
            out["weights"] = w
        out.update(model.observables(params, state["params0"], problem, test, hp, data=(gbatch, gmask)))
        return out

    axes = {
        "train_loss": (), "test_loss": (), "grad_norm": (),
        **({} if layout.protocol == "online" or not model.uses_data else {"data_loss": ()}),
        **({"svals": ("level",)} if spectra else {}),
        **({"weights": ("row", "col")} if weights else {}),
        **model.observable_axes(),
    }
    if spectra and _is_square(model):
        axes["eigs"] = ("level",)
    return Simulation(init, step, observe, axes, interval=reset_interval)


def _is_square(model) -> bool:
    shape = jax.eval_shape(
        lambda: model.trained_matrix(model.init(jax.random.key(0), model.problem(jax.random.key(0)), _dummy_hp(model))[0])
    ).shape
    return shape[0] == shape[1]


def _dummy_hp(model) -> dict:
    return {"lr": 0.1, "batch_size": 1, "init_std": 0.1, **model.defaults()}


def reset_interval(state: dict) -> dict:
    """Start a new snapshot interval (the running mean of the training loss)."""
    return {**state, "loss_sum": jnp.zeros_like(state["loss_sum"]), "loss_count": jnp.zeros_like(state["loss_count"])}
