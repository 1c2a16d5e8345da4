"""Analysis of `linear_net` runs (SCIENCE.md §3.4) against the theory of
`dysonbm.models.linear_net`: the per-layer level species, their predicted pair spacing, the
generalised semicircle, and the coupled level SDE with measured coefficients.

Level species (observables of the model): ``gram1`` (W₁W₁ᵀ), ``gram2`` (W₂ᵀW₂) and
``product_sv2`` (squared singular values of W₂W₁). The predictions assume the balanced start
D₀ = 0 (``model.start = "teacher"``), where both layers' levels are the
product's singular values σ_k and the product's levels σ_k².
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

from dysonbm import sde
from dysonbm.analysis import rmt
from dysonbm.analysis.levels import Spectrum, degenerate_groups, stationary_start
from dysonbm.models.linear_net import LinearNet, balance_step_var, layer_tau2, stationary_covariance
from dysonbm.models.teacher_student import gaussian_mean_norm

SPECIES = ("gram1", "gram2", "product_sv2")
SPECIES_LABEL = {"gram1": "W₁W₁ᵀ", "gram2": "W₂ᵀW₂", "product_sv2": "σ²(W₂W₁)"}


def model_of(results) -> LinearNet:
    """The run's `LinearNet` (`Results.model`); another model's results are refused."""
    model = results.model()
    if not isinstance(model, LinearNet):
        raise ValueError(f"model.name = {results.config['model']['name']!r}: this analysis is for linear_net")
    return model


def teacher_singular_values(results) -> np.ndarray:
    """Singular values of the target, descending (from the stored problem; one per run)."""
    teacher = np.asarray(results["problem_teacher"], float)
    while teacher.ndim > 2:  # per point / per replica: the first (the svd teacher's values are shared)
        teacher = teacher[0]
    return np.linalg.svd(teacher, compute_uv=False)


def level_spectrum(results, observable: str) -> Spectrum:
    """`dysonbm.analysis.levels.Spectrum` of one level species, targets ascending like the recorded levels."""
    if observable not in SPECIES:
        raise ValueError(f"observable = {observable!r}: one of {', '.join(SPECIES)}")
    model = model_of(results)
    s = teacher_singular_values(results)
    if observable == "product_sv2":
        target = np.sort(s[: min(model.n_in, model.n_out)] ** 2)
    else:
        target = np.sort(np.concatenate([s, np.zeros(max(model.n_hidden - s.size, 0))])[: model.n_hidden])
    target = np.round(target, 5)  # the stored teacher carries float32 rounding
    levels = results[observable]
    targets = np.broadcast_to(target, (len(results.points), target.size)).copy()
    pairs, singles = degenerate_groups(target, 1e-4)
    labels = {i: f"{SPECIES_LABEL[observable]}, target {target[p[0]]:g}" for i, p in enumerate(pairs)}
    labels.update({-1 - j: f"{SPECIES_LABEL[observable]}, target {target[j]:g}" for j in singles})
    return Spectrum(observable, levels, targets, pairs, singles, labels)


def pair_mean_spacing(lr, batch_size, noise, singular_values, pair, balance_var: float = 0.0) -> float:
    """Per-layer ⟨S⟩ of the degenerate level pair ``pair`` (indices into ``singular_values``,
    descending) at the balanced point in the singular bases, from the exact linearised
    covariance of E: S = sqrt(u² + v²), u = Ẽ_ii − Ẽ_jj, v = Ẽ_ij + Ẽ_ji, (u, v) Gaussian.
    ``balance_var``: the variance the random walk of D adds to u and to v (per layer the level
    matrix is sym Ẽ ± D/2; `balance_walk_var`)."""
    s = np.asarray(singular_values, float)
    root = np.diag(np.sqrt(s))
    cov = stationary_covariance(lr, batch_size, noise, root, root)
    n, (i, j) = s.size, pair
    lin = np.zeros((2, n * n))
    lin[0, i * n + i], lin[0, j * n + j] = 1.0, -1.0
    lin[1, i * n + j], lin[1, j * n + i] = 1.0, 1.0
    return gaussian_mean_norm(lin @ cov @ lin.T + balance_var * np.eye(2))


def balance_walk_var(lr, batch_size, noise, s0, n, mean_step) -> float:
    """Variance that D's random walk adds, after ``mean_step`` steps from a balanced start, to
    u = H_ii − H_jj and to v = 2H_ij of the per-layer level matrix H = sym Ẽ ± D/2: both are
    2N·t·α⁴s₀²A⁴/|B|² (Var(D_ii − D_jj) = 8N, Var(D_ij) = 2N in units of t·α⁴s₀²A⁴/|B|²)."""
    off, _ = balance_step_var(lr, batch_size, noise, s0, n)
    return off * mean_step


def predicted_pair_scale(results, spec: Spectrum, point: int) -> float:
    """Predicted ⟨S⟩ of the first degenerate pair of ``spec`` at ``point`` (NaN where no
    stationary state or no prediction: the dense solve needs a square net with N ≤ 6)."""
    model = model_of(results)
    hp = results.points[point]
    s = teacher_singular_values(results)
    if model.n_in != model.n_out or model.n_hidden != model.n_in or not spec.pairs:
        return float("nan")
    i, j = spec.pairs[0]
    n = model.n_in
    # ascending level index -> descending singular index
    pair = (n - 1 - j, n - 1 - i)
    noise = hp.get("noise", model.noise)
    walk = 0.0
    if spec.name != "product_sv2":  # D leaves the product untouched
        window = results.steps[stationary_start(results):]
        walk = balance_walk_var(hp["lr"], hp["batch_size"], noise, s[pair[0]], n, float(np.mean(window)))
    try:
        layer = pair_mean_spacing(hp["lr"], hp["batch_size"], noise, s, pair, walk)
    except ValueError:
        return float("nan")
    return 2.0 * s[pair[0]] * layer if spec.name == "product_sv2" else layer


# ---------------------------------------------------------------------------------------
# the generalised semicircle (N_h large)


def predicted_centre(lr, batch_size, noise, s0, n, species) -> float:
    """Mean level of a species (square net, degenerate target s₀, balanced start), to second
    order: E's mean is μ·1 with μ = α(A²/|B| + v)/2 − (N + 1)v/(2s₀) (the α²GMᵀG term and the
    correlation of P − s₀ and Q − s₀, both ≈ sym Ẽ, with E), and the singular values gain
    (N − 1)v/(4s₀) from the antisymmetric part of Ẽ: E[σ] = s₀ + μ + (N − 1)v/(4s₀),
    E[σ²] = s₀² + 2s₀μ + Nv."""
    v = 2.0 * layer_tau2(lr, batch_size, noise, s0, n)
    mu = lr * (noise**2 / batch_size + v) / 2.0 - (n + 1) * v / (2.0 * s0)
    if species == "product_sv2":
        return s0 * s0 + 2.0 * s0 * mu + n * v
    return s0 + mu + (n - 1) * v / (4.0 * s0)


@dataclass
class SemicircleCheck:
    species: str
    n: int
    tau2: float  # predicted off-diagonal variance of the level matrix (per layer)
    scale: float  # c: 1 per layer (balanced), 2 s₀ for σ²
    radius: float  # predicted R = c · 2 sqrt(N τ²)
    centre: float  # measured centre (mean level)
    centre_pred: float
    second_moment: float  # ⟨(λ − centre)²⟩ over levels, pooled
    second_moment_err: float
    second_moment_pred: float  # c² (N + 1) τ² (finite-N GOE) + D's walk to leading order (layers)
    second_moment_measured_d: float  # c² (N + 1) τ² + the recorded ⟨tr D²⟩/(4N) (layers)
    ks_semicircle: tuple  # (D, p) against the semicircle of the predicted radius
    ks_goe: tuple  # (D, p) two-sample against exact finite-N GOE levels with the predicted τ²
    mean_r: tuple  # ⟨r⟩ and error (GOE 0.5307)
    levels: np.ndarray  # pooled centred levels (for figures)


def semicircle_check(results, point: int, species: str, start: int | None = None, seed: int = 0) -> SemicircleCheck:
    """Pooled stationary levels of ``species`` at ``point`` against the predicted semicircle."""

    model = model_of(results)
    hp = results.points[point]
    n = model.n_hidden
    s = teacher_singular_values(results)
    s0 = float(s[0])
    start = stationary_start(results) if start is None else start
    ok = ~np.asarray(results.diverged[point], bool)
    lv = np.asarray(results[species][point][ok][:, start:], float)  # (R, T, N)
    tau2 = layer_tau2(hp["lr"], hp["batch_size"], hp.get("noise", model.noise), s0, n)
    c = 2.0 * s0 if species == "product_sv2" else 1.0
    centre_pred = predicted_centre(hp["lr"], hp["batch_size"], hp.get("noise", model.noise), s0, n, species)
    centre = float(lv.mean())
    y = lv - centre
    per_rep = np.mean(y * y, axis=(1, 2))
    radius = c * 2.0 * math.sqrt(n * tau2)
    flat = y.ravel()
    ks_sc = rmt.ks_test(flat, rmt.semicircle_cdf, radius, 0.0)
    draws = max(2000 // n, 64) * 4
    goe = np.asarray(jax.vmap(lambda k: sde.sample_hermite(k, n, 1.0, c * math.sqrt(2.0 * tau2)))(
        jax.random.split(jax.random.key(seed), draws)))
    ks_goe = rmt.ks_2samp(flat, (goe - goe.mean()).ravel())
    mr = rmt.mean_ratio(lv.reshape(-1, n))
    moment = moment_measured_d = c * c * (n + 1) * tau2
    if species != "product_sv2":  # the layer's level matrix is H ± D/2: add (1/N) E tr(D²)/4
        unit = balance_step_var(hp["lr"], hp["batch_size"], hp.get("noise", model.noise), s0, n)[0] / (2 * n)
        moment += float(np.mean(results.steps[start:])) * unit * (n - 1) * (n + 2) / 2  # leading order
        balance = np.asarray(results["balance"][point][ok][:, start:], float)
        moment_measured_d += float(np.mean(balance**2)) / 4  # D as recorded
    return SemicircleCheck(species, n, tau2, c, radius, centre, centre_pred, float(per_rep.mean()),
                           float(per_rep.std(ddof=1) / math.sqrt(per_rep.size)), moment, moment_measured_d,
                           ks_sc, ks_goe, (mr.value, mr.stderr), flat)


# ---------------------------------------------------------------------------------------
# the coupled level SDE with measured coefficients


@dataclass
class LevelSDECheck:
    species: str
    n: int
    dtau: float  # SGD time between snapshots, α·every
    gamma: float  # measured restoring rate (per unit τ), from the centre of mass
    gamma_err: float
    D: float  # measured diffusion (per unit τ), from the innovations of the centre of mass
    D_err: float
    gamma_pred: float  # 2 s₀ (per layer)
    D_pred: float  # 2 s₀² α A²/|B| (per layer), leading order
    cross_corr: float  # correlation of one-snapshot increments of gram1 and gram2 levels
    species_gap_rms: float  # rms of λ_i − μ_i (gram1 − gram2, level by level)
    balance_rms: float  # rms eigenvalue of D
    sgd_second_moment: tuple
    sde_second_moment: tuple
    ks_levels: tuple  # two-sample KS of the centred pooled levels, SGD vs SDE
    sgd_mean_r: tuple
    sde_mean_r: tuple
    ks_spacing: tuple  # two-sample KS of the bulk spacings (middle half) normalised by their mean
    sgd_levels: np.ndarray
    sde_levels: np.ndarray


def _ar1(m: np.ndarray) -> tuple[float, float, float, float]:
    """Lag-one coefficient a and innovation variance q of m (R, T), with errors over replicas."""
    x, y = m[:, :-1], m[:, 1:]
    a_rep = np.sum(x * y, axis=1) / np.sum(x * x, axis=1)
    a = float(np.sum(x * y) / np.sum(x * x))
    q_rep = np.mean((y - a * x) ** 2, axis=1)
    r = m.shape[0]
    return a, float(a_rep.std(ddof=1) / math.sqrt(r)), float(q_rep.mean()), float(q_rep.std(ddof=1) / math.sqrt(r))


def level_sde_check(results, point: int, species: str = "gram1", start: int | None = None, seed: int = 0,
                    replicas: int = 64, relax: float = 6.0) -> LevelSDECheck:
    """Measure γ and D of the level species at ``point`` from its SGD trajectory (centre of mass
    m = Σλ/N: an OU process with rate γ and noise 2D/N), integrate the β = 1 DBM with
    U = γλ²/2 and these coefficients (`dysonbm.sde.DysonBM`, from all levels at 0, for
    ``relax``/γ and as long again sampled), and compare its stationary levels with SGD's."""

    model = model_of(results)
    hp = results.points[point]
    n = model.n_hidden
    s0 = float(teacher_singular_values(results)[0])
    start = stationary_start(results) if start is None else start
    ok = ~np.asarray(results.diverged[point], bool)
    lv = np.asarray(results[species][point][ok][:, start:], float)
    every = int(results.steps[1] - results.steps[0])
    dtau = hp["lr"] * every
    centre = lv.mean()
    m = lv.mean(axis=-1) - centre
    a, a_err, q, q_err = _ar1(m)
    gamma = -math.log(a) / dtau
    gamma_err = a_err / (a * dtau)
    # exact OU transition: innovation variance (D/(γN))(1 − a²)
    D = n * gamma * q / (1.0 - a * a)
    D_err = D * math.hypot(q_err / q, gamma_err / gamma)
    lv2 = np.asarray(results["gram2" if species == "gram1" else "gram1"][point][ok][:, start:], float)
    d1, d2 = np.diff(lv, axis=1).ravel(), np.diff(lv2, axis=1).ravel()
    cross = float(np.corrcoef(d1, d2)[0, 1])
    gap_rms = float(np.sqrt(np.mean((lv - lv2) ** 2)))
    balance = np.asarray(results["balance"][point][ok][:, start:], float)
    balance_rms = float(np.sqrt(np.mean(balance**2)))
    noise = hp.get("noise", model.noise)
    # the SDE, in τ, with the measured coefficients
    dt = sde.recommended_dt(n, D, gamma)
    steps_relax = int(math.ceil(relax / gamma / dt))
    every_sde = max(1, int(round(0.5 / gamma / dt)))
    n_samples = max(1, steps_relax // every_sde)
    proc = sde.DysonBM(n=n, potential="quadratic", start="zero")
    obs = sde.simulate(proc, {"D": D, "gamma": gamma, "beta": 1.0, "dt": dt}, jax.random.key(seed), replicas,
                         steps_relax + every_sde * n_samples, save_every=every_sde)
    y_sgd, y_sde = lv - centre, np.asarray(obs["levels"])[:, -n_samples:]  # (R, S, N)
    mom = lambda y: (float(np.mean(y * y)), float(np.mean(y * y, axis=(1, 2)).std(ddof=1) / math.sqrt(y.shape[0])))  # noqa: E731
    mr = lambda y: rmt.mean_ratio(y.reshape(-1, n))  # noqa: E731
    bulk = slice(n // 4, n - n // 4)

    def bulk_spacings(y):
        s = np.diff(np.sort(y, axis=-1), axis=-1)[..., bulk]
        return (s / s.mean()).ravel()

    r_sgd, r_sde = mr(y_sgd), mr(y_sde)
    return LevelSDECheck(
        species, n, dtau, gamma, gamma_err, D, D_err, 2.0 * s0, 2.0 * s0**2 * hp["lr"] * noise**2 / hp["batch_size"],
        cross, gap_rms, balance_rms, mom(y_sgd), mom(y_sde), rmt.ks_2samp(y_sgd.ravel(), y_sde.ravel()),
        (r_sgd.value, r_sgd.stderr), (r_sde.value, r_sde.stderr),
        rmt.ks_2samp(bulk_spacings(y_sgd), bulk_spacings(y_sde)), y_sgd.ravel(), y_sde.ravel())
