"""The weighted level SDE: levels of a Gram matrix X = W Wᵀ with measured, per-pair coefficients.

For levels x_1 < … < x_K (ascending; coefficient i belongs to the i-th smallest level),

    dx_i = [ a_i − γ_i x_i + T Σ_{j≠i} Ṽ_ij/(x_i − x_j) + T C̃_ii ] dτ + sqrt(T Ṽ_ii) dB_i ,

reflected at x = 0 (the levels of a Gram matrix are ≥ 0). Ṽ is symmetric: its off-diagonal
entries weight the Coulomb repulsion pair by pair, its diagonal is the noise variance per
unit T; C̃_ii is the Itô term of X = W Wᵀ and γ_i the drift's slope (> 0: restoring). With
Ṽ_ij = c (i ≠ j), Ṽ_ii = 2c, C̃ = 0 and γ_i = γ it is the β = 1 Dyson Brownian motion with
D = Tc, and it then runs the very step of `DysonBM` (`dysonbm.sde.split`): noise, the far
pairs explicit, the nearest-neighbour bonds implicit (Newton proximal solve), with the bond
couplings drawn so that an isolated pair's gap has the exact law of the pair SDE.

`LevelSDE` is the `Process` (``init/step/observe``, coefficients as per-replica arrays in
``hp``); `integrate_levels` advances a batch of replicas over one interval (jit + vmap).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm.sde.checks import _first_bad
from dysonbm.sde.processes import LevelState, Process
from dysonbm.sde.split import Control, LevelTerms, split_step

Array = jax.Array

__all__ = [
    "LevelCoefficients", "level_coefficients", "level_velocity", "LevelSDE", "DEFAULT_CONTROL", "integrate_levels",
]


class LevelCoefficients(NamedTuple):
    """Coefficients of the weighted level SDE (levels ascending); leading axes free (e.g. R).

    drift      a_i (…, K): the drift is a_i − γ_i x_i (a drift linearised about x(t) has
               a_i = K̃_ii(t) + γ_i x_i(t))
    pair       Ṽ_ij (…, K, K), symmetric: Coulomb weights off the diagonal, noise variance
               T Ṽ_ii on it
    ito        C̃_ii (…, K), the Itô term (the SDE multiplies it by T)
    stiffness  γ_i (…, K), the drift's slope (> 0: restoring), integrated exactly
    """

    drift: Array
    pair: Array
    ito: Array
    stiffness: Array

    def terms(self, T) -> LevelTerms:
        """The coefficients as `LevelTerms` of the split step (negative Ṽ entries clipped at 0)."""
        pair = jnp.asarray(self.pair)
        return LevelTerms(noise=T * jnp.maximum(jnp.diagonal(pair, axis1=-2, axis2=-1), 0.0), rate=self.stiffness,
                          bond=T * jnp.maximum(jnp.diagonal(pair, offset=1, axis1=-2, axis2=-1), 0.0), far=T * pair,
                          drift=self.drift + T * self.ito)


def level_coefficients(drift, pair, ito=None, stiffness=None) -> LevelCoefficients:
    """`LevelCoefficients` with the optional terms set to 0 (``stiffness`` broadcast to ``drift``)."""
    drift = jnp.asarray(drift)
    zeros = jnp.zeros_like(drift)
    return LevelCoefficients(
        drift, jnp.asarray(pair, drift.dtype),
        zeros if ito is None else jnp.asarray(ito, drift.dtype),
        zeros if stiffness is None else jnp.broadcast_to(jnp.asarray(stiffness, drift.dtype), drift.shape),
    )


def level_velocity(x: Array, coef: LevelCoefficients, T) -> Array:
    """The deterministic part of the SDE for one replica (x ascending, (K,)):
    a_i − γ_i x_i + T Σ_{j≠i} Ṽ_ij/(x_i − x_j) + T C̃_ii (a coincident pair contributes 0)."""
    d = x[:, None] - x[None, :]
    use = ~jnp.eye(x.shape[0], dtype=bool) & (d != 0)
    coulomb = jnp.sum(jnp.where(use, coef.pair / jnp.where(use, d, 1.0), 0.0), axis=1)
    return coef.drift - coef.stiffness * x + T * (coulomb + coef.ito)


#: the weighted SDE's step settings: the Courant rule on (the noise limits the step where it is
#: ~ the second-neighbour distance), a budget of 20 000 sub-steps, Gram levels reflected at 0
DEFAULT_CONTROL = Control(courant=0.1, max_substeps=20_000, reflect=True)

_ARRAYS = {"x0": 1, "drift": 1, "ito": 1, "stiffness": 1, "pair": 2}  # hp name -> number of level axes


@dataclasses.dataclass(frozen=True)
class LevelSDE(Process):
    """The weighted level SDE of ``n`` levels (one replica; see the module docstring).

    hp (per replica): ``T`` ≥ 0 and ``dt`` > 0 (scalars); ``x0`` (n,) the start (any order;
    reflected at 0 if ``control.reflect``); ``drift``, ``ito``, ``stiffness`` (n,) and ``pair``
    (n, n) the `LevelCoefficients`, indexed by level in ascending order.
    control: the split step's settings (`dysonbm.sde.split.Control`; default `DEFAULT_CONTROL`):
    the step control's ``courant``, ``resolve``, ``theta`` and its budget ``max_substeps`` per
    step (each step reaches dt; sub-steps where the budget overrode the control are counted),
    ``reflect`` at 0, ``random_bonds`` (bond couplings drawn from the exact isolated-pair law;
    False: their means, g² = g_b² + 4TṼ_i,i+1 τ).
    observe -> {"levels": (n,) ascending, "min_gap": (), "substeps": (), "forced": () int32}.
    """

    n: int
    T: float = 1.0
    dt: float = 1e-3
    control: Control = DEFAULT_CONTROL

    sweepable: ClassVar[tuple[str, ...]] = ("T", "dt")

    def __post_init__(self):
        if not isinstance(self.n, (int, np.integer)) or self.n < 2:
            raise ValueError(f"n must be an integer >= 2, got n={self.n!r}")
        if self.control.chiral:
            raise ValueError("control.chiral must be False for LevelSDE (levels, not singular values)")
        for name in ("courant", "theta"):
            v = getattr(self.control, name)
            if not 0 <= v < 1:
                raise ValueError(f"control.{name} must be in [0, 1), got control.{name}={v!r}")
        for name in ("max_substeps", "max_newton"):
            v = getattr(self.control, name)
            if v < 1:
                raise ValueError(f"control.{name} must be >= 1, got control.{name}={v!r}")

    def hp_shape(self, name: str) -> tuple[int, ...]:
        return (self.n,) * _ARRAYS.get(name, 0)

    def _validate_more(self, hp):
        T = np.asarray(hp["T"], dtype=float)
        if not np.all(T >= 0):
            raise ValueError(f"T must be >= 0, got T={_first_bad(T, T >= 0)}")
        for name in _ARRAYS:
            if name not in hp:
                raise ValueError(f"{name} must be given: {self.hp_shape(name)} per replica")
            v = np.asarray(hp[name], dtype=float)
            if v.shape[v.ndim - _ARRAYS[name]:] != self.hp_shape(name):
                raise ValueError(f"{name} must end in shape {self.hp_shape(name)}, got shape {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name} must be finite, got {name}={_first_bad(v, np.isfinite(v))}")

    def init(self, key, hp) -> LevelState:
        x = jnp.asarray(hp["x0"])
        y = jnp.sort(jnp.abs(x) if self.control.reflect else x)
        zero = jnp.asarray(0, jnp.int32)
        return LevelState(y, zero, zero, zero)

    def step(self, state: LevelState, key, hp) -> LevelState:
        coef = LevelCoefficients(*(jnp.asarray(hp[k], state.y.dtype) for k in LevelCoefficients._fields))
        y, info = split_step(state.y, key, hp["dt"], coef.terms(hp["T"]), self.control)
        return LevelState(y, *info)

    def observe(self, state: LevelState, hp) -> dict[str, Array]:
        y = state.y
        return {"levels": y, "min_gap": jnp.min(jnp.diff(y)), "substeps": state.substeps, "forced": state.forced}


@partial(jax.jit, static_argnames=("process",))
def _integrate(process, key, x0, coef, T, tau):
    def one(key, x0, coef, T, tau):
        hp = {**coef._asdict(), "x0": x0, "T": T, "dt": tau}
        state = process.step(process.init(None, hp), key, hp)
        return state.y, {"steps": state.substeps, "forced": state.forced}

    return jax.vmap(one)(key, x0, coef, T, tau)


def integrate_levels(key, x0, coef: LevelCoefficients, T, tau, *, courant: float = 0.1, max_steps: int = 20_000,
                     resolve: float = 1e-3, random_bonds: bool = True, reflect: bool = True):
    """Advance the weighted level SDE over a time ``tau`` with fixed coefficients; batched.

    Shapes (R replicas, K levels): ``key`` (R,) keys; ``x0`` (R, K) levels, any order;
    ``coef`` `LevelCoefficients` with leading axis R, indexed by level in ascending order;
    ``T`` and ``tau`` (R,). One `LevelSDE` step of length τ with the budget ``max_steps``
    sub-steps. Returns ``(x, info)``: the levels at τ (R, K), ascending, and ``info`` with
    ``steps`` (sub-steps taken) and ``forced`` (sub-steps where the budget overrode the step
    control), both (R,).
    """
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    coef = LevelCoefficients(*(jnp.asarray(c, dtype) for c in coef))
    ctl = DEFAULT_CONTROL._replace(courant=courant, resolve=resolve, max_substeps=max_steps, random_bonds=random_bonds,
                                   reflect=reflect)
    process = LevelSDE(n=x0.shape[-1], control=ctl)
    return _integrate(process, key, x0, coef, jnp.asarray(T, dtype), jnp.asarray(tau, dtype))
