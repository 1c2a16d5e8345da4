"""The Gaussian RBM against its Langevin equation (SCIENCE.md §1, §2, §3.2).

Levels: ``x_a = σ_h² ξ_a²``, the eigenvalues of ``X = σ_h² WᵀW``, descending (``N_h ≤ N_v``);
level ``a`` belongs to the a-th softest target mode ``κ_a``. In the SGD time ``τ = α·steps``
at ``T = α/|B|`` and to leading order in α they follow the weighted level SDE
`dysonbm.sde.LevelSDE` (second-order perturbation theory of ``X' = X + αP + α²σ_h²GᵀG``)::

    dx_a = [ f_a(x_a) + T Σ_{b≠a} Ṽ_ab/(x_a − x_b) + T C̃_a ] dτ + sqrt(T Ṽ_aa) dB_a

Potential. With the eigenvectors of ``W Wᵀ`` on the target's (true at the fixed points) the
mean gradient gives the exact flow ``f_a(x) = 2σ_h² x (1/κ_a − 1/(μ² − x))``
(`dysonbm.models.gaussian_rbm.relaxation_rates`): fixed point ``x* = μ² − κ_a`` for
``κ_a < μ²``, slope ``−γ_a``, ``γ_a = 2σ_h² x*/κ_a²``, curvature ``f'' = −4σ_h² μ²/κ_a³``.

Noise, measured. ``P = −σ_h²(GᵀW + WᵀG)`` (the change of X per unit α) projected on the
eigenvectors of ``WᵀW``; ``G`` the persistent-chain (PCD-k) estimator of `GaussianRBM`
evaluated one chain at a time. ``Ṽ_ab`` is the long-run (integrated over the updates)
covariance per chain of ``P_ab``, ``C̃_a = σ_h² Σ_c`` long-run variance of ``(QᵀGV)_ca``
(the Itô term of ``σ_h² GᵀG``). Long-run, because a persistent chain is correlated from one
update to the next: a block of updates shorter than a relaxation time but longer than the
chain's memory carries the integrated covariance. `measure_noise` runs the chains at fixed
stationary weights.

Noise, exact (`noise_theory`). At fixed W a Gibbs sweep is linear, in the eigenbasis of
``W Wᵀ`` ``φ'_a = (x_a/μ²) φ_a + noise``, stationary ``φ_a ~ N(0, 1/k_a)``, ``k_a = μ² − x_a``,
so after k sweeps the chain's lag-one correlation is ``ρ_a = (x_a/μ²)^k``. With
``G = σ_h² φφᵀW − data`` (η = 0), ``P_ab = −2σ_h² sqrt(x_a x_b) φ_a φ_b``, and Isserlis::

    Ṽ_aa = 8 σ_h⁴ x_a²/k_a² · r(ρ_a²),   Ṽ_ab = 4 σ_h⁴ x_a x_b/(k_a k_b) · r(ρ_aρ_b),
    C̃_a  = σ_h⁴ x_a [Σ_{c≠a} r(ρ_cρ_a)/(k_c k_a) + 2 r(ρ_a²)/k_a²]     (c over all N_v),

``r(q) = (1 + q)/(1 − q)`` the integrated autocorrelation (1 for one update: the lag-0
covariance). Small-T predictions: a singlet's variance ``TṼ_aa/(2γ_a) = 2Tσ_h² x* r``, a
degenerate pair's mean squared deviation from its centre ``3TṼ_aa/(4γ_a)`` (GOE 2×2 block,
``Ṽ_aa = 2Ṽ_ab``): both ∝ ``T(μ² − κ)``. Discrete SGD exceeds the SDE's variance by
``2/(2 − αγ_a)`` and relaxes at ``−ln(1 − αγ_a)/α`` per unit τ (the O(α) corrections).

Langevin side (`langevin_levels`): `dysonbm.sde.integrate_levels` with the measured
Ṽ, C̃ held fixed and the drift ``f_a`` re-linearised about the current levels every chunk of
``dτ ≤ 0.1/γ_max`` (the integrator takes a linear drift ``a − γx``; a chunk this short
leaves the curvature's share of the centre shift within about γ·dτ). Where it must fail:
the noise is multiplicative (``Ṽ ∝ x²``) but held at its stationary value, which matters
for modes near the cut-off (``x* → 0`` as ``κ → μ²``) and at large T; neighbouring modes
overlap at large T; and the O(α) terms of discrete SGD.

Statistics, per learnt mode (levels grouped by the target's degeneracy), SGD replicas in the
stationary window and Langevin snapshots after burn-in alike: centre shift ``⟨x⟩ − x*``,
width (rms deviation of the mode's levels from the ensemble-mean centre), relaxation rate
of the mode's centre from its autocorrelation at a lag near ``1/γ`` (the centre of a pair is
a pure Ornstein–Uhlenbeck coordinate: the pair's repulsion cancels in it). Errors: spread
over replica blocks (replicas are independent, snapshots of one replica are not).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from dysonbm.models.gaussian_rbm import GaussianRBM, target_modes
from dysonbm.sde.weighted import LevelCoefficients, integrate_levels

__all__ = [
    "Noise", "ModeStats", "ModeComparison", "PointComparison", "drift", "noise_theory", "measure_noise",
    "langevin_levels", "rotation_drift", "mode_stats", "compare_point", "compare", "table",
]


# ----------------------------------------------------------------------------- theory
def drift(x, kappa, mu2, sigma_h):
    """``(f, γ)``: the potential's drift ``2σ_h² x (1/κ − 1/(μ² − x))`` and its slope ``−∂f/∂x``."""
    s2 = sigma_h**2
    f = 2.0 * s2 * x * (1.0 / kappa - 1.0 / (mu2 - x))
    gamma = -2.0 * s2 * (1.0 / kappa - mu2 / (mu2 - x) ** 2)
    return f, gamma


def _integrated(q):
    return (1.0 + q) / (1.0 - q)


def noise_theory(x, n_visible: int, mu2: float, sigma_h: float, gibbs_steps: int, long_run: bool = True) -> dict:
    """Exact per-chain noise coefficients at weights with levels ``x`` (descending, ``N_h``).

    Returns ``{"pair": Ṽ (N_h, N_h), "ito": C̃ (N_h,)}`` for chains in equilibrium with W and
    an exact data term; ``long_run=False`` gives the covariance of one update (lag 0).
    """
    x = np.asarray(x, float)
    n = x.size
    s4 = sigma_h**4
    xv = np.concatenate([x, np.zeros(max(n_visible - n, 0))])
    k = mu2 - xv
    rho = (xv / mu2) ** gibbs_steps
    r = _integrated(np.outer(rho, rho)) if long_run else np.ones((xv.size, xv.size))
    pair = 4.0 * s4 * np.outer(x, x) / np.outer(k[:n], k[:n]) * r[:n, :n]
    pair[np.diag_indices(n)] *= 2.0
    inv = r[:, :n] / np.outer(k, k[:n])  # (c, a)
    ito = s4 * x * (inv.sum(axis=0) + np.diagonal(inv[:n]))  # the c = a term counts twice
    return {"pair": pair, "ito": ito}


def rotation_drift(weights, kernel, sigma_h: float) -> np.ndarray:
    """Mean over ``weights`` ``(M, N_v, N_h)`` of the level drift that the potential leaves out.

    The exact mean drift of level a is ``2σ_h² x_a (u_aᵀ C u_a − 1/(μ² − x_a))`` (``u_a`` its
    eigenvector of ``W Wᵀ``, ``C = K_φ⁻¹``; ``u_aᵀK⁻¹u_a = 1/(μ² − x_a)`` exactly), and the
    potential's is this with ``u_aᵀ C u_a = 1/κ_a``. The difference,
    ``2σ_h² x_a Σ_c (u_a·q_c)² (1/κ_c − 1/κ_a)``, is second order in the eigenvectors' tilt away
    from the target's, so of order T at stationarity: the same order as the Coulomb and Itô
    terms, which is why the centre shifts need it. Levels by rank, ``κ_a`` the a-th softest.
    """
    w = np.asarray(weights, float).reshape((-1,) + np.shape(weights)[-2:])
    kappa, q, _ = target_modes(kernel)
    n = w.shape[-1]
    u, xi, _ = np.linalg.svd(w, full_matrices=False)
    x = sigma_h**2 * xi**2
    overlap = np.einsum("mia,ic->mac", u, q) ** 2  # (M, level, target mode)
    return np.mean(2.0 * sigma_h**2 * x * (overlap @ (1.0 / kappa) - 1.0 / kappa[None, :n]), axis=0)


# ----------------------------------------------------------------------------- measurement
@dataclasses.dataclass(frozen=True)
class Noise:
    """Measured per-chain noise coefficients, averaged over weight matrices.

    pair, pair_err: Ṽ (N_h, N_h) long-run and its standard error; pair_lag0: the covariance
    of a single update; ito, ito_err: C̃ (N_h,); levels: x at the weights (N_h,);
    theory: `noise_theory` at each weight matrix, averaged the same way; n_weights, n_chains,
    n_updates: the sample; exact_pull: measured against exact in standard errors of their
    difference at the same matrices.
    """

    pair: np.ndarray
    pair_err: np.ndarray
    pair_lag0: np.ndarray
    ito: np.ndarray
    ito_err: np.ndarray
    levels: np.ndarray
    theory: dict
    theory_lag0: dict
    n_weights: int
    n_chains: int
    n_updates: int
    exact_pull: np.ndarray  # (measured − exact)/s.e. of Ṽ_aa then C̃_a, paired at each matrix (2 N_h,)


@partial(jax.jit, static_argnames=("model", "n_chains", "n_updates", "burn_in"))
def _chain_moments(model, problem, w, hp, key, n_chains, n_updates, burn_in):
    """For one weight matrix: per-chain long-run second moments of the projected increment."""
    s2 = hp["sigma_h"] ** 2
    q, xi, vt = jnp.linalg.svd(w, full_matrices=True)
    v = vt.T
    frame = q.T @ w @ v  # diag(ξ) padded to (N_v, N_h)
    k_burn, k_run = jax.random.split(key)
    phi = model.replace(gibbs_steps=burn_in).gibbs(w, jnp.zeros((n_chains, model.n_visible), w.dtype), k_burn, hp)

    def gradient(phi, key):
        """Per-chain estimator G_c (N_v, N_h): the model phase of one chain minus the data phase."""
        model_phase = jnp.einsum("ci,cj->cij", phi, hp["eta"] + s2 * phi @ w)
        if model.data_term == "exact":
            return model_phase - (s2 * problem["cov"] @ w)[None]
        data = jax.random.normal(key, phi.shape, w.dtype) @ problem["cov_chol"].T
        return model_phase - jnp.einsum("ci,cj->cij", data, hp["eta"] + s2 * data @ w)

    def update(carry, key):
        phi, sum_p, sum_g, sq_p = carry
        k_gibbs, k_data = jax.random.split(key)
        phi = model.gibbs(w, phi, k_gibbs, hp)
        g = jnp.einsum("ia,cij,jb->cab", q, gradient(phi, k_data), v)  # Qᵀ G V
        p = -s2 * (jnp.swapaxes(g, 1, 2) @ frame + frame.T @ g)  # Vᵀ dX V, (c, N_h, N_h)
        return (phi, sum_p + p, sum_g + g, sq_p + jnp.mean(p * p, axis=0)), None

    n_v, n_h = w.shape
    zero = (phi, jnp.zeros((n_chains, n_h, n_h), w.dtype), jnp.zeros((n_chains, n_v, n_h), w.dtype),
            jnp.zeros((n_h, n_h), w.dtype))
    (_, sum_p, sum_g, sq_p), _ = jax.lax.scan(update, zero, jax.random.split(k_run, n_updates))
    mean_p, mean_g = sum_p.mean(axis=0), sum_g.mean(axis=0)
    # batch means: the variance of a chain's sum over n updates, per update, is the long-run covariance
    # (the mean is the chains' own: C/(C − 1) unbiases it)
    unbias = n_chains / (n_chains - 1.0)
    long_p = unbias * (sum_p - mean_p) ** 2 / n_updates  # (c, N_h, N_h)
    long_g = unbias * (sum_g - mean_g) ** 2 / n_updates
    lag0 = sq_p / n_updates - (mean_p / n_updates) ** 2
    return {"pair": long_p, "ito": s2 * long_g.sum(axis=1), "lag0": lag0, "levels": s2 * xi**2}


def measure_noise(model: GaussianRBM, problem, weights, hp: dict, key, n_chains: int = 256,
                  n_updates: int = 64, burn_in: int = 60) -> Noise:
    """Per-chain PCD-k noise coefficients at the given weights ``(M, N_v, N_h)`` (or one matrix).

    Ṽ varies steeply with the levels (``∝ x²/(μ² − x)²``), so the stationary coefficient needs
    many matrices (tens) more than many chains. Each matrix gets ``n_chains`` chains started at 0 and run ``burn_in`` Gibbs sweeps (the
    slowest mode forgets its start as ``(x/μ²)^sweeps``), then ``n_updates`` updates of
    ``gibbs_steps`` sweeps each. Errors: spread over the matrices (M > 1) or the chains.
    """
    w = np.asarray(weights, float)
    w = w[None] if w.ndim == 2 else w
    if w.ndim != 3 or w.shape[1:] != (model.n_visible, model.n_hidden):
        raise ValueError(f"weights must be (M, {model.n_visible}, {model.n_hidden}), got shape {np.shape(weights)}")
    if model.n_hidden > model.n_visible:
        raise ValueError(f"the level SDE needs n_hidden <= n_visible, got {model.n_hidden} > {model.n_visible}")
    if n_chains < 2 or n_updates < 1:
        raise ValueError(f"n_chains must be >= 2 and n_updates >= 1, got n_chains={n_chains}, n_updates={n_updates}")
    if model.learn:
        raise ValueError(f"the noise is measured at fixed scalars; model.learn = {list(model.learn)} trains them")
    dtype = jnp.result_type(float)
    hpj = {name: jnp.asarray(hp[name], dtype) for name in ("mu2", "sigma_h", "eta")}
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(w.shape[0]))
    run = jax.vmap(lambda wi, ki: _chain_moments(model, problem, wi, hpj, ki, int(n_chains), int(n_updates),
                                                 int(burn_in)))
    out = {k: np.asarray(v, float) for k, v in run(jnp.asarray(w, dtype), keys).items()}
    m = w.shape[0]

    def mean_err(a):  # a: (M, chains, …)
        per_w = a.mean(axis=1)
        if m > 1:
            return per_w.mean(axis=0), per_w.std(axis=0, ddof=1) / math.sqrt(m)
        return per_w[0], a[0].std(axis=0, ddof=1) / math.sqrt(a.shape[1])

    pair, pair_err = mean_err(out["pair"])
    ito, ito_err = mean_err(out["ito"])
    mu2, sigma_h = float(hp["mu2"]), float(hp["sigma_h"])

    def each(long_run):
        per = [noise_theory(x, model.n_visible, mu2, sigma_h, model.gibbs_steps, long_run) for x in out["levels"]]
        return {k: np.array([e[k] for e in per]) for k in ("pair", "ito")}

    exact, exact0 = each(True), each(False)
    # measured − exact at the same matrix: the stationary spread of Ṽ over matrices cancels
    diff = np.concatenate([np.diagonal(out["pair"].mean(axis=1) - exact["pair"], axis1=1, axis2=2),
                           out["ito"].mean(axis=1) - exact["ito"]], axis=1)  # (M, 2 N_h)
    if m > 1:
        err = diff.std(axis=0, ddof=1) / math.sqrt(m)
    else:
        err = np.concatenate([np.diagonal(pair_err), ito_err])
    pull = np.where(err > 0, diff.mean(axis=0) / np.where(err > 0, err, 1.0), 0.0)
    return Noise(pair, pair_err, out["lag0"].mean(axis=0), ito, ito_err, out["levels"].mean(axis=0),
                 {k: v.mean(axis=0) for k, v in exact.items()}, {k: v.mean(axis=0) for k, v in exact0.items()},
                 m, int(n_chains), int(n_updates), pull)


# ----------------------------------------------------------------------------- Langevin
@partial(jax.jit, static_argnames=("n_snapshots", "n_burn", "n_sub", "max_sub"))
def _evolve(key, x0, pair, ito, extra, kappa, mu2, sigma_h, T, dtau, n_snapshots, n_burn, n_sub, max_sub):
    r = x0.shape[0]

    def chunk(carry, key):
        x, steps, forced = carry
        f, gamma = drift(x, kappa, mu2, sigma_h)
        # the kernel's levels are ascending, this module's descending (level a ↔ the a-th softest mode)
        coef = LevelCoefficients((f + extra + gamma * x)[:, ::-1], pair[:, ::-1, ::-1], ito[:, ::-1], gamma[:, ::-1])
        x, info = integrate_levels(jax.random.split(key, r), x[:, ::-1], coef, T, dtau, max_steps=max_sub)
        x = x[:, ::-1]
        # a level at or beyond μ² leaves K positive definite no more: the replica has diverged
        x = jnp.where(jnp.all(x < mu2, axis=1, keepdims=True), x, jnp.nan)
        return (x, steps + info["steps"], forced + info["forced"]), None

    def snapshot(carry, key):
        carry, _ = jax.lax.scan(chunk, carry, jax.random.split(key, n_sub))
        return carry, carry[0]

    zero = jnp.zeros(r, jnp.int32)
    (_, steps, forced), xs = jax.lax.scan(snapshot, (x0, zero, zero), jax.random.split(key, n_burn + n_snapshots))
    return jnp.swapaxes(xs[n_burn:], 0, 1), steps, forced


def langevin_levels(noise: Noise, kappa, mu2: float, sigma_h: float, T: float, key, *, replicas: int = 1000,
                    snapshots: int = 100, interval: float = 2.0, burn_in: float | None = None,
                    chunk_rate: float = 0.1, max_sub: int = 8, extra_drift=None,
                    info: dict | None = None) -> np.ndarray:
    """Stationary levels ``(replicas, snapshots, N_h)`` (descending; NaN rows: diverged) of the
    level SDE in the RBM's potential with the measured coefficients ``noise``.

    kappa: the target eigenvalues of the levels (ascending, ``N_h``, the softest first).
    extra_drift: a constant drift per level added to the potential's (`rotation_drift`).
    Starts at the fixed points; ``burn_in`` (default 3/γ_min over the learnt modes) is
    discarded; snapshots ``interval`` apart; the drift is re-linearised every chunk of
    ``dτ = interval/n ≤ chunk_rate/γ_max`` (the curvature's share of a centre shift is then
    off by about γ·dτ, ≤ 10%). ``max_sub`` caps the integrator's sub-steps per chunk (its
    step budget: three levels bunched within a few hundredths would otherwise make every
    replica of the vmapped batch wait); ``info``, if given, receives the total ``steps`` and the
    ``forced`` ones (taken at the budget's floor, not the step control's choice).
    """
    kappa = np.asarray(kappa, float)
    n = kappa.size
    x_star = np.maximum(mu2 - kappa, 0.0)
    rates = 2.0 * sigma_h**2 * x_star / kappa**2
    learnt = rates > 0
    if not learnt.any():
        raise ValueError(f"no mode is learnt at mu2 = {mu2}: every kappa >= mu2")
    burn_in = 3.0 / rates[learnt].min() if burn_in is None else burn_in
    n_sub = max(1, math.ceil(interval * rates.max() / chunk_rate))
    n_burn = max(0, math.ceil(burn_in / interval))
    dtype = jnp.float32
    x0 = jnp.broadcast_to(jnp.asarray(x_star, dtype), (replicas, n))

    def rep(a):
        return jnp.broadcast_to(jnp.asarray(a, dtype), (replicas,) + np.shape(a))

    extra = np.zeros(n) if extra_drift is None else np.asarray(extra_drift, float)
    xs, steps, forced = _evolve(key, x0, rep(noise.pair), rep(noise.ito), rep(extra), jnp.asarray(kappa, dtype),
                                jnp.asarray(mu2, dtype), jnp.asarray(sigma_h, dtype), rep(T), rep(interval / n_sub),
                                int(snapshots), n_burn, n_sub, int(max_sub))
    if info is not None:
        info.update(steps=int(np.sum(steps)), forced=int(np.sum(forced)))
    return np.asarray(xs, float)


# ----------------------------------------------------------------------------- statistics
@dataclasses.dataclass(frozen=True)
class ModeStats:
    """Per-mode statistics of one ensemble of levels (values and standard errors)."""

    shift: float
    shift_err: float
    width: float
    width_err: float
    rate: float
    rate_err: float
    lag: int
    n_replicas: int
    trend: float  # centre in the window's last quarter minus its first: ≠ 0 if not yet stationary
    trend_err: float


def _blocks(per_replica: np.ndarray, n_blocks: int = 16) -> tuple[float, float]:
    """Mean and standard error of per-replica values from the spread of block means."""
    v = per_replica[np.isfinite(per_replica)]
    nb = min(n_blocks, v.size)
    if nb < 2:
        return float(np.mean(v)) if v.size else float("nan"), float("nan")
    means = np.array([b.mean() for b in np.array_split(v, nb)])
    return float(v.mean()), float(means.std(ddof=1) / math.sqrt(nb))


def mode_stats(levels, slots, x_star: float, rate_guess: float, dtau: float, n_blocks: int = 16) -> ModeStats:
    """Statistics of the mode holding levels ``slots`` of ``levels`` ``(R, S, N_h)``.

    Relaxation rate from the lag-``ℓ`` autocorrelation of the mode's centre, pooled over the
    replicas, ``ℓ ≈ 1/(γ dτ)`` (γ = ``rate_guess``) snapshots; its error by jackknife over
    replica blocks.
    """
    x = np.asarray(levels, float)
    x = x[np.all(np.isfinite(x), axis=(1, 2))]
    r, s = x.shape[:2]
    centre = x[:, :, list(slots)].mean(axis=2)  # (R, S)
    c_mean = centre.mean()
    shift, shift_err = _blocks(centre.mean(axis=1) - x_star, n_blocks)
    dev2 = ((x[:, :, list(slots)] - c_mean) ** 2).mean(axis=(1, 2))
    msd, msd_err = _blocks(dev2, n_blocks)
    width = math.sqrt(msd)
    lag = int(min(max(1, round(1.0 / (rate_guess * dtau))), max(1, s // 4)))
    d = centre - c_mean
    num = (d[:, lag:] * d[:, :-lag]).mean(axis=1)
    den = (d * d).mean(axis=1)

    def rate(idx):
        rho = num[idx].sum() / den[idx].sum()
        return -math.log(rho) / (lag * dtau) if rho > 0 else float("nan")

    quarter = max(1, s // 4)
    trend, trend_err = _blocks(centre[:, -quarter:].mean(axis=1) - centre[:, :quarter].mean(axis=1), n_blocks)
    full = rate(np.arange(r))
    nb = min(n_blocks, r)
    parts = np.array_split(np.arange(r), nb)
    jack = np.array([rate(np.setdiff1d(np.arange(r), p)) for p in parts])
    rate_err = float(math.sqrt((nb - 1) / nb * np.sum((jack - jack.mean()) ** 2))) if nb > 1 else float("nan")
    return ModeStats(shift, shift_err, width, 0.5 * msd_err / width, full, rate_err, lag, r, trend, trend_err)


@dataclasses.dataclass(frozen=True)
class ModeComparison:
    """One learnt mode at one grid point: SGD against Langevin, with the small-T theory."""

    kappa: float
    slots: tuple
    x_star: float
    rate: float  # γ of the linearised potential
    width_theory: float  # small-T width from the measured Ṽ_aa
    sgd: ModeStats
    langevin: ModeStats
    noise_rel_err: float  # relative standard error of the mode's measured Ṽ_aa
    rotation_shift: float  # rotation_drift/γ: the eigenvector tilt's share of the centre shift

    @property
    def width_ratio(self) -> tuple[float, float]:
        """SGD / Langevin width and its error, which includes the measured noise's (width ∝ sqrt(Ṽ_aa))."""
        a, b = self.sgd, self.langevin
        q = a.width / b.width
        return q, q * math.sqrt((a.width_err / a.width) ** 2 + (b.width_err / b.width) ** 2
                                + (0.5 * self.noise_rel_err) ** 2)


@dataclasses.dataclass(frozen=True)
class PointComparison:
    point: int
    hp: dict
    temperature: float
    noise: Noise
    modes: list
    n_diverged_langevin: int
    forced_fraction: float  # of the integrator's sub-steps taken at the step budget's floor
    rotation_term: bool  # whether the Langevin drift held `rotation_drift`


def _groups(kappa: np.ndarray, mode: np.ndarray, n: int, mu2: float) -> list[tuple[float, tuple]]:
    """(κ, slots) of each learnt mode among the ``n`` levels (slots in descending-level order)."""
    out = []
    for m in np.unique(mode[:n]):
        slots = tuple(int(i) for i in np.flatnonzero(mode[:n] == m))
        if kappa[slots[0]] < mu2:
            out.append((float(kappa[slots[0]]), slots))
    return out


def _sgd_setup(results, point: int):
    model = results.model()
    if not isinstance(model, GaussianRBM):
        raise ValueError(f"model.name = {results.config['model']['name']!r}: this comparison is for gaussian_rbm")
    if "weights" not in results:
        raise ValueError("results have no `weights`: run with [record] weights = true")
    problem = {k: jnp.asarray(v) for k, v in results.problem(point).items()}
    return model, problem


def compare_point(results, point: int, *, key=None, start: int | None = None, noise_weights: int = 64,
                  n_chains: int = 128, n_updates: int = 64, replicas: int = 1000, snapshots: int | None = None,
                  n_blocks: int = 16, rotation_term: bool = True) -> PointComparison:
    """SGD replicas of ``point`` against the level SDE with the noise measured at their weights.

    ``rotation_term``: add `rotation_drift`, measured over the SGD's stationary window, to the
    potential's drift (its share of each centre shift, ``rotation/γ``, is reported either way).
    """
    from dysonbm.analysis import levels

    model, problem = _sgd_setup(results, point)
    hp = dict(results.points[point])
    lr, bs = float(hp["lr"]), int(hp["batch_size"])
    T = lr / bs
    mu2, sigma_h = float(hp["mu2"]), float(hp["sigma_h"])
    start = levels.stationary_start(results) if start is None else start
    ok = ~np.asarray(results.diverged[point], bool)
    w = np.asarray(results["weights"][point])[ok][:, start:]
    pick_r = np.unique(np.linspace(0, w.shape[0] - 1, min(noise_weights, w.shape[0])).round().astype(int))
    w = w[pick_r, -1]  # one stationary matrix per replica: independent weights
    key = jax.random.fold_in(jax.random.key(0) if key is None else key, point)
    k_noise, k_lang = jax.random.split(key)
    noise = measure_noise(model, problem, w, hp, k_noise, n_chains, n_updates)

    kappa_all, _, mode = target_modes(model.target_kernel())
    n = model.n_hidden
    kappa = kappa_all[:n]
    every = np.diff(np.asarray(results.steps))
    dtau = lr * float(every[0])
    sgd = -np.sort(-np.asarray(results["xi2"][point], float)[ok][:, start:], axis=-1)  # descending, whatever the store keeps
    snapshots = sgd.shape[1] if snapshots is None else snapshots
    window = np.asarray(results["weights"][point])[ok][:, start:]
    rotation = rotation_drift(window[:, :: max(1, window.shape[1] // 10)], model.target_kernel(), sigma_h)
    info = {}
    lang = langevin_levels(noise, kappa, mu2, sigma_h, T, k_lang, replicas=replicas, snapshots=snapshots,
                           interval=dtau, extra_drift=rotation if rotation_term else None, info=info)
    n_div = int(np.sum(~np.all(np.isfinite(lang), axis=(1, 2))))
    modes = []
    for kap, slots in _groups(kappa_all, mode, n, mu2):
        x_star = mu2 - kap
        gamma = 2.0 * sigma_h**2 * x_star / kap**2
        v_aa = float(np.mean([noise.pair[a, a] for a in slots]))
        v_err = float(np.sqrt(np.mean([noise.pair_err[a, a] ** 2 for a in slots]) / len(slots)))
        width_theory = math.sqrt((0.75 if len(slots) == 2 else 0.5) * T * v_aa / gamma)
        modes.append(ModeComparison(kap, slots, x_star, gamma, width_theory,
                                    mode_stats(sgd, slots, x_star, gamma, dtau, n_blocks),
                                    mode_stats(lang, slots, x_star, gamma, dtau, n_blocks), v_err / v_aa,
                                    float(np.mean(rotation[list(slots)])) / gamma))
    return PointComparison(point, hp, T, noise, modes, n_div, info["forced"] / max(info["steps"], 1), rotation_term)


def compare(results, points=None, **kw) -> list[PointComparison]:
    """`compare_point` for every grid point (or the listed ones)."""
    points = range(len(results.points)) if points is None else points
    return [compare_point(results, p, **kw) for p in points]


def _pm(v, e, f="{:.4g}"):
    return f"{f.format(v)} ± {e:.1g}"


def table(comps: list[PointComparison]) -> str:
    """Markdown: per point and learnt mode, SGD against Langevin."""
    head = ("| α | \\|B\\| | T | κ | x* | width SGD | width Langevin | ratio | expected sqrt(2/(2−αγ)) | "
            "width theory (small T) | shift SGD | shift Langevin | tilt share of shift | rate SGD | rate Langevin | "
            "γ (theory) |")
    rows = [head, "|" + "---|" * 16]
    for c in comps:
        for m in c.modes:
            a, b = m.sgd, m.langevin
            q, qe = m.width_ratio
            expected = math.sqrt(2.0 / (2.0 - c.hp["lr"] * m.rate))
            rows.append(
                f"| {c.hp['lr']:g} | {c.hp['batch_size']} | {c.temperature:.4g} | {m.kappa:.3f}"
                f"{'²' if len(m.slots) == 2 else ''} | {m.x_star:.3f} | {_pm(a.width, a.width_err)} | "
                f"{_pm(b.width, b.width_err)} | {_pm(q, qe, '{:.3f}')} | {expected:.3f} | {m.width_theory:.4g} | "
                f"{_pm(a.shift, a.shift_err)} | {_pm(b.shift, b.shift_err)} | {m.rotation_shift:+.3g} | "
                f"{_pm(a.rate, a.rate_err)} | "
                f"{_pm(b.rate, b.rate_err)} | {m.rate:.4g} |")
    return "\n".join(rows) + "\n"
