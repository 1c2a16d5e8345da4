"""A replica that goes bad is flagged once, with its step, and frozen at its last good state.

Under ``vmap`` a replica cannot leave the batch: it keeps being stepped, and a select keeps
its old values. Its neighbours run on untouched (a select, not a branch, so nothing they
compute depends on it), and its snapshots stay finite. Both the SGD kernel
(`dysonbm.sgd`) and the runner's SDE replicas (`dysonbm.engine`) freeze this way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def flags() -> dict:
    """The flags of a replica that has not gone bad."""
    return {"diverged": jnp.asarray(False), "diverge_step": jnp.asarray(-1, jnp.int32)}


def flag(state: dict, bad, t) -> dict:
    """The flags after step ``t`` (0-based): a replica first bad there records ``t + 1``,
    the number of steps it had taken; later steps change nothing."""
    return {
        "diverged": state["diverged"] | bad,
        "diverge_step": jnp.where(bad & ~state["diverged"], t + 1, state["diverge_step"]).astype(jnp.int32),
    }


def hold(frozen, new, old):
    """``old`` where the replica is frozen, else ``new`` (leaf by leaf)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(frozen, o, n), new, old)


def any_leaf(pred, tree) -> jnp.ndarray:
    """Whether ``pred`` holds anywhere in any leaf of ``tree``."""
    leaves = [jnp.any(pred(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.any(jnp.stack(leaves)) if leaves else jnp.asarray(False)


def beyond(tree, bound) -> jnp.ndarray:
    """Whether any entry of ``tree`` is NaN, infinite or larger than ``bound`` in magnitude.

    One max-of-magnitudes reduction per leaf (NaN propagates through it) instead of a
    comparison pass and an any-reduction: the check runs on every weight at every SGD step.
    """
    peaks = [jnp.max(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree)]
    if not peaks:
        return jnp.asarray(False)
    peak = jnp.max(jnp.stack(peaks))
    return ~(peak <= bound) | ~jnp.isfinite(peak)  # NaN fails the comparison; inf fails isfinite


def non_finite(tree) -> jnp.ndarray:
    """Whether any entry of ``tree`` is NaN or infinite."""
    return any_leaf(lambda x: ~jnp.isfinite(x), tree)
