"""Eigenvalue SDEs (Dyson Brownian motion, Wishart process), stepped by the split integrator `dysonbm.sde.split`.

Processes
---------
`DysonBM` integrates the β-Dyson Brownian motion of N levels,

    dλ_i = −U'(λ_i) dt + β D Σ_{j≠i} 1/(λ_i − λ_j) dt + sqrt(2D) dB_i,

whose stationary law is the Coulomb gas  P(λ) ∝ Π_{i<j}|λ_i − λ_j|^β exp(−Σ_i U(λ_i)/D); for
U = γλ²/2 its density tends to the semicircle of radius R = sqrt(2βND/γ).

`WishartProcess` integrates the eigenvalues x_i = s_i² of X = WᵀW, W an M×N Brownian matrix
(entries of variance D dt), written for any β > 0 as

    dx_i = β D [ M + Σ_{j≠i} (x_i + x_j)/(x_i − x_j) ] dt − U'(x_i) dt + 2 sqrt(D x_i) dB_i

(β = 1 real, 2 complex, 4 quaternion W; each real component of an entry has variance D dt).
It is integrated in the singular values s_i = sqrt(x_i) (Itô), where the noise is additive:

    ds_i = [ (β(M−N+1) − 1) D/(2 s_i) + (βD/2) Σ_{j≠i} (1/(s_i − s_j) + 1/(s_i + s_j))
             − U'(s_i²)/(2 s_i) ] dt + sqrt(D) dB_i.

`MatrixDBM` and `MatrixWishart` are the matrix-space references: the matrix SDE is an
Ornstein–Uhlenbeck process, advanced by its exact Gaussian transition (no time-step error),
and diagonalised at each observation.

Protocol
--------
Each process is a frozen (hashable) dataclass of static settings with pure functions of ONE
replica; the engine vmaps them over replicas and scans them over steps::

    init(key, hp) -> state ;  step(state, key, hp) -> state ;  observe(state, hp) -> dict

``hp`` is a dict of per-replica scalars (traced); the names a process reads are its
``sweepable`` tuple, whose defaults are the dataclass fields of the same name. ``validate(hp)``
checks concrete values on the host and raises ``ValueError`` naming the field.

Scheme ``"split"`` (default): exact OU part, explicit far field, exact-2×2 implicit pairs
-----------------------------------------------------------------------------------------
The quadratic part of the potential (rate r = γ for DBM; r = γ/2 for the singular values of
the Wishart process) is removed exactly by the Ornstein–Uhlenbeck time change
λ(t) = e^{−rt} μ(τ(t)), τ(t) = (e^{2rt} − 1)/(2r), under which μ obeys the same SDE without
the quadratic term (the repulsion is homogeneous of degree −1). A step of length h, with
τ = τ(h), κ = βD and y the ordered levels, is then (written here in the time-changed frame;
`dysonbm.sde.split`, the integrator shared with `dysonbm.sde.LevelSDE`, takes the same step
in the original frame, where step 4 comes first and the couplings carry e^{−2rh}):

1. noise: b = sort(y + sqrt(2Dτ) ξ)  (Wishart: sqrt(Dτ) ξ, reflected at 0);
2. explicit part at b: b += τ[κ Σ_{|i−j|≥2} 1/(b_i − b_j) − U_nl'(b_i)] (Wishart: also the
   mirror images 1/(b_i + b_j)); evaluated after the noise so that both members of a pair
   that the noise brings close feel every other level alike;
3. implicit part, the nearest-neighbour bonds, by the implicit midpoint rule
   y = b + F_nn((y + b)/2), i.e. m = argmin ½|m − b|² − Σ_i (c_i/2) log(m_{i+1} − m_i),
   y = 2m − b. The bond couplings are c_i = Dτ·X_i, X_i ~ χ²_β (mean κτ): for an isolated
   pair the gap becomes g² = g_b² + 4Dτ χ²_β, which is exactly the 2×2 law (the eigenvalue
   gap of [[a, z], [z*, b]] with |z|² = Dτ χ²_β) — so the level-repulsion hole at gaps
   ≲ sqrt(Dτ) is reproduced exactly, where a deterministic splitting would empty it.
   Wishart: bonds also carry −c_i log(m_{i+1} + m_i), and each level the origin term
   −c0_i log m_i with c0_i = (Dτ/2)·χ²_{β(M−N+1)−1} (the exact Bessel law of a singular
   value near 0). The objective is strictly convex and infinite on the boundary of the
   ordered cone: damped Newton steps with a tridiagonal Hessian (Thomas recursion on CPU,
   parallel cyclic reduction elsewhere; mostly one iteration) find m. A gap that the
   neighbours compress below a quarter of its midpoint value is widened back; if a gap is still not positive (clusters,
   degenerate starts) the step falls back to backward Euler y = prox_c(b), always ordered.
   A near-zero χ² draw lets the neighbours squeeze its bond below the float resolution of
   the positions, where Newton cannot converge; such a step (≈1% of replica-steps at
   N = 1024, none at N ≤ 256) is redone with the mean couplings βuτ;
4. y ← e^{−rh} y.

The repulsion is not softened: the singular nearest pairs are implicit, the rest is a
smooth field (the distance of a pair two apart floored at a quarter of its pre-noise value,
which only acts on clusters of three made by the noise alone and keeps the variance of the
explicit kick finite; pairs further apart close only if three or more gaps close at once, and
are summed as they are). Levels stay strictly
ordered and finite for every dt (for β < 1, where the exact levels collide, they may touch).
Cost per step: one O(N²) vectorised pair sum, like Euler–Maruyama, plus O(N log N).

Step control: with mean gap ḡ, a step is cut into sub-steps (per replica, in a
``lax.while_loop``) when κτ > theta·ḡ² or the nonlinear force would change a gap by more
than theta·max(gap, ḡ), within a budget of ``max_substeps``: no sub-step is shorter than
(time left)/(sub-steps left), so the step always ends at dt, none dropped (sub-steps where
the budget overrode the control are counted in ``LevelState.forced``): only at very large
dt, stiff potentials, or the compressed
configurations right after the degenerate start "zero" (all levels at 0: the first step
has no far field and the prox splits the levels).

Weak order 1 in dt (Lie splitting, Euler far field); the OU part is exact, and N = 2 with a
quadratic or no potential is exact for any dt. Recommended dt (`recommended_dt`):
D·dt ≤ 0.05 s̄², s̄ the bulk level spacing (U = γλ²/2: s̄² = π²βD/(2γN)), and γ·dt ≤ 0.005;
the first bound is the tighter one for N ≳ 30β (dt ≈ 0.25β/(γN)). Measured there (N = 16,
β = 1.5 and N = 64, β = 1): the stationary ⟨Σλ²⟩ is biased by +0.2…0.4 %, the mean top
level by < 0.2 %, and ⟨r⟩ of the spacing ratio and the spacing distribution agree with the
exact ensemble within sampling error (|Δ⟨r⟩| ≤ 0.003); at 4× that dt ⟨Σλ²⟩ is biased by
≈ +1.5 % and ⟨r⟩ by −0.02 to −0.035. At N = 1024 (4 replicas from the exact stationary
start, 400 steps) ⟨Σλ²⟩ stays within 0.1 % of exact at 1× and 4× the recommended dt.

Scheme ``"euler"``: plain Euler–Maruyama on the same SDE (in x for the Wishart process), no
ordering or step control, for comparison: at large N or dt the levels cross and it returns
NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm.sde.checks import _check_choice, _check_common, _first_bad
from dysonbm.sde.numerics import _dtype, _offdiag_mask, _safe_recip
from dysonbm.sde.potentials import _check_confining, _check_potential, get_potential
from dysonbm.sde.samplers import sample_hermite, sample_laguerre
from dysonbm.sde.split import Control, LevelTerms, split_step

Array = jax.Array
PyTree = Any

__all__ = ["Process", "LevelState", "DysonBM", "WishartProcess"]


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------
class LevelState(NamedTuple):
    """State of an eigenvalue process for one replica.

    y: (N,) the integrated coordinates, ascending (λ for DBM, singular values s for Wishart,
    the levels x for `LevelSDE`); substeps, newton, forced: () int32, sub-steps, Newton
    iterations and sub-steps forced by the step budget in the last step (`split.StepInfo`).
    """

    y: Array
    substeps: Array
    newton: Array
    forced: Array


def _count():
    return jnp.asarray(0, jnp.int32)


class Process:
    """Base class: a frozen dataclass of static settings; pure single-replica functions."""

    sweepable: ClassVar[tuple[str, ...]] = ()

    def init(self, key, hp) -> PyTree:
        raise NotImplementedError

    def step(self, state, key, hp) -> PyTree:
        raise NotImplementedError

    def observe(self, state, hp) -> dict[str, Array]:
        raise NotImplementedError

    def hp_shape(self, name: str) -> tuple[int, ...]:
        """Shape of hp[name] for one replica: () for the sweepable scalars."""
        return ()

    def defaults(self) -> dict[str, float]:
        """Default per-replica parameters: the dataclass fields named in ``sweepable``."""
        return {name: float(getattr(self, name)) for name in self.sweepable}

    def validate(self, hp) -> None:
        """Check concrete hp values (scalars or arrays) on the host; raise ValueError."""
        hp = {**self.defaults(), **dict(hp)}
        checks = [("beta", lambda v: v > 0, "> 0"), ("D", lambda v: v >= 0, ">= 0"),
                  ("dt", lambda v: v > 0, "> 0")]
        for name in hp:
            if name in self.sweepable:
                v = np.asarray(hp[name], dtype=float)
                if not np.all(np.isfinite(v)):
                    raise ValueError(f"{name} must be finite, got {name}={_first_bad(v, np.isfinite(v))}")
        for name, test, text in checks:
            if name in self.sweepable and name in hp:
                v = np.asarray(hp[name], dtype=float)
                ok = test(v)
                if not np.all(ok):
                    raise ValueError(f"{name} must be {text}, got {name}={_first_bad(v, ok)}")
        self._validate_more(hp)

    def _validate_more(self, hp) -> None:
        pass

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


class _LogGas(Process):
    """The ordered log-gas processes (DBM, Wishart singular values): their coefficients as
    `LevelTerms` of the shared split step (`dysonbm.sde.split`)."""

    chiral: ClassVar[bool] = False

    # -- process-specific pieces ------------------------------------------------------
    def _terms(self, hp) -> LevelTerms:
        raise NotImplementedError

    def _nonlinear_force(self, y, hp):
        raise NotImplementedError

    def _euler(self, y, key, hp):
        raise NotImplementedError

    def _control(self) -> Control:
        return Control(theta=self.theta, max_substeps=self.max_substeps, max_newton=self.max_newton,
                       newton_tol=self.newton_tol, random_bonds=self.random_bonds, chiral=self.chiral)

    def _split(self, y, key, hp):
        nonlinear = None if self.potential.nonlinear is None else (lambda b: self._nonlinear_force(b, hp))
        y, info = split_step(y, key, hp["dt"], self._terms(hp), self._control(), nonlinear)
        return LevelState(y, *info)

    def step(self, state: LevelState, key, hp) -> LevelState:
        """One step of length hp["dt"].  state.y: (N,) -> (N,)."""
        if self.scheme == "euler":
            return LevelState(self._euler(state.y, key, hp), _count(), _count(), _count())
        return self._split(state.y, key, hp)


# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DysonBM(_LogGas):
    """β-Dyson Brownian motion of ``n`` levels (one replica; no batch axis).

        dλ_i = −U'(λ_i) dt + β D Σ_{j≠i} 1/(λ_i − λ_j) dt + sqrt(2D) dB_i

    potential: "quadratic" (γλ²/2), "quartic" (γλ²/2 + gλ⁴/4), "free", a `Potential`, or a
        callable U(lam, hp) of one scalar level.
    start: "zero" (all levels at 0, the degenerate start, split by the first step),
        "semicircle" (exact draw from the stationary Coulomb gas of U = γλ²/2, whose density
        tends to the semicircle of radius sqrt(2βND/γ)), "given" (``initial_levels``).
    scheme: "split" (stable; see the module docstring) or "euler" (plain Euler–Maruyama).
    hp (per replica): D ≥ 0, beta > 0, gamma, g, dt > 0. Defaults are the fields below.
    observe -> {"levels": (N,) sorted, "min_gap": () min λ_{i+1} − λ_i of the labelled levels
        (≤ 0 after a crossing), "substeps": () int32}.
    """

    n: int
    potential: Any = "quadratic"
    start: str = "zero"
    scheme: str = "split"
    initial_levels: tuple[float, ...] | None = None
    D: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    g: float = 0.0
    dt: float = 1e-3
    theta: float = 0.5
    max_substeps: int = 16
    max_newton: int = 50
    newton_tol: float = 3e-3
    random_bonds: bool = True

    sweepable: ClassVar[tuple[str, ...]] = ("D", "beta", "gamma", "g", "dt")
    INITS: ClassVar[tuple[str, ...]] = ("zero", "semicircle", "given")
    SCHEMES: ClassVar[tuple[str, ...]] = ("split", "euler")

    def __post_init__(self):
        _check_common(self)
        _check_choice("start", self.start, self.INITS)
        _check_choice("scheme", self.scheme, self.SCHEMES)
        pot = get_potential(self.potential)
        object.__setattr__(self, "potential", pot)
        _check_potential(pot, self.defaults())
        if self.start == "given":
            lv = self.initial_levels
            if lv is None or len(lv) != self.n or not np.all(np.isfinite(np.asarray(lv, dtype=float))):
                raise ValueError(f"initial_levels must be {self.n} finite numbers for start='given', got initial_levels={lv!r}")
            object.__setattr__(self, "initial_levels", tuple(float(v) for v in lv))
        if self.start == "semicircle" and pot.quadratic is None:
            raise ValueError(f"start='semicircle' needs a potential with a quadratic part, got potential={pot.name!r}")
        if not 0 < self.theta < 1:
            raise ValueError(f"theta must be in (0, 1), got theta={self.theta!r}")
        if self.max_substeps < 1:
            raise ValueError(f"max_substeps must be >= 1, got max_substeps={self.max_substeps!r}")
        if self.max_newton < 1:  # the solve always takes its first Newton iteration
            raise ValueError(f"max_newton must be >= 1, got max_newton={self.max_newton!r}")
        self.validate(self.defaults())

    def _validate_more(self, hp):
        _check_confining(self.potential, hp)
        if self.start == "semicircle":
            v = np.asarray(hp[self.potential.quadratic], dtype=float)
            if not np.all(v > 0):
                name = self.potential.quadratic
                raise ValueError(f"{name} must be > 0 for start='semicircle', got {name}={_first_bad(v, v > 0)}")
        _check_potential(self.potential, hp)

    def _terms(self, hp) -> LevelTerms:
        D = jnp.asarray(hp["D"])
        kappa = hp["beta"] * D
        return LevelTerms(noise=2.0 * D, rate=self.potential.stiffness(hp), bond=kappa, far=kappa, bond_dof=hp["beta"])

    def _nonlinear_force(self, y, hp):
        return self.potential.nonlinear_force(y, hp)

    def init(self, key, hp) -> LevelState:
        dtype = _dtype()
        if self.start == "zero":
            y = jnp.zeros(self.n, dtype)
        elif self.start == "given":
            y = jnp.sort(jnp.asarray(self.initial_levels, dtype))
        else:
            scale = jnp.sqrt(hp["D"] / self.potential.stiffness(hp))
            y = sample_hermite(key, self.n, hp["beta"], scale)
        return LevelState(y, _count(), _count(), _count())

    def _euler(self, y, key, hp):
        h = hp["dt"]
        mask = _offdiag_mask(self.n)
        d = y[:, None] - y[None, :]
        rep = jnp.sum(jnp.where(mask, 1.0 / jnp.where(mask, d, 1.0), 0.0), axis=1)
        drift = self.potential.force(y, hp) + hp["beta"] * hp["D"] * rep
        return y + h * drift + jnp.sqrt(2.0 * hp["D"] * h) * jax.random.normal(key, y.shape, y.dtype)

    def observe(self, state: LevelState, hp) -> dict[str, Array]:
        y = state.y
        return {"levels": jnp.sort(y), "min_gap": jnp.min(jnp.diff(y)), "substeps": state.substeps}


# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class WishartProcess(_LogGas):
    """Eigenvalues x_i of X = WᵀW, W an m×n (m ≥ n) Brownian matrix (one replica).

        dx_i = β D [ m + Σ_{j≠i} (x_i + x_j)/(x_i − x_j) ] dt − U'(x_i) dt + 2 sqrt(D x_i) dB_i

    integrated in s_i = sqrt(x_i) (see the module docstring). β = 1 is real W; any β with
    β(m − n + 1) ≥ 1 is accepted (the singular values then never need an attractive origin).
    potential: "free" (default), "quadratic" U = γx²/2 (W decays at rate γ/2), "quartic",
        a `Potential` or a callable U(x, hp).
    start: "zero" (W = 0: all x = 0), "stationary" (exact draw, quadratic potential: W entries
        of variance D/γ), "given" (``initial_levels`` = x, non-negative).
    observe -> {"levels": (N,) sorted x, "min_gap": () min x_{i+1} − x_i, "substeps": () int32}.
    """

    m: int
    n: int
    potential: Any = "free"
    start: str = "zero"
    scheme: str = "split"
    initial_levels: tuple[float, ...] | None = None
    D: float = 1.0
    beta: float = 1.0
    gamma: float = 0.0
    g: float = 0.0
    dt: float = 1e-3
    theta: float = 0.5
    max_substeps: int = 16
    max_newton: int = 50
    newton_tol: float = 3e-3
    random_bonds: bool = True

    sweepable: ClassVar[tuple[str, ...]] = ("D", "beta", "gamma", "g", "dt")
    chiral: ClassVar[bool] = True
    INITS: ClassVar[tuple[str, ...]] = ("zero", "stationary", "given")
    SCHEMES: ClassVar[tuple[str, ...]] = ("split", "euler")

    def __post_init__(self):
        _check_common(self)
        if not isinstance(self.m, (int, np.integer)) or self.m < self.n:
            raise ValueError(f"m must be an integer >= n = {self.n}, got m={self.m!r}")
        _check_choice("start", self.start, self.INITS)
        _check_choice("scheme", self.scheme, self.SCHEMES)
        pot = get_potential(self.potential)
        object.__setattr__(self, "potential", pot)
        _check_potential(pot, self.defaults())
        if self.start == "given":
            lv = self.initial_levels
            arr = np.asarray(lv if lv is not None else [], dtype=float)
            if lv is None or len(lv) != self.n or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"initial_levels must be {self.n} finite numbers >= 0 for start='given', got initial_levels={lv!r}")
            object.__setattr__(self, "initial_levels", tuple(float(v) for v in lv))
        if self.start == "stationary" and pot.quadratic is None:
            raise ValueError(f"start='stationary' needs a potential with a quadratic part, got potential={pot.name!r}")
        if not 0 < self.theta < 1:
            raise ValueError(f"theta must be in (0, 1), got theta={self.theta!r}")
        if self.max_substeps < 1:
            raise ValueError(f"max_substeps must be >= 1, got max_substeps={self.max_substeps!r}")
        if self.max_newton < 1:  # the solve always takes its first Newton iteration
            raise ValueError(f"max_newton must be >= 1, got max_newton={self.max_newton!r}")
        self.validate(self.defaults())

    def _validate_more(self, hp):
        beta = np.asarray(hp["beta"], dtype=float)
        ok = beta * (self.m - self.n + 1) >= 1 - 1e-12
        if not np.all(ok):
            raise ValueError(f"beta must satisfy beta*(m - n + 1) >= 1 for the Wishart process, got beta={_first_bad(beta, ok)}")
        _check_confining(self.potential, hp)
        if self.start == "stationary":
            name = self.potential.quadratic
            v = np.asarray(hp[name], dtype=float)
            if not np.all(v > 0):
                raise ValueError(f"{name} must be > 0 for start='stationary', got {name}={_first_bad(v, v > 0)}")
        _check_potential(self.potential, hp)

    def _terms(self, hp) -> LevelTerms:
        # in s = sqrt(x): noise D, pair weights βD/2 (with the mirror images), and the origin
        # bond of the Bessel law of a singular value near 0 (dimension − 1 = β(m − n + 1) − 1)
        D = jnp.asarray(hp["D"])
        kappa = 0.5 * hp["beta"] * D
        dof0 = jnp.maximum(hp["beta"] * (self.m - self.n + 1) - 1.0, 0.0)
        return LevelTerms(noise=D, rate=0.5 * self.potential.stiffness(hp), bond=kappa, far=kappa, origin_dof=dof0,
                          bond_dof=hp["beta"])

    def _nonlinear_force(self, s, hp):
        # dx = −U'(x) dt  ⇒  ds = −U'(s²)/(2s) dt
        f = self.potential.nonlinear_force(s * s, hp)
        return 0.5 * f * _safe_recip(s)

    def init(self, key, hp) -> LevelState:
        dtype = _dtype()
        if self.start == "zero":
            s = jnp.zeros(self.n, dtype)
        elif self.start == "given":
            s = jnp.sqrt(jnp.sort(jnp.asarray(self.initial_levels, dtype)))
        else:
            v = hp["D"] / self.potential.stiffness(hp)
            s = jnp.sqrt(sample_laguerre(key, self.m, self.n, hp["beta"], v))
        return LevelState(s, _count(), _count(), _count())

    def _euler(self, s, key, hp):
        # textbook Euler–Maruyama in x = s²
        h, D = hp["dt"], hp["D"]
        x = s * s
        mask = _offdiag_mask(self.n)
        num = x[:, None] + x[None, :]
        den = x[:, None] - x[None, :]
        rep = jnp.sum(jnp.where(mask, num / jnp.where(mask, den, 1.0), 0.0), axis=1)
        drift = hp["beta"] * D * (self.m + rep) + self.potential.force(x, hp)
        x = x + h * drift + 2.0 * jnp.sqrt(D * x * h) * jax.random.normal(key, x.shape, x.dtype)
        return jnp.sqrt(x)  # NaN once some x < 0: the failure this scheme is kept to show

    def observe(self, state: LevelState, hp) -> dict[str, Array]:
        x = state.y * state.y
        return {"levels": jnp.sort(x), "min_gap": jnp.min(jnp.diff(x)), "substeps": state.substeps}
