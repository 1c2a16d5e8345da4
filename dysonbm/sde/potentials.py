"""Confining potentials U of the level SDEs and the checks of their parameters."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm.sde.checks import _first_bad

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Potential:
    """U(λ) = ½ hp[quadratic] λ² + nonlinear(λ, hp), a function of ONE level.

    The quadratic part (if ``quadratic`` names an hp entry) is integrated exactly; the
    nonlinear rest explicitly. ``params`` are the hp names it reads.
    """

    name: str
    quadratic: str | None = None
    nonlinear: Callable[[Array, Mapping], Array] | None = None
    params: tuple[str, ...] = ()

    def stiffness(self, hp) -> Array:
        """The coefficient γ of the exactly integrated part γλ²/2 (0 if none)."""
        return jnp.asarray(hp[self.quadratic]) if self.quadratic else jnp.asarray(0.0)

    def value(self, lam, hp) -> Array:
        """U(lam) for a scalar ``lam``."""
        u = 0.5 * self.stiffness(hp) * lam**2
        return u + self.nonlinear(lam, hp) if self.nonlinear is not None else u

    def nonlinear_force(self, lam: Array, hp) -> Array:
        """−d/dλ of the nonlinear part, elementwise over ``lam`` (any shape)."""
        if self.nonlinear is None:
            return jnp.zeros_like(lam)
        du = jax.grad(lambda x: jnp.asarray(self.nonlinear(x, hp), dtype=x.dtype))
        flat = lam.reshape(-1)
        return -jax.vmap(du)(flat).reshape(lam.shape)

    def force(self, lam: Array, hp) -> Array:
        """−U'(lam), elementwise."""
        return -self.stiffness(hp).astype(lam.dtype) * lam + self.nonlinear_force(lam, hp)


def _quartic(lam, hp):
    return 0.25 * hp["g"] * lam**4


POTENTIALS: dict[str, Potential] = {
    "free": Potential("free"),
    "quadratic": Potential("quadratic", quadratic="gamma", params=("gamma",)),
    "quartic": Potential("quartic", quadratic="gamma", nonlinear=_quartic, params=("gamma", "g")),
}


def get_potential(spec) -> Potential:
    """A `Potential` from a name in `POTENTIALS`, a `Potential`, or a callable ``U(lam, hp)``
    (or ``U(lam)``) of one scalar level, differentiated with ``jax.grad``."""
    if isinstance(spec, Potential):
        return spec
    if isinstance(spec, str):
        if spec not in POTENTIALS:
            raise ValueError(f"potential must be one of {sorted(POTENTIALS)} or a callable, got potential={spec!r}")
        return POTENTIALS[spec]
    if callable(spec):
        try:
            n_args = len(inspect.signature(spec).parameters)
        except (TypeError, ValueError):
            n_args = 2
        fn = spec if n_args >= 2 else _OneArg(spec)
        return Potential(getattr(spec, "__name__", "custom"), nonlinear=fn)
    raise ValueError(f"potential must be a name, a Potential or a callable U(lam, hp), got potential={spec!r}")


@dataclasses.dataclass(frozen=True)
class _OneArg:
    fn: Callable

    def __call__(self, lam, hp):
        return self.fn(lam)


class _AnyHp(dict):
    """hp stand-in for shape checks: every name reads as 1.0."""

    def __missing__(self, key):
        return jnp.asarray(1.0)


def _check_potential(pot: Potential, hp, field: str = "potential") -> None:
    """Raise ValueError unless U maps one scalar level to a scalar."""
    if pot.nonlinear is None:
        return
    hp = _AnyHp({k: jnp.asarray(v).reshape(-1)[0] for k, v in hp.items()})
    try:
        out = jax.eval_shape(lambda x: pot.nonlinear(x, hp), jax.ShapeDtypeStruct((), jnp.float32))
    except Exception as err:  # any failure on a scalar input means it is not a one-level function
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{field}={pot.name!r} is not a function of one scalar level: {msg}") from None
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(f"{field}={pot.name!r} must map one scalar level to a scalar, got output shape {shape}")


def _check_confining(pot: Potential, hp) -> None:
    """Raise ValueError where a named potential is unbounded below (every level runs away):
    g < 0, or a negative quadratic coefficient with no positive quartic term to hold it."""
    ok = None
    if pot.name == "quartic" and "g" in pot.params and "g" in hp:
        g = np.asarray(hp["g"], dtype=float)
        if not np.all(g >= 0):
            raise ValueError(f"g must be >= 0 (U is unbounded below otherwise), got g={_first_bad(g, g >= 0)}")
        ok = g > 0  # a double well: γ < 0 is held by the quartic term
    if pot.quadratic is None or pot.quadratic not in hp:
        return
    v = np.asarray(hp[pot.quadratic], dtype=float)
    ok = v >= 0 if ok is None else (v >= 0) | ok
    if not np.all(ok):
        name = pot.quadratic
        raise ValueError(f"{name} must be >= 0 for potential={pot.name!r} (U is unbounded below otherwise), "
                         f"got {name}={_first_bad(v, np.broadcast_to(ok, v.shape))}")
