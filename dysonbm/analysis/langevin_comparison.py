"""From an SGD ensemble to its Langevin prediction, and the comparison of the two (SCIENCE.md §1–§3.1).

One SGD step ``W ← W − α ∇L_B(W)`` is an Euler–Maruyama step of length ``dτ = α`` of
``dW = −∇L dτ + sqrt(α/|B|) Σ^{1/2} dB_τ`` (``Σ`` the per-sample gradient covariance). For the
teacher–student model (§3.1) the mean gradient is ``W − W_t`` (``E[xxᵀ] = I``), so the
symmetric part ``H = sym(W − W_t)`` is a matrix Ornstein–Uhlenbeck process of rate ``γ = 1``,
and with a GOE-shaped noise its eigenvalues follow the β = 1 Dyson Brownian motion in
``U = γλ²/2`` with

    D = α v / |B| = T · v,      T = α/|B|,

``v`` the per-sample variance of an off-diagonal entry of the symmetric part of the gradient
(`dysonbm.sde.diffusion_from_noise`). Here ``v`` is *measured*: per-sample gradients over
fresh samples at the SGD ensemble's own stationary weights, so it holds ``A²`` and the
multiplicative part ``sym((W − W_t)(xxᵀ − I))`` (of the order of the stationary variance of
``W − W_t``: a relative O(α/|B|) excess over ``A²``). The formula ``D = αA²/|B|`` is reported
beside it. For the ``fixed``/``shared`` data protocols the noise is still measured on fresh
samples, an approximation to resampling a finite dataset; ``online`` data is the clean test.

Why the off-diagonal variance: averaged over an ensemble whose law is invariant under
``W − W_t → O(W − W_t)Oᵀ`` (teacher ``d·I``), the noise covariance is a GOE part plus a pure
trace mode ``ηI`` that moves all levels together and never changes a spacing. The
off-diagonal variance is the GOE part; the diagonal half-variance is reported too
(`NoiseEstimate.diag_half`), their difference being the trace mode.

What the comparison should find. Entry by entry the SGD recursion is exactly
``H' = (1 − αγ)H + α ξ`` with a noise ξ uncorrelated with H, so an entry whose per-sample noise
variance (averaged over the stationary weights) is ``v_e`` has the stationary variance
``α v_e/(|B| γ (2 − αγ))``, against ``α v_e/(2|B|γ)`` in the Langevin equation: ⟨S²⟩ of the SGD
exceeds the Langevin's by exactly ``2/(2 − αγ)``, and ⟨S⟩ by ``sqrt(2/(2 − αγ))`` as long as the
shape of the spacing law is unchanged (``PointComparison.expected_ratio``; 1.026 at α = 0.1,
1.118 at α = 0.4; measured to agree within about 1% up to α = 1): the O(α) breakdown of the
continuous-time limit. Against the formula D the excess is
``sqrt(2/(2 − α(1 + (N+1)/|B|)))`` (SCIENCE.md's τ²), the measured noise absorbing the
``(N+1)/|B|`` part.

Teachers with distinct eigenvalues. ``H`` is still the same OU process, but the levels are
those of ``W_t + H``, whose drift ``−(λ_i − u_iᵀ W_t u_i)`` depends on the eigenvectors, not on
the levels alone: no one-level potential reproduces it. Then (``method="auto"``) the Langevin
side is the matrix-space reference: `dysonbm.sde.MatrixDBM` for ``H`` (exact OU transitions)
observed through the eigenvalues of ``W_t + H`` (`ShiftedMatrixDBM`); ``method="dbm"`` refuses
such a teacher with a ValueError. ⟨S⟩ is then dominated by the teacher's gaps; the width is
the informative statistic, and ``expected_ratio`` refers to an isotropic teacher.

Statistics, per grid point, over the stationary window of the SGD run (diverged replicas
dropped) and over the Langevin snapshots after a burn-in:

* ``⟨S⟩``: mean nearest-neighbour spacing (for N = 2 the pair's ``|λ₂ − λ₁|``), error from the
  spread of per-replica means (snapshots of one replica are correlated, replicas are not);
* width: rms deviation of the levels from the teacher's, same error treatment;
* KS distance of the pooled levels ``λ − d`` (and of the spacings), with p-values for
  ``n_eff = (snapshots)/g``, ``g = (1 + ρ)/(1 − ρ)`` from the lag-one autocorrelation between
  snapshots (`dysonbm.analysis.scaling.effective_n`); the levels of one snapshot count once.

Only the teacher–student model is supported here; the Gaussian RBM (levels of σ_h²WᵀW in a
known potential, persistent-chain noise) is `dysonbm.analysis.rbm_langevin`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm import data, linalg, sde
from dysonbm.analysis import scaling

__all__ = [
    "NoiseEstimate", "SpectrumStats", "PointComparison", "ShiftedMatrixDBM",
    "per_sample_gradients", "gradient_noise", "drift_rate", "teacher_matrix", "point_noise", "point_noises",
    "resolve_method", "langevin_levels", "spectrum_stats", "compare_levels", "compare_point", "compare", "table",
]


# ----------------------------------------------------------------------------- noise
@dataclass(frozen=True)
class NoiseEstimate:
    """Per-sample covariance of the symmetric part of the gradient, projected to the GOE shape.

    offdiag: variance of an off-diagonal entry (mean over i < j and over the weights): the
        ``noise_var`` of `dysonbm.sde.diffusion_from_noise`;
    diag_half: half the variance of a diagonal entry (equal to ``offdiag`` for GOE noise).
    Errors are standard errors from the spread over independent weight groups (replicas), or
    over the samples when there is a single weight matrix.
    """

    offdiag: float
    offdiag_err: float
    diag_half: float
    diag_half_err: float
    n_weights: int
    n_samples: int  # per weight matrix

    @property
    def noise_var(self) -> float:
        return self.offdiag


def _hp_arrays(hp: dict) -> dict:
    return {k: jnp.asarray(v, jnp.int32 if k == "batch_size" else jnp.result_type(float)) for k, v in hp.items()}


def _check_model(model) -> None:
    from dysonbm.models.teacher_student import TeacherStudent

    if not isinstance(model, TeacherStudent):
        name = getattr(model, "name", type(model).__name__)
        raise ValueError(f"model.name = {name!r}: the SGD→Langevin comparison supports teacher_student only")


def per_sample_gradients(model, problem, params, hp: dict, key, n_samples: int) -> jax.Array:
    """Gradients ``(n_samples, N, N)`` of single fresh samples at ``params`` (batch size 1)."""
    return _per_sample(model, problem, jnp.asarray(params), _hp_arrays(hp), key, int(n_samples))


@functools.partial(jax.jit, static_argnames=("model", "n_samples"))
def _per_sample(model, problem, params, hp, key, n_samples):
    samples = data.draw_samples(model, key, problem, n_samples)
    one = jnp.ones(1, params.dtype)

    def grad(sample):
        batch = jax.tree_util.tree_map(lambda a: a[None], sample)
        return model.loss_and_grad(params, (), batch, one, key, problem, hp)[1]

    return jax.vmap(grad)(samples)


@functools.partial(jax.jit, static_argnames=("model", "n_samples"))
def _noise_moments(model, problem, weights, hp, keys, n_samples):
    """Per weight matrix, per sample: the unbiased squared deviations of sym(g), averaged over
    the off-diagonal entries and (halved) over the diagonal. -> two (K, n_samples) arrays."""

    def one(w, key):
        g = _per_sample(model, problem, w, hp, key, n_samples)
        s = 0.5 * (g + jnp.swapaxes(g, -1, -2))
        q = (s - s.mean(axis=0)) ** 2 * (n_samples / (n_samples - 1.0))
        n = w.shape[-1]
        iu = jnp.triu_indices(n, 1)
        off = q[:, iu[0], iu[1]].mean(axis=-1)
        diag = 0.5 * jnp.diagonal(q, axis1=-2, axis2=-1).mean(axis=-1)
        return off, diag

    return jax.vmap(one)(weights, keys)


def gradient_noise(model, problem, weights, hp: dict, key, n_samples: int = 2048) -> NoiseEstimate:
    """Measure the per-sample gradient-noise covariance at the given weights.

    weights: ``(N, N)`` one matrix, ``(K, N, N)`` independent matrices, or ``(R, T, N, N)``
    (R independent replicas, T snapshots of each: the error is taken over replicas).
    hp: the point's hyperparameters (``lr``, ``batch_size``, ``init_std`` and the model's
    sweepable settings such as ``noise``).
    """
    _check_model(model)
    w = np.asarray(weights, dtype=float)
    if w.ndim < 2 or w.shape[-1] != w.shape[-2] or w.shape[-1] < 2:
        raise ValueError(f"weights must be square N×N matrices (N ≥ 2), got shape {w.shape}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got n_samples={n_samples}")
    n = w.shape[-1]
    groups = w.reshape((1, 1, n, n)) if w.ndim == 2 else (w[:, None] if w.ndim == 3 else w)
    if groups.ndim != 4:
        raise ValueError(f"weights must have 2, 3 or 4 axes, got shape {w.shape}")
    r, t = groups.shape[:2]
    flat = jnp.asarray(groups.reshape(r * t, n, n), jnp.result_type(float))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(r * t))
    off, diag = (np.asarray(a, float) for a in _noise_moments(model, problem, flat, _hp_arrays(hp), keys, int(n_samples)))

    def estimate(q):
        per_w = q.mean(axis=1).reshape(r, t)
        if r > 1:
            per_rep = per_w.mean(axis=1)
            return float(per_rep.mean()), float(per_rep.std(ddof=1) / math.sqrt(r))
        if t > 1:
            return float(per_w.mean()), float(per_w.std(ddof=1) / math.sqrt(t))
        return float(q.mean()), float(q.std(ddof=1) / math.sqrt(q.size))

    o, oe = estimate(off)
    d, de = estimate(diag)
    return NoiseEstimate(o, oe, d, de, r * t, int(n_samples))


def drift_rate(model) -> float:
    """Rate γ of the mean-gradient drift of sym(W − W_t): the curvature of the expected loss.

    Teacher–student: ∇L = (W − W_t) E[xxᵀ] with x ~ N(0, I), so γ = 1 exactly.
    """
    _check_model(model)
    return 1.0


# ----------------------------------------------------------------------------- results
def _model_and_problem(results, point: int = 0):
    """The model and the problem the replicas of ``point`` trained on (stored with
    the results). The noise is measured with one problem per point: a teacher per replica is
    refused."""
    model = results.model()
    _check_model(model)
    if results.ensemble.get("problem") == "replica":
        raise ValueError("the SGD → Langevin comparison needs one teacher per grid point: "
                         "run with [ensemble] problem = \"point\" or \"run\"")
    problem = {k: jnp.asarray(v) for k, v in results.problem(point).items()}
    return model, problem


def teacher_matrix(results, point: int = 0) -> np.ndarray:
    """The teacher W_t of a teacher–student results directory at ``point`` (as stored)."""
    _, problem = _model_and_problem(results, point)
    return np.asarray(problem["teacher"], float)


def _stationary_weights(results, point: int, start: int, replicas: int, snapshots: int) -> np.ndarray:
    """``(R', T', N, N)`` weights of the stationary window: up to ``replicas`` non-diverged
    replicas and ``snapshots`` evenly spaced snapshots of each."""
    if "weights" not in results:
        raise ValueError("results have no `weights`: run with [record] weights = true (the gradient noise is "
                         "measured at the SGD ensemble's stationary weights)")
    ok = ~np.asarray(results.diverged[point], bool)
    w = np.asarray(results["weights"][point])[ok][:, start:]
    w = w[np.all(np.isfinite(w), axis=(1, 2, 3))]
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"point {point}: no finite stationary weights (all replicas diverged or start too late)")
    pick_r = np.unique(np.linspace(0, w.shape[0] - 1, min(replicas, w.shape[0])).round().astype(int))
    pick_t = np.unique(np.linspace(0, w.shape[1] - 1, min(snapshots, w.shape[1])).round().astype(int))
    return w[pick_r][:, pick_t]


def point_noise(results, point: int, *, start: int | None = None, key=None, replicas: int = 64,
                snapshots: int = 4, n_samples: int = 2048) -> tuple[float, NoiseEstimate, float, float]:
    """``(T, noise, D, D_err)`` of one grid point: the measured noise at its stationary weights
    and ``D = lr·v/|B|`` (`dysonbm.sde.diffusion_from_noise`)."""
    model, problem = _model_and_problem(results, point)
    start = scaling.stationary_start(results) if start is None else start
    hp = dict(results.points[point])
    w = _stationary_weights(results, point, start, replicas, snapshots)
    key = jax.random.fold_in(jax.random.key(0) if key is None else key, point)
    noise = gradient_noise(model, problem, w, hp, key, n_samples)
    lr, bs = hp["lr"], hp["batch_size"]
    D = sde.diffusion_from_noise(lr, bs, noise.offdiag)
    return sde.temperature(lr, bs), noise, D, sde.diffusion_from_noise(lr, bs, noise.offdiag_err)


def point_noises(results, **kw) -> list[tuple[float, NoiseEstimate, float, float]]:
    """`point_noise` of every grid point: ``[(T, noise, D, D_err), …]``."""
    return [point_noise(results, p, **kw) for p in range(len(results.points))]


# ----------------------------------------------------------------------------- Langevin
@dataclasses.dataclass(frozen=True)
class ShiftedMatrixDBM(sde.MatrixDBM):
    """`dysonbm.sde.MatrixDBM` (β = 1) observed through the eigenvalues of ``C + H``: the
    levels of a fixed symmetric matrix C (a teacher with distinct eigenvalues) plus an OU matrix.

    ``shift`` is C as a tuple of rows (hashable: the process is a static jit argument).
    """

    shift: tuple = ()

    def observe(self, H, hp):
        c = jnp.asarray(self.shift, H.dtype)
        return {"levels": linalg.eigvalsh(c + H)}


def _is_isotropic(t: np.ndarray) -> bool:
    # a teacher O diag(d, d) Oᵀ drawn in float32 equals d·I only to rounding
    d = np.linalg.eigvalsh(t)
    return bool(d[-1] - d[0] <= 1e-5 * max(1.0, float(np.abs(d).max())))


def resolve_method(teacher, method: str = "auto") -> str:
    """"dbm" or "matrix" for a symmetric teacher matrix (see `langevin_levels`)."""
    if method not in ("auto", "dbm", "matrix"):
        raise ValueError(f"method must be one of ['auto', 'dbm', 'matrix'], got method={method!r}")
    t = np.asarray(teacher, float)
    isotropic = _is_isotropic(t)
    if method == "auto":
        return "dbm" if isotropic else "matrix"
    if method == "dbm" and not isotropic:
        d = np.linalg.eigvalsh(t)
        raise ValueError(f"method='dbm' needs a teacher d·I; teacher eigenvalues {np.round(d, 6).tolist()} are distinct: "
                         "their level drift depends on the eigenvectors, use method='matrix'")
    return method


def langevin_levels(D: float, teacher, *, gamma: float = 1.0, key=None, replicas: int = 2000,
                    snapshots: int = 40, interval: float = 1.0, burn_in: float = 5.0,
                    method: str = "auto", dt: float | None = None) -> np.ndarray:
    """Stationary levels ``(replicas, snapshots, N)`` of the Langevin prediction.

    teacher: the ``(N, N)`` symmetric teacher W_t (or its N eigenvalues when all are equal).
    method: "dbm" — the β = 1 `DysonBM` in U = γλ²/2 around d (teacher d·I only), started from
    its exact stationary draw; "matrix" — `ShiftedMatrixDBM` (any symmetric teacher); "auto"
    picks "dbm" when the teacher is a multiple of the identity. ``interval`` and ``burn_in`` are
    in units of 1/γ; snapshots start after the burn-in. dt defaults to exact-size steps for
    the exact cases (N = 2 DBM, matrix OU) and to `dysonbm.sde.recommended_dt` otherwise.
    """
    if not (D > 0 and math.isfinite(D)):
        raise ValueError(f"D must be a positive finite number, got D={D!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got gamma={gamma!r}")
    for name, v in (("replicas", replicas), ("snapshots", snapshots)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {name}={v!r}")
    if not (interval > 0 and burn_in >= 0):
        raise ValueError(f"interval must be > 0 and burn_in >= 0, got interval={interval!r}, burn_in={burn_in!r}")
    t = np.asarray(teacher, float)
    if t.ndim == 1:
        if not np.allclose(t, t[0]):
            raise ValueError("teacher given by distinct eigenvalues: pass the teacher matrix (its eigenvectors matter)")
        t = t[0] * np.eye(t.size)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or not np.allclose(t, t.T):
        raise ValueError(f"teacher must be a symmetric N×N matrix, got shape {t.shape}")
    t = 0.5 * (t + t.T)
    n = t.shape[0]
    d = np.linalg.eigvalsh(t)
    method = resolve_method(t, method)
    key = jax.random.key(0) if key is None else key
    span = interval / gamma
    if method == "dbm":
        exact = n == 2  # N = 2 in U = γλ²/2 is integrated exactly for any dt (dysonbm.sde)
        step = dt or (span / 4 if exact else sde.recommended_dt(n, D, gamma, 1.0))
        proc = sde.DysonBM(n=n, potential="quadratic", start="semicircle")
    else:
        step = dt or span / 4  # exact OU transitions: dt only sets the observation grid
        proc = ShiftedMatrixDBM(n=n, beta=1, start="semicircle", shift=tuple(map(tuple, t.tolist())))
    save_every = max(1, round(span / step))
    step = span / save_every
    n_burn = math.ceil(burn_in / span)
    hp = {"D": D, "gamma": gamma, "dt": step} | ({"beta": 1.0} if method == "dbm" else {})
    obs = sde.simulate(proc, hp, key, int(replicas), (n_burn + int(snapshots)) * save_every, save_every)
    lv = np.asarray(obs["levels"], float)[:, n_burn:]
    return lv + d.mean() if method == "dbm" else lv


# ----------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class SpectrumStats:
    """Stationary spectrum statistics of one ensemble (errors over replicas)."""

    mean_s: float  # mean nearest-neighbour spacing
    mean_s_err: float
    rms_s: float  # sqrt⟨S²⟩ (fixed by second moments alone)
    width: float  # rms deviation of the levels from the teacher's
    width_err: float
    n_replicas: int
    n_snapshots: int  # per replica
    rho: float  # lag-one autocorrelation between snapshots (levels or spacings, the larger)
    n_eff: float  # independent snapshots: R·T/g


def _per_replica_mean(x: np.ndarray) -> tuple[float, float]:
    m = x.mean(axis=1)
    return float(m.mean()), (float(m.std(ddof=1) / math.sqrt(m.size)) if m.size > 1 else float("nan"))


def spectrum_stats(levels: np.ndarray, centres) -> SpectrumStats:
    """Statistics of ``levels`` ``(R, T, N)`` (sorted) about the teacher's ``centres`` ``(N,)``."""
    lv = np.asarray(levels, float)
    if lv.ndim != 3 or lv.shape[-1] < 2 or lv.shape[0] < 1 or lv.shape[1] < 1:
        raise ValueError(f"levels must have shape (replicas, snapshots, N >= 2), got {lv.shape}")
    r, t, _ = lv.shape
    s = np.diff(lv, axis=-1).mean(axis=-1)  # (R, T)
    dev = lv - np.asarray(centres, float)
    msq = np.mean(dev * dev, axis=-1)
    mean_s, mean_s_err = _per_replica_mean(s)
    m2, m2_err = _per_replica_mean(msq)
    width = math.sqrt(m2)
    rho = max(scaling.lag_one_autocorr(s), max(scaling.lag_one_autocorr(dev[..., i]) for i in range(lv.shape[-1])))
    return SpectrumStats(
        mean_s=mean_s, mean_s_err=mean_s_err, rms_s=float(math.sqrt(np.mean(s * s))),
        width=width, width_err=m2_err / (2.0 * width), n_replicas=r, n_snapshots=t, rho=rho,
        n_eff=scaling.effective_n(r * t, rho, t),
    )


@dataclass
class PointComparison:
    """SGD replicas versus their Langevin prediction at one grid point.

    ratio = ⟨S⟩_SGD/⟨S⟩_Langevin (its error includes the D error: ⟨S⟩_L ∝ sqrt(D));
    ratio_formula: the same against the Langevin at D = lr·A²/|B| (exact rescaling: the
    stationary levels of U = γλ²/2 scale as sqrt(D/γ));
    expected_ratio = sqrt(2/(2 − lr·γ)): the exact discrete-time excess of the SGD variances;
    expected_ratio_formula = sqrt(2/(2 − lr(1 + (N+1)/|B|))) (SCIENCE.md τ², small lr).
    """

    point: int
    hp: dict
    temperature: float
    gamma: float
    noise: NoiseEstimate
    D: float
    D_err: float
    D_formula: float
    method: str  # "dbm" or "matrix"
    protocol: str  # data protocol of the SGD run
    n: int
    sgd: SpectrumStats
    langevin: SpectrumStats
    ks_levels: tuple[float, float]  # (D, p) of the pooled levels λ − d
    ks_spacings: tuple[float, float]  # (D, p) of the spacings
    sgd_dev: np.ndarray = field(repr=False, default=None)  # pooled λ − d (for figures)
    langevin_dev: np.ndarray = field(repr=False, default=None)

    @property
    def ratio(self) -> float:
        return self.sgd.mean_s / self.langevin.mean_s

    def _ratio_err(self, ratio, sgd, sgd_err, lang, lang_err) -> float:
        # a Langevin statistic scales as sqrt(D): D's error enters at half its relative size
        return ratio * math.sqrt((sgd_err / sgd) ** 2 + (lang_err / lang) ** 2 + (0.5 * self.D_err / self.D) ** 2)

    @property
    def ratio_err(self) -> float:
        return self._ratio_err(self.ratio, self.sgd.mean_s, self.sgd.mean_s_err,
                               self.langevin.mean_s, self.langevin.mean_s_err)

    @property
    def width_ratio(self) -> float:
        return self.sgd.width / self.langevin.width

    @property
    def width_ratio_err(self) -> float:
        return self._ratio_err(self.width_ratio, self.sgd.width, self.sgd.width_err,
                               self.langevin.width, self.langevin.width_err)

    @property
    def rms_ratio(self) -> float:
        """sqrt⟨S²⟩_SGD / sqrt⟨S²⟩_Langevin (second moments: `expected_ratio` holds exactly)."""
        return self.sgd.rms_s / self.langevin.rms_s

    @property
    def expected_width_ratio(self) -> float:
        """`expected_ratio` corrected for the trace mode of the noise (diagonal half-variance
        v_d ≠ off-diagonal v_o): the SGD's diagonal variances follow v_d, the Langevin's v_o."""
        vo, vd, n = self.noise.offdiag, self.noise.diag_half, self.n
        return self.expected_ratio * math.sqrt((2.0 * vd + (n - 1.0) * vo) / ((n + 1.0) * vo))

    @property
    def ratio_formula(self) -> float:
        return self.ratio * math.sqrt(self.D / self.D_formula) if self.D_formula > 0 else float("nan")

    @property
    def expected_ratio(self) -> float:
        return math.sqrt(2.0 / (2.0 - self.hp["lr"] * self.gamma))

    @property
    def expected_ratio_formula(self) -> float:
        lr, bs = self.hp["lr"], self.hp["batch_size"]
        return math.sqrt(2.0 / (2.0 - lr * (1.0 + (self.n + 1.0) / bs)))

    def within(self, tol: float = 0.1) -> bool:
        """⟨S⟩ of the Langevin prediction within ``tol`` (relative) of the SGD replicas'."""
        return abs(self.ratio - 1.0) < tol


def compare_levels(sgd_levels, langevin_levels_, centres):
    """(SGD stats, Langevin stats, KS of pooled levels, KS of spacings, pooled deviations)."""
    a = spectrum_stats(sgd_levels, centres)
    b = spectrum_stats(langevin_levels_, centres)
    da = (np.asarray(sgd_levels) - centres).ravel()
    db = (np.asarray(langevin_levels_) - centres).ravel()
    ks_l = scaling.ks_2samp_neff(da, db, a.n_eff, b.n_eff)
    sa = np.diff(np.asarray(sgd_levels), axis=-1).ravel()
    sb = np.diff(np.asarray(langevin_levels_), axis=-1).ravel()
    ks_s = scaling.ks_2samp_neff(sa, sb, a.n_eff, b.n_eff)
    return a, b, ks_l, ks_s, da, db


def compare_point(results, point: int, *, start: int | None = None, seed: int = 0, noise_replicas: int = 64,
                  noise_snapshots: int = 4, noise_samples: int = 2048, replicas: int = 2000, snapshots: int = 40,
                  interval: float = 1.0, burn_in: float = 5.0, method: str = "auto") -> PointComparison:
    """Measure D at one grid point, integrate its Langevin equation, compare (module docstring)."""
    model, problem = _model_and_problem(results, point)
    if "eigs" not in results:
        raise ValueError("results have no `eigs` spectrum: run with [record] spectra = true")
    if not 0 <= point < len(results.points):
        raise ValueError(f"point = {point}: the results have {len(results.points)} grid points")
    start = scaling.stationary_start(results) if start is None else start
    if not 0 <= start < len(results.steps):
        raise ValueError(f"start = {start}: the results have {len(results.steps)} snapshots")
    root = jax.random.key(seed)
    T, noise, D, D_err = point_noise(results, point, start=start, key=jax.random.fold_in(root, 0),
                                     replicas=noise_replicas, snapshots=noise_snapshots, n_samples=noise_samples)
    hp = dict(results.points[point])
    gamma = drift_rate(model)
    teacher = np.asarray(problem["teacher"], float)
    ok = ~np.asarray(results.diverged[point], bool)
    sgd = np.asarray(results["eigs"][point], float)[ok][:, start:]
    sgd = sgd[np.all(np.isfinite(sgd), axis=(1, 2))]
    if sgd.shape[0] < 2:
        raise ValueError(f"point {point}: fewer than two finite, non-diverged replicas")
    lk = jax.random.fold_in(jax.random.fold_in(root, 1), point)
    lang = langevin_levels(D, teacher, gamma=gamma, key=lk, replicas=replicas, snapshots=snapshots,
                           interval=interval, burn_in=burn_in, method=method)
    chosen = resolve_method(teacher, method)
    centres = np.sort(np.linalg.eigvalsh(teacher))
    a, b, ks_l, ks_s, da, db = compare_levels(sgd, lang, centres)
    noise_amp = float(hp.get("noise", getattr(model, "noise", float("nan"))))
    return PointComparison(
        point=point, hp=hp, temperature=T, gamma=gamma, noise=noise, D=D, D_err=D_err,
        D_formula=sde.diffusion_from_noise(hp["lr"], hp["batch_size"], noise_amp**2), method=chosen,
        protocol=results.config["data"]["protocol"], n=teacher.shape[0], sgd=a, langevin=b, ks_levels=ks_l, ks_spacings=ks_s,
        sgd_dev=da, langevin_dev=db,
    )


def compare(results, points=None, **kw) -> list[PointComparison]:
    """`compare_point` for every grid point (or the listed ones); keywords as there."""
    points = range(len(results.points)) if points is None else points
    return [compare_point(results, p, **kw) for p in points]


def table(comparisons: list[PointComparison], tol: float = 0.1) -> str:
    """A markdown table of the comparisons."""
    head = ("| point | α | \\|B\\| | T = α/\\|B\\| | D measured | D formula αA²/\\|B\\| | ⟨S⟩ SGD | ⟨S⟩ Langevin | "
            "ratio SGD/Langevin | expected sqrt(2/(2−αγ)) | ratio at D formula | expected (formula) | "
            f"width ratio | KS D levels (p) | within {tol:.0%}? |")
    rows = [head, "|" + "---|" * 15]
    for c in comparisons:
        rows.append(
            f"| {c.point} | {c.hp['lr']:g} | {c.hp['batch_size']} | {c.temperature:.4g} | "
            f"{c.D:.4g} ± {c.D_err:.1g} | {c.D_formula:.4g} | {c.sgd.mean_s:.4g} ± {c.sgd.mean_s_err:.1g} | "
            f"{c.langevin.mean_s:.4g} ± {c.langevin.mean_s_err:.1g} | {c.ratio:.3f} ± {c.ratio_err:.3f} | "
            f"{c.expected_ratio:.3f} | {c.ratio_formula:.3f} | {c.expected_ratio_formula:.3f} | "
            f"{c.width_ratio:.3f} ± {c.width_ratio_err:.3f} | {c.ks_levels[0]:.3f} ({c.ks_levels[1]:.2g}) | "
            f"{'yes' if c.within(tol) else '**no**'} |")
    return "\n".join(rows) + "\n"
