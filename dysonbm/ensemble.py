"""What a replica draws for itself, what it shares with its grid point, and what the run shares.

A replica is one sample of a published ensemble. Its quenched disorder has up to four
ingredients, and the config's ``[ensemble]`` table says at which granularity each is drawn:

    problem   the teacher, fixed layers or target kernel (`Model.problem`)
    inputs    the training inputs x (a finite dataset, or the online stream)
    noise     injected per-sample noise (the teacher–student model's matrices a)
    test      the inputs of the test set (labelled with the replica's own problem)

    granularity  "replica" (its own), "point" (one per grid point) or "run" (one for all)

Keys. Every ingredient has its own root ``fold_in(key(seed), TAG)``, and a replica reads the
root folded with its unit: its global id ``g = p·R + r``, its point ``p``, or 0. A replica's
numbers are therefore independent of chunking, devices and neighbours, whatever is shared.
A finite dataset of n samples is ``model.draw_inputs(inputs_key, n)`` and
``model.draw_noises(noise_key, n)``, sample j depending on j alone: the noise is frozen per
sample index (batch j sees the same ``a_j`` in every epoch). Online, step ``t`` draws its
batch the same way from ``fold_in(key, t)``: fresh every step. The
replica's own key ``fold_in(key(seed), REPLICA)`` folded with ``g`` draws its init and the
randomness of its steps (Gibbs chains, reshuffles).

Defaults are the published protocols (`Model.ensemble`); under ``online`` the inputs and the
noise default to "replica" (fresh data is a replica's own). Problems are stored with the
results at their granularity (`stored_problems`). This module imports no jax.
"""

from __future__ import annotations

import numpy as np

GRANULARITIES = ("replica", "point", "run")
INGREDIENTS = ("problem", "inputs", "noise", "test")
# fold_in tags of the root key; REPLICA keys a replica's init and step randomness
TAGS = {"problem": 0, "test": 1, "inputs": 2, "noise": 4}
REPLICA = 3

KEY_DERIVATION = (
    "ingredient key = fold_in(fold_in(key(seed), tag), unit) with tags problem 0, test 1, inputs 2, "
    "noise 4 and unit = p * replicas + r (replica), p (point) or 0 (run); replica key = "
    "fold_in(fold_in(key(seed), 3), p * replicas + r); dataset of n samples: "
    "model.draw_inputs(ingredient key, n), model.draw_noises(ingredient key, n); online batch of step t: "
    "the same from fold_in(ingredient key, t); test set: the same from fold_in(test key, 0) for inputs, "
    "fold_in(test key, 1) for noise; Gaussian blocks: dysonbm.counter_rng.normal(key, (n, *shape)), "
    "word i = h(h(i ^ k0) + k1), (k0, k1) = jax.random.bits(key, (2,), uint32), h = lowbias32, "
    "u(w) = (2 * (w >> 9) + 1) / 2**24, normals 2m, 2m+1 = r cos(2 pi u(w_2m+1)), r sin(2 pi u(w_2m+1)), "
    "r = sqrt(-2 log u(w_2m))"
)


class EnsembleError(ValueError):
    """A bad ``[ensemble]`` entry: ``field`` and ``value`` name it."""

    def __init__(self, field: str, value, reason: str):
        self.field, self.value = field, value
        super().__init__(reason)


def ingredients(model, protocol: str) -> tuple[str, ...]:
    """The ingredients a model has under a data protocol (a process has none)."""
    if not hasattr(model, "loss_and_grad"):
        return ()
    names = ["problem", "test"]
    if model.uses_data:
        names.append("inputs")
        if model.has_noise:
            names.append("noise")
    return tuple(n for n in INGREDIENTS if n in names)


def resolve(model, protocol: str, requested: dict) -> dict[str, str]:
    """Granularity of each of the model's ingredients: the request over the defaults."""
    have = ingredients(model, protocol)
    for name, value in requested.items():
        if name not in have:
            known = ", ".join(have) or "none for this model"
            raise EnsembleError(f"ensemble.{name}", value, f"not an ingredient of model {model.name!r} ({known})")
        if value not in GRANULARITIES:
            raise EnsembleError(f"ensemble.{name}", value, f"one of {', '.join(GRANULARITIES)}")
    defaults = dict(getattr(model, "ensemble", {}))  # an SDE process has no ingredients
    if protocol == "online":
        defaults.update(inputs="replica", noise="replica")
    return {name: requested.get(name, defaults.get(name, "replica")) for name in have}


def units(granularity: str, ids: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The unit each replica folds into its ingredient key."""
    if granularity == "replica":
        return np.asarray(ids, np.int64)
    if granularity == "point":
        return np.asarray(points, np.int64)
    return np.zeros_like(np.asarray(ids, np.int64))


def describe(ensemble: dict[str, str]) -> str:
    """One line for reports: ``teacher per replica, inputs per point, ...``."""
    words = {"replica": "per replica", "point": "per grid point", "run": "one for the run"}
    return ", ".join(f"{name} {words[g]}" for name, g in ensemble.items())


def stored_problems(problems: dict[str, np.ndarray], granularity: str, n_points: int, replicas: int):
    """``(arrays, lead axes)`` of per-replica problems ``(P·R, ...)`` kept at their granularity:
    ``(point, replica, ...)``, ``(point, ...)`` or ``(...)``."""
    out = {}
    for name, value in problems.items():
        full = value.reshape((n_points, replicas) + value.shape[1:])
        out[name] = full if granularity == "replica" else full[:, 0] if granularity == "point" else full[0, 0]
    lead = {"replica": ("point", "replica"), "point": ("point",), "run": ()}[granularity]
    return out, lead
