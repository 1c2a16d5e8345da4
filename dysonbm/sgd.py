"""SGD of one replica as two pure functions, in the style of jax-md's ``(init_fn, apply_fn)``.

    init_fn, step_fn = dysonbm.sgd(model, tx, bounds=Bounds(max_loss=1e12, max_weight=1e6))
    state = init_fn(key, problem, hp)
    state = step_fn(state, batch, key, problem, hp)          # or ..., hp, mask)

``model`` follows `dysonbm.models.base.Model`. ``problem`` is its quenched disorder
(``model.problem(key)``, ``{}`` for a model without one), ``hp`` the replica's scalars: what
the model reads (``init_std``, its ``sweepable`` settings) and ``lr`` when ``tx`` is a
function of it. ``batch`` is the caller's own pytree of samples with a leading batch axis;
``mask`` (ones when omitted) weights its entries, for batches padded to a common size when
replicas differ in batch size. ``key`` is the step's randomness for models that draw
(Gibbs chains); it does not draw the batch, which is the caller's. ``mask`` comes last, not
next to ``batch`` as in the model protocol, because only padded batches need it.

``tx`` is any ``optax.GradientTransformation``, the same for every replica, or a function
``lr -> GradientTransformation`` called with ``hp["lr"]`` (and, as keywords, the entries of
``hp`` named by its attribute ``hyperparameters``, e.g. AdamW's ``weight_decay``), so that
under ``vmap`` each replica has its own learning rate as a traced array and a sweep compiles
once. (optax's ``inject_hyperparams`` would keep the rate in the optimiser state instead; a
function of ``lr`` needs no state: the transform is rebuilt inside the trace at no cost.)

Nothing here has a replica axis: ``jax.vmap`` the two functions over replicas and ``jax.jit``
them, or hand them to `dysonbm.simulate`, which also scans them over steps.

The state is a dict, and entries the kernel does not know are carried through unchanged, so a
driver keeps its own bookkeeping beside it (the runner keeps the data order and the running
training loss there):

    params        the trained parameters
    aux           model-internal state (persistent chains; ``()`` for none)
    opt           the optax state
    loss          the batch loss of the last step (at the parameters before it)
    step          steps taken (int32)
    diverged      whether the replica left ``bounds``
    diverge_step  the step count at which it did, else −1

Divergence: a replica whose batch loss leaves ``|loss| <= max_loss``, or whose parameters
leave ``|w| <= max_weight``, or either turns non-finite, is flagged with its step, and its
params, aux and optimiser state are frozen at their last good values from then on
(`dysonbm.divergence`); its neighbours under ``vmap`` are untouched.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from dysonbm import divergence

Optimizer = Union[optax.GradientTransformation, Callable[[Any], optax.GradientTransformation]]


class Bounds(NamedTuple):
    """Where a replica counts as diverged (``inf`` for no bound; NaN always counts)."""

    max_loss: float = 1e12
    max_weight: float = 1e6


def sgd(model, tx: Optimizer, bounds: Bounds = Bounds()) -> tuple[Callable, Callable]:
    """``(init_fn, step_fn)`` of SGD on ``model`` under the optax transform ``tx`` (module doc).

    ``bounds`` is a `Bounds` or anything with ``max_loss`` and ``max_weight`` (a config's
    ``[divergence]`` table).
    """
    if isinstance(tx, optax.GradientTransformation):
        optimizer = lambda hp: tx  # noqa: E731
    elif callable(tx):
        extra = tuple(getattr(tx, "hyperparameters", ()))  # further per-replica entries of hp it reads
        optimizer = lambda hp: tx(hp["lr"], **{name: hp[name] for name in extra})  # noqa: E731
    else:
        raise TypeError(f"tx must be an optax.GradientTransformation or a function of lr, got {type(tx).__name__}")
    max_loss, max_weight = bounds.max_loss, bounds.max_weight

    def init_fn(key, problem, hp) -> dict:
        params, aux = model.init(key, problem, hp)
        return {
            "params": params,
            "aux": aux,
            "opt": optimizer(hp).init(params),
            "loss": jnp.zeros((), jnp.result_type(float)),
            "step": jnp.zeros((), jnp.int32),
            **divergence.flags(),
        }

    def step_fn(state: dict, batch, key, problem, hp, mask=None) -> dict:
        if mask is None:
            mask = _full_mask(batch)
        loss, grads, aux = model.loss_and_grad(state["params"], state["aux"], batch, mask, key, problem, hp)
        updates, opt = optimizer(hp).update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        bad = divergence.beyond(loss, max_loss) | divergence.beyond(params, max_weight)
        flags = divergence.flag(state, bad, state["step"])
        frozen = flags["diverged"]
        return {
            **state,
            "params": divergence.hold(frozen, params, state["params"]),
            "aux": divergence.hold(frozen, aux, state["aux"]),
            "opt": divergence.hold(frozen, opt, state["opt"]),
            "loss": jnp.asarray(loss, state["loss"].dtype),
            "step": state["step"] + 1,
            **flags,
        }

    return init_fn, step_fn


def _full_mask(batch):
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError("a model without a batch (e.g. an RBM's exact data term) needs mask= (one entry per chain)")
    return jnp.ones(leaves[0].shape[0], jnp.result_type(float))
