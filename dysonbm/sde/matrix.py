"""Matrix-space references of the level SDEs: the matrix SDE is an Ornstein–Uhlenbeck process, advanced by its
exact Gaussian transition and diagonalised at each observation."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import linalg
from dysonbm.sde.checks import _check_choice, _check_common, _check_rate, _first_bad
from dysonbm.sde.numerics import _dtype, _expm1_over
from dysonbm.sde.processes import Process

Array = jax.Array


def _quaternion_to_complex(a, b, c, d):
    """rows×cols quaternion matrix a + bi + cj + dk -> 2rows×2cols complex matrix whose 2×2
    blocks are [[a+bi, c+di], [−c+di, a−bi]] (a *-homomorphism: adjoints map to adjoints)."""
    rows, cols = a.shape
    top = jnp.stack([a + 1j * b, c + 1j * d], axis=-1)  # (rows, cols, 2)
    bot = jnp.stack([-c + 1j * d, a - 1j * b], axis=-1)
    blocks = jnp.stack([top, bot], axis=-2)  # (rows, cols, 2, 2): [.., block row, block col]
    return jnp.swapaxes(blocks, 1, 2).reshape(2 * rows, 2 * cols)


def _gaussian_matrix(key, rows: int, cols: int, beta: int):
    """Entries with β i.i.d. N(0, 1) real components: real (β=1), complex (β=2) or, for β=4,
    the 2rows×2cols complex representation of a quaternion matrix."""
    dtype = _dtype()
    parts = jax.random.normal(key, (beta, rows, cols), dtype)
    if beta == 1:
        return parts[0]
    if beta == 2:
        return parts[0] + 1j * parts[1]
    return _quaternion_to_complex(*parts)


def _paired(e, beta: int):
    """Eigenvalues of a quaternion matrix's complex form come in pairs: average each pair."""
    e = jnp.sort(e)
    return 0.5 * (e[0::2] + e[1::2]) if beta == 4 else e


@dataclasses.dataclass(frozen=True)
class MatrixDBM(Process):
    """Matrix reference for the DBM with U = γλ²/2 (β ∈ {1, 2, 4}; one replica).

        dH = −γ H dt + sqrt(D) dG,   dG: Gaussian Hermitian increment, diagonal N(0, 2dt) real,
                                     off-diagonal entries with β real components each N(0, dt),

    advanced by the exact transition H ← e^{−γh} H + sqrt(D(1 − e^{−2γh})/(2γ)) G. Its sorted
    eigenvalues follow `DysonBM` with the same (β, D, γ); stationary radius sqrt(2βnD/γ).
    state: H, (n, n) real / complex, or (2n, 2n) complex for β = 4.
    """

    n: int
    beta: int = 1
    start: str = "zero"
    initial_levels: tuple[float, ...] | None = None
    D: float = 1.0
    gamma: float = 1.0
    dt: float = 1e-3

    sweepable: ClassVar[tuple[str, ...]] = ("D", "gamma", "dt")
    INITS: ClassVar[tuple[str, ...]] = ("zero", "semicircle", "given")

    def __post_init__(self):
        _check_common(self, n_min=1)
        _check_choice("beta", self.beta, (1, 2, 4))
        _check_choice("start", self.start, self.INITS)
        if self.start == "given" and (self.initial_levels is None or len(self.initial_levels) != self.n):
            raise ValueError(f"initial_levels must be {self.n} numbers for start='given', got initial_levels={self.initial_levels!r}")
        self.validate(self.defaults())

    def _validate_more(self, hp):
        _check_rate(hp)
        if self.start == "semicircle":
            v = np.asarray(hp["gamma"], dtype=float)
            if not np.all(v > 0):
                raise ValueError(f"gamma must be > 0 for start='semicircle', got gamma={_first_bad(v, v > 0)}")

    def _noise(self, key):
        a = _gaussian_matrix(key, self.n, self.n, self.beta)
        return (a + jnp.conj(a.T)) / math.sqrt(2.0)

    def _zero(self):
        size = self.n * (2 if self.beta == 4 else 1)
        return jnp.zeros((size, size), _dtype() if self.beta == 1 else jnp.result_type(_dtype(), jnp.complex64))

    def init(self, key, hp):
        H = self._zero()
        if self.start == "given":
            lv = jnp.asarray(self.initial_levels, _dtype())
            lv = jnp.repeat(lv, 2) if self.beta == 4 else lv
            return H + jnp.diag(lv).astype(H.dtype)
        if self.start == "semicircle":
            return H + jnp.sqrt(hp["D"] / (2.0 * hp["gamma"])).astype(H.real.dtype) * self._noise(key)
        return H

    def step(self, H, key, hp):
        """Exact OU transition over hp["dt"]."""
        h, gam = hp["dt"], hp["gamma"]
        a = jnp.exp(-gam * h)
        var = hp["D"] * h * jnp.exp(-2.0 * gam * h) * _expm1_over(2.0 * gam * h)  # D(1 − e^{−2γh})/(2γ)
        return (a * H + jnp.sqrt(var) * self._noise(key)).astype(H.dtype)

    def observe(self, H, hp):
        return {"levels": _paired(linalg.eigvalsh(H), self.beta)}


@dataclasses.dataclass(frozen=True)
class MatrixWishart(Process):
    """Matrix reference for the Wishart process (β ∈ {1, 2, 4}; one replica).

        dW = −(γ/2) W dt + sqrt(D) dB   (W m×n; each real component of an entry),

    advanced exactly: W ← e^{−γh/2} W + sqrt(D(1 − e^{−γh})/γ) G. observe: sorted eigenvalues
    of WᵀW (x_i, n of them). γ = 0 is plain Brownian motion of the entries. From W = 0 at time
    t the spectrum is Marchenko–Pastur-like with σ² = m·D·t, c = n/m.
    """

    m: int
    n: int
    beta: int = 1
    start: str = "zero"
    D: float = 1.0
    gamma: float = 0.0
    dt: float = 1e-3

    sweepable: ClassVar[tuple[str, ...]] = ("D", "gamma", "dt")
    INITS: ClassVar[tuple[str, ...]] = ("zero", "stationary")

    def __post_init__(self):
        _check_common(self, n_min=1)
        if not isinstance(self.m, (int, np.integer)) or self.m < self.n:
            raise ValueError(f"m must be an integer >= n = {self.n}, got m={self.m!r}")
        _check_choice("beta", self.beta, (1, 2, 4))
        _check_choice("start", self.start, self.INITS)
        self.validate(self.defaults())

    def _validate_more(self, hp):
        _check_rate(hp)
        if self.start == "stationary":
            v = np.asarray(hp["gamma"], dtype=float)
            if not np.all(v > 0):
                raise ValueError(f"gamma must be > 0 for start='stationary', got gamma={_first_bad(v, v > 0)}")

    def init(self, key, hp):
        W = _gaussian_matrix(key, self.m, self.n, self.beta)
        if self.start == "zero":
            return jnp.zeros_like(W)
        return jnp.sqrt(hp["D"] / hp["gamma"]).astype(W.real.dtype) * W

    def step(self, W, key, hp):
        h, gam = hp["dt"], hp["gamma"]
        var = hp["D"] * h * jnp.exp(-gam * h) * _expm1_over(gam * h)  # D(1 − e^{−γh})/γ
        return (jnp.exp(-0.5 * gam * h) * W + jnp.sqrt(var) * _gaussian_matrix(key, self.m, self.n, self.beta)).astype(W.dtype)

    def observe(self, W, hp):
        x = linalg.eigvalsh(jnp.conj(W.T) @ W)
        return {"levels": _paired(x, self.beta)}
