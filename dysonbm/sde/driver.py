"""A standalone driver of one process: replicas vmapped, steps scanned, snapshots saved."""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp

from dysonbm.sde.numerics import _dtype
from dysonbm.sde.processes import Process

Array = jax.Array


def _replica_hp(process: Process, hp: Mapping, n_replicas: int) -> dict[str, Array]:
    merged = {**process.defaults(), **dict(hp)}
    out = {}
    for name, value in merged.items():
        v = jnp.asarray(value, _dtype())
        shape = process.hp_shape(name)
        if v.shape == shape:
            v = jnp.broadcast_to(v, (n_replicas,) + shape)
        if v.shape != (n_replicas,) + shape:
            raise ValueError(f"hp[{name!r}] must have shape {shape} or ({n_replicas}, *{shape}), got shape {v.shape}")
        out[name] = v
    return out


@functools.partial(jax.jit, static_argnames=("process", "n_snapshots"))
def _simulate(process, hp, keys, n_snapshots, save_every):
    # save_every is traced (a fori_loop bound): one compiled program per number of snapshots
    def one(key, hp):
        k_init, k_run = jax.random.split(key)
        state = process.init(k_init, hp)

        def outer(state, seg):
            def inner(i, state):
                return process.step(state, jax.random.fold_in(k_run, seg * save_every + i), hp)

            state = jax.lax.fori_loop(0, save_every, inner, state)
            return state, process.observe(state, hp)

        return jax.lax.scan(outer, state, jnp.arange(n_snapshots))

    return jax.vmap(one)(keys, hp)


def simulate(process: Process, hp: Mapping, key, n_replicas: int, n_steps: int, save_every: int = 1,
             return_state: bool = False):
    """Run ``n_replicas`` independent replicas for ``n_steps`` steps.

    hp: {name: one replica's value (``process.hp_shape(name)``: a scalar for the sweepable
    names) or an (R, …) array of them}; missing sweepable names take the process defaults.
    Replica r uses ``fold_in(key, r)`` (its numbers do not depend on R), step t
    ``fold_in(run_key, t)``. Returns {name: (R, S, …)} with S = n_steps/save_every snapshots
    taken after steps save_every, 2·save_every, …, plus "time" (R, S); with
    ``return_state`` also the final state (R, …).
    """
    if n_steps < 1 or save_every < 1 or n_steps % save_every:
        raise ValueError(f"n_steps must be a positive multiple of save_every, got n_steps={n_steps}, save_every={save_every}")
    process.validate(hp)
    hp_r = _replica_hp(process, hp, n_replicas)
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(n_replicas))
    state, obs = _simulate(process, hp_r, keys, n_steps // save_every, jnp.asarray(save_every, jnp.int32))
    steps = save_every * jnp.arange(1, n_steps // save_every + 1)
    obs = dict(obs)
    obs["time"] = hp_r["dt"][:, None] * steps[None, :]
    return (obs, state) if return_state else obs
