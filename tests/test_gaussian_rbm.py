"""Gaussian RBM on a free scalar field (SCIENCE.md §3.2): sampler, gradient, fixed points."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dysonbm.models.gaussian_rbm import (
    GaussianRBM,
    fixed_points,
    lattice_eigenvalues,
    lattice_kernel,
    relaxation_rates,
)
from conftest import enable_x64

N = 10
M2 = 4.0


def make_hp(model, **changes):
    hp = {**model.defaults(), "lr": 0.02, "batch_size": max(model.chains, 1), "init_std": 0.1}
    hp.update(changes)
    return hp


def within_sigma(estimate, exact, se, n_sigma=5.0):
    """Entrywise |estimate − exact| ≤ n_sigma · standard error."""
    return np.all(np.abs(np.asarray(estimate) - exact) <= n_sigma * se)


# -- theory helpers -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_lattice_kernel_spectrum(n):
    kappa = lattice_eigenvalues(n, M2)
    np.testing.assert_allclose(np.linalg.eigvalsh(lattice_kernel(n, M2)), kappa, rtol=1e-12)
    assert np.all(np.diff(kappa) >= 0) and kappa[0] == pytest.approx(M2)


def test_fixed_point_table():
    # N = 10, m² = 4 by hand: κ_k = 6 − 2cos(36°·k), with 2cos 36° = φ = 1.618034 and
    # 2cos 72° = φ − 1 = 0.618034: 4, 6 − φ (twice), 6 − (φ−1) (twice), 6 + (φ−1) (twice),
    # 6 + φ (twice), 8
    kappa = np.array([4.0, 4.381966, 4.381966, 5.381966, 5.381966, 6.618034, 6.618034, 7.618034, 7.618034, 8.0])
    # the same spectrum from the explicit matrix: m² + 2 on the diagonal, −1 to each neighbour
    K = np.zeros((N, N))
    for i in range(N):
        K[i, i] = M2 + 2.0
        K[i, (i + 1) % N] = K[i, (i - 1) % N] = -1.0
    np.testing.assert_allclose(np.linalg.eigvalsh(K), kappa, atol=1e-6)
    np.testing.assert_allclose(lattice_eigenvalues(N, M2), kappa, atol=1e-6)
    # μ² = 9: every mode learnt, σ_h² ξ² = μ² − κ, descending
    np.testing.assert_allclose(fixed_points(kappa, 9.0, 1.0, N),
                               [5.0, 4.618034, 4.618034, 3.618034, 3.618034, 2.381966, 2.381966, 1.381966, 1.381966, 1.0],
                               atol=1e-6)
    # μ² = 6 cuts κ > 6 off; N_h = 4 < 5 learnable modes keeps only the 4 softest; σ_h drops out
    np.testing.assert_allclose(fixed_points(kappa, 6.0, 2.0, 4), [2.0, 1.618034, 1.618034, 0.618034], atol=1e-6)
    cut = fixed_points(kappa, 6.0, 1.0, 12)
    np.testing.assert_allclose(cut, [2.0, 1.618034, 1.618034, 0.618034, 0.618034] + [0.0] * 7, atol=1e-6)


# -- validation and divergence --------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel",
    [
        lattice_kernel(N, -1.0),  # κ_0 = m² = −1 < 0
        lattice_kernel(N - 1, M2),  # wrong shape
        np.triu(lattice_kernel(N, M2)),  # not symmetric
        "continuum",
        [[1.0, 2.0], [3.0]],
    ],
)
def test_bad_kernel_raises(kernel):
    with pytest.raises(ValueError, match="kernel"):
        GaussianRBM(n_visible=N, kernel=kernel)


def test_settings_validated_and_hashable():
    with pytest.raises(ValueError, match="m2"):
        GaussianRBM(m2=0.0)
    with pytest.raises(ValueError, match="data_term"):
        GaussianRBM(data_term="both")
    with pytest.raises(ValueError, match="gibbs_steps"):
        GaussianRBM(gibbs_steps=0)
    user = GaussianRBM(n_visible=N, kernel=lattice_kernel(N, M2))
    assert isinstance(user.kernel, tuple) and hash(user) == hash(dataclasses.replace(user))
    np.testing.assert_allclose(user.problem(None)["kernel"], GaussianRBM().problem(None)["kernel"])
    assert not GaussianRBM().uses_data and GaussianRBM(data_term="samples").uses_data
    # chains unset: init still gives shapes (the engine queries them), training refuses
    model = GaussianRBM()
    problem, hp = model.problem(None), make_hp(model)
    params, aux = model.init(jax.random.key(0), problem, hp)
    assert params["W"].shape == (N, N) and aux["phi"].shape == (0, N)
    with pytest.raises(ValueError, match="chains"):
        model.loss_and_grad(params, aux, None, jnp.ones(16), jax.random.key(1), problem, hp)


def test_lost_positivity_gives_inf_loss_not_exception():
    model = GaussianRBM(chains=4)
    problem = model.problem(jax.random.key(0))
    hp = make_hp(model)
    # replica 0 sane; replica 1 has σ_h² ξ² = 16 > μ² = 9, so K = μ² − σ_h² W Wᵀ is indefinite
    w = jnp.stack([0.1 * jnp.eye(N), 4.0 * jnp.eye(N)])
    aux = {"phi": jnp.zeros((2, 4, N))}
    mask = jnp.ones(4)

    def one(w, phi, key):
        loss, grads, _ = model.loss_and_grad({"W": w}, {"phi": phi}, None, mask, key, problem, hp)
        return loss, model.loss({"W": w}, None, mask, problem, hp), grads["W"]

    lag_loss, loss, _ = jax.jit(jax.vmap(one))(w, aux["phi"], jax.random.split(jax.random.key(1), 2))
    assert np.isfinite(lag_loss[0]) and lag_loss[0] == pytest.approx(float(loss[0]))
    assert lag_loss[1] == np.inf and loss[1] == np.inf


def test_nll_matches_gaussian_cross_entropy():
    """NLL = H(target) + KL(target ‖ model) for N(0, K_φ⁻¹) against N(K⁻¹Wη, K⁻¹), in float64."""
    with enable_x64():
        model = GaussianRBM(n_hidden=4)
        problem = model.problem(None)
        hp = make_hp(model, mu2=8.0, sigma_h=1.3, eta=0.7)
        w = 0.4 * jax.random.normal(jax.random.key(2), (N, 4), jnp.float64)
        nll = float(model.loss({"W": w}, None, None, problem, hp))
    w = np.asarray(w)
    cov_t = np.linalg.inv(lattice_kernel(N, M2))
    k = hp["mu2"] * np.eye(N) - hp["sigma_h"] ** 2 * w @ w.T
    cov_m, mean_m = np.linalg.inv(k), np.linalg.solve(k, w @ np.full(4, hp["eta"]))
    entropy = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov_t)[1]
    kl = 0.5 * (
        np.trace(k @ cov_t) + mean_m @ k @ mean_m - N + np.linalg.slogdet(cov_m)[1] - np.linalg.slogdet(cov_t)[1]
    )
    assert nll == pytest.approx(entropy + kl, rel=1e-12)


# -- exact gradient -------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["lattice", "user"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_exact_gradient_is_minus_loglikelihood_gradient(kernel, eta):
    """Both averages exact: σ_h²(K⁻¹ + mmᵀ − K_φ⁻¹)W + mηᵀ equals jax.grad of the exact NLL."""
    with enable_x64():
        if kernel == "user":
            a = np.asarray(jax.random.normal(jax.random.key(3), (N, N), jnp.float64))
            kernel = a @ a.T / N + 2.0 * np.eye(N)
        model = GaussianRBM(n_hidden=6, kernel=kernel)
        problem = model.problem(None)
        hp = make_hp(model, mu2=7.0, sigma_h=1.3, eta=eta)
        params = {"W": 0.4 * jax.random.normal(jax.random.key(4), (N, 6), jnp.float64)}
        exact = model.exact_grad(params, problem, hp)["W"]
        # autodiff of the NLL itself (``loss`` carries exact_grad as its derivative)
        auto = jax.grad(lambda p: model._nll(p["W"], problem, hp))(params)["W"]
        # float64: the two agree to rounding, far inside the 1e-5 relative budget
        assert float(jnp.max(jnp.abs(exact - auto))) <= 1e-5 * float(jnp.max(jnp.abs(auto)))
        if eta == 0.0:  # the SCIENCE.md form −σ_h² (C_target − C_model) W
            w, s2 = params["W"], hp["sigma_h"] ** 2
            k_inv = jnp.linalg.inv(hp["mu2"] * jnp.eye(N) - s2 * w @ w.T)
            science = -s2 * (problem["cov"] - k_inv) @ w
            np.testing.assert_allclose(exact, science, rtol=1e-10, atol=1e-14)


def test_loss_derivatives_are_those_of_the_nll_in_every_argument():
    """``loss``'s closed-form derivative equals autodiff through the factorisation: in W and in
    the learnt scalars (exact_grad), and in a setting of ``hp`` (the fallback rule), under
    jit and vmap as the engine calls it."""
    with enable_x64():
        model = GaussianRBM(n_visible=5, n_hidden=4, m2=1.0, mu2=7.0, learn=["eta", "sigma_h"])
        problem = model.problem(None)
        hp = make_hp(model, eta=0.3)
        params = {"W": 0.4 * jax.random.normal(jax.random.key(4), (5, 4), jnp.float64),
                  "eta": jnp.asarray(0.3), "sigma_h": jnp.asarray(1.1)}
        plain = lambda p, h: model._nll(p["W"], problem, model.live(p, h))  # noqa: E731
        closed = lambda p, h: model.loss(p, None, None, problem, h)  # noqa: E731
        g_closed, g_plain = jax.jit(jax.grad(closed))(params, hp), jax.grad(plain)(params, hp)
        for name in params:
            np.testing.assert_allclose(g_closed[name], g_plain[name], rtol=1e-9, atol=1e-12, err_msg=name)
        d_mu2 = jax.grad(lambda m: closed(params, {**hp, "mu2": m}))(jnp.asarray(hp["mu2"]))
        np.testing.assert_allclose(d_mu2, jax.grad(lambda m: plain(params, {**hp, "mu2": m}))(jnp.asarray(hp["mu2"])),
                                   rtol=1e-9)
        assert abs(float(d_mu2)) > 1e-3
        batch = jax.tree_util.tree_map(lambda x: jnp.stack([x, 1.5 * x]), params)
        v = jax.jit(jax.vmap(jax.grad(lambda p: closed(p, hp))))(batch)
        np.testing.assert_allclose(v["W"][1], jax.grad(plain)({k: 1.5 * x for k, x in params.items()}, hp)["W"],
                                   rtol=1e-9, atol=1e-12)


# -- Gibbs chains and the sampled gradient ----------------------------------------------------

N_CHAINS = 20_000
N_PAD = 2_000  # trailing masked-out slots, filled with NaN to prove they never leak


@pytest.fixture(scope="module")
def equilibrium():
    """One loss_and_grad call with 60 Gibbs sweeps from φ = 0 on 18 000 active chains and a
    batch of 18 000 target samples, at a fixed W with η ≠ 0 and σ_h ≠ 1."""
    model = GaussianRBM(
        n_hidden=6, sigma_h=0.8, eta=0.5, data_term="samples", gibbs_steps=60, chains=N_CHAINS
    )
    problem = model.problem(jax.random.key(0))
    hp = make_hp(model, batch_size=N_CHAINS - N_PAD)
    w = 0.5 * jax.random.normal(jax.random.key(5), (N, 6))
    mask = (jnp.arange(N_CHAINS) < N_CHAINS - N_PAD).astype(jnp.float32)
    pad = mask[:, None] > 0
    batch = jax.vmap(model.sample, (0, None))(jax.random.split(jax.random.key(6), N_CHAINS), problem)
    batch = jnp.where(pad, batch, jnp.nan)
    phi0 = jnp.where(pad, 0.0, jnp.nan)
    run = jax.jit(model.loss_and_grad)
    loss, grads, aux = run({"W": w}, {"phi": jnp.broadcast_to(phi0, (N_CHAINS, N))}, batch, mask, jax.random.key(7), problem, hp)
    n = N_CHAINS - N_PAD
    return dict(
        model=model, problem=problem, hp=hp, w=np.asarray(w), loss=loss, grads=np.asarray(grads["W"]),
        phi=np.asarray(aux["phi"][:n], np.float64), batch=np.asarray(batch[:n], np.float64), n=n,
    )


def covariance_check(samples, mean, cov):
    """Sample mean and covariance against the exact ones, entrywise within 5 standard errors.

    For n Gaussian samples Var(x̄_i) = C_ii/n and Var(Ĉ_ij) = (C_ij² + C_ii C_jj)/n.
    """
    n = samples.shape[0]
    diag = np.diag(cov)
    assert within_sigma(samples.mean(0), mean, np.sqrt(diag / n))
    assert within_sigma(np.cov(samples.T), cov, np.sqrt((cov**2 + np.outer(diag, diag)) / n))


def test_target_samples_have_target_covariance(equilibrium):
    cov = np.linalg.inv(lattice_kernel(N, M2))
    covariance_check(equilibrium["batch"], np.zeros(N), cov)


def test_gibbs_chains_reproduce_model_marginal(equilibrium):
    """After 60 sweeps from φ = 0 the chains sample N(K⁻¹Wη, K⁻¹), K = μ² − σ_h² W Wᵀ."""
    hp, w = equilibrium["hp"], equilibrium["w"]
    k = hp["mu2"] * np.eye(N) - hp["sigma_h"] ** 2 * w @ w.T
    # each sweep maps φ → (σ_h² W Wᵀ/μ²) φ + noise: the start is forgotten as ρ^60
    rho = 1.0 - np.linalg.eigvalsh(k)[0] / hp["mu2"]
    assert rho**60 < 1e-6
    covariance_check(equilibrium["phi"], np.linalg.solve(k, w.sum(1) * hp["eta"]), np.linalg.inv(k))


@pytest.mark.parametrize("sweeps", [1, 2, 3, 4])
def test_gibbs_draws_the_exact_law_of_k_sweeps(sweeps):
    """One draw of ``gibbs`` has the law of k sweeps φ → h → φ from a fixed φ₀: the affine
    Gaussian map φ' = φA + c + N(0, C) iterated k times on (mean, covariance) (float64)."""
    n, n_visible, n_hidden = 100_000, 4, 3
    s2, mu2, eta = 1.21, 3.0, 0.3
    with enable_x64():
        model = GaussianRBM(n_visible=n_visible, n_hidden=n_hidden, gibbs_steps=sweeps, chains=n)
        w = 0.6 * np.random.default_rng(sweeps).standard_normal((n_visible, n_hidden))
        phi0 = np.tile([0.5, -1.0, 0.2, 0.1], (n, 1))
        hp = {"mu2": mu2, "sigma_h": np.sqrt(s2), "eta": eta}
        phi = np.asarray(model.gibbs(jnp.asarray(w), jnp.asarray(phi0), jax.random.key(sweeps), hp))
    a = s2 * w @ w.T / mu2
    mean, cov = phi0[0], np.zeros((n_visible, n_visible))
    for _ in range(sweeps):  # one sweep: h = η + σ_h²Wᵀφ + σ_h z_h, φ' = W h/μ² + z_v/μ
        mean = mean @ a + eta * w.sum(1) / mu2
        cov = a @ cov @ a + s2 * w @ w.T / mu2**2 + np.eye(n_visible) / mu2
    covariance_check(phi, mean, cov)


def test_sampled_gradient_is_unbiased(equilibrium):
    """grads = mean_chains(φĥᵀ) − mean_batch(φĥᵀ) scatters about exact_grad by its standard error."""
    model, problem, hp, w, n = (equilibrium[k] for k in ("model", "problem", "hp", "w", "n"))
    exact = np.asarray(model.exact_grad({"W": jnp.asarray(w)}, problem, hp)["W"])

    def per_sample(phi):
        h_mean = hp["eta"] + hp["sigma_h"] ** 2 * phi @ w
        return phi[:, :, None] * h_mean[:, None, :]

    se = np.sqrt((per_sample(equilibrium["phi"]).var(0) + per_sample(equilibrium["batch"]).var(0)) / n)
    assert np.all(np.isfinite(equilibrium["grads"]))
    assert within_sigma(equilibrium["grads"], exact, se)
    exact_loss = model.loss({"W": jnp.asarray(w)}, None, None, problem, hp)
    assert float(equilibrium["loss"]) == pytest.approx(float(exact_loss), rel=1e-6)


# -- deterministic gradient flow -------------------------------------------------------------


def exact_flow(model, problem, hp, w, lr, steps):
    """Euler steps W ← W − lr·exact_grad, i.e. likelihood ascent with both averages exact."""

    def step(w, _):
        return w - lr * model.exact_grad({"W": w}, problem, hp)["W"], None

    return jax.jit(lambda w: jax.lax.scan(step, w, None, length=steps)[0])(w)


@pytest.mark.parametrize("n_hidden, sigma_h", [(N, 1.0), (4, 1.5)])
def test_gradient_flow_reaches_fixed_points(n_hidden, sigma_h):
    """μ² = 6, m² = 4: κ = 4, 4.38², 5.38² are learnt (σ_h² ξ² = μ² − κ), κ ≥ 6.62 cut off;
    with N_h = 4 only the 4 softest (one of the 5.38 pair) are learnt."""
    mu2 = 6.0
    model = GaussianRBM(n_hidden=n_hidden, mu2=mu2, sigma_h=sigma_h)
    problem = model.problem(None)
    hp = make_hp(model)
    w0 = 0.1 * jax.random.normal(jax.random.key(8), (N, n_hidden))
    # slowest rate ≈ 0.03 per unit τ (cut-off κ = 6.62 at σ_h = 1): τ = 1000 leaves e^-30
    w = exact_flow(model, problem, hp, w0, lr=0.5, steps=2000)
    obs = model.observables({"W": w}, None, problem, None, hp)
    kappa = lattice_eigenvalues(N, M2)
    expected = fixed_points(kappa, mu2, sigma_h, n_hidden)
    learnt = expected > 0
    xi2 = np.asarray(obs["xi2"])[::-1]  # stored ascending; fixed_points are descending
    np.testing.assert_allclose(xi2[learnt], expected[learnt], rtol=1e-3)
    assert np.all(np.abs(xi2[~learnt]) < 1e-3)
    # K matches K_φ on the learnt modes and is μ² on the rest
    n_learnt = int(learnt.sum())
    k_expected = np.sort(np.concatenate([kappa[:n_learnt], np.full(N - n_learnt, mu2)]))
    np.testing.assert_allclose(obs["k_eigs"], k_expected, rtol=1e-3)


def test_relaxation_rates_match_linearised_flow():
    """Perturb every mode of the fixed point (μ² = 6: learnt and cut-off modes) and compare the
    decay of x − x* over τ = 2 with exp(−rate·τ), in float64."""
    mu2, sigma_h, lr, steps = 6.0, 1.5, 1e-3, 2000
    kappa, basis = np.linalg.eigh(lattice_kernel(N, M2))
    x_star = np.maximum(mu2 - kappa, 0.0)
    x0 = x_star + 1e-6
    with enable_x64():
        model = GaussianRBM(mu2=mu2, sigma_h=sigma_h)
        problem = model.problem(None)
        # W = U diag(ξ) stays diagonal in the target eigenbasis U, each mode on its own ODE
        w0 = jnp.asarray(basis * np.sqrt(x0 / sigma_h**2))
        w = np.asarray(exact_flow(model, problem, make_hp(model), w0, lr, steps))
    x = sigma_h**2 * np.sum((basis.T @ w) ** 2, axis=1)
    measured = -np.log((x - x_star) / (x0 - x_star)) / (lr * steps)
    # Euler: ln(1 − lr·r)/lr = −r(1 + lr·r/2 + …) with lr·r ≤ 6e-4; perturbation 1e-6: linear regime
    np.testing.assert_allclose(measured, relaxation_rates(kappa, mu2, sigma_h), rtol=1e-3)


# -- stochastic training ---------------------------------------------------------------------


def test_sgd_with_gibbs_chains_settles_at_fixed_points():
    """8 replicas, |B| = 16 chains (4 padded slots), α = 0.02, k = 3, 7000 updates, μ² = 9,
    N_h = 3: the κ = 4 mode and the κ = 4.38 pair are learnt, σ_h² ξ² → 5, 4.62, 4.62."""
    batch, pad, lr, steps, every, replicas, mu2 = 16, 4, 0.02, 7000, 10, 8, 9.0
    model = GaussianRBM(n_hidden=3, mu2=mu2, chains=batch + pad)
    problem = model.problem(jax.random.key(0))
    hp = make_hp(model, lr=lr, batch_size=batch)
    mask = (jnp.arange(batch + pad) < batch).astype(jnp.float32)

    def replica(key):
        k_init, k_run = jax.random.split(key)
        params, aux = model.init(k_init, problem, hp)

        def update(carry, key):
            params, aux = carry
            _, grads, aux = model.loss_and_grad(params, aux, None, mask, key, problem, hp)
            return (jax.tree.map(lambda p, g: p - lr * g, params, grads), aux), None

        def snapshot(carry, key):
            carry, _ = jax.lax.scan(update, carry, jax.random.split(key, every))
            return carry, model.observables(carry[0], None, problem, None, hp)["xi2"][::-1]  # descending

        return jax.lax.scan(snapshot, (params, aux), jax.random.split(k_run, steps // every))[1]

    xi2 = np.asarray(jax.jit(jax.vmap(replica))(jax.random.split(jax.random.key(9), replicas)))
    tail = xi2[:, xi2.shape[1] // 2 :]  # the first half (τ = 70) covers growth and relaxation
    # a degenerate pair is split by level repulsion: compare its centre, not its members
    per_replica = np.stack([tail[..., 0].mean(1), tail[..., 1:].mean((1, 2))], axis=1)
    centre = per_replica.mean(0)
    se = per_replica.std(0, ddof=1) / np.sqrt(replicas)  # replicas are independent
    expected = fixed_points(lattice_eigenvalues(N, M2), mu2, 1.0, 3)[:2]
    temperature = lr / batch
    # SCIENCE.md §3.2: the centres shift linearly in α/|B|; measured at α/|B| = 1.25e-3,
    # 6.25e-4, 3.1e-4 the shift is ≈ 5 (α/|B|)(μ² − κ); allow twice that plus 5 standard errors
    tol = 10 * temperature * expected + 5 * se
    assert np.all(np.abs(centre - expected) <= tol), (centre, expected, tol)
    # the noise is there and of the predicted size: stationary width ∝ sqrt((α/|B|)(μ² − κ))
    width = tail[..., 0].std(1).mean() / np.sqrt(temperature * expected[0])
    assert 0.5 < width < 3.0


# -- levels assigned to target modes by eigenvector overlap ---------------------------------

from dysonbm.analysis import scaling  # noqa: E402
from dysonbm.io import Results  # noqa: E402
from dysonbm.models.gaussian_rbm import target_modes  # noqa: E402

RBM_HP = {"sigma_h": 1.0, "mu2": 9.0, "eta": 0.0}
# levels per slot (j-th softest eigenvector of K_φ, N = 10, m² = 4: modes 0, 1 1, 2 2, 3 3, 4 4, 5)
# near the fixed points 5, 4.62², 3.62², 2.38², 1.38², 1, displaced so that ranking mixes modes:
# mode 0 (4.5) falls inside pair 1 (4.9, 4.0), and pair 2's upper level (4.1) above pair 1's
# lower one. Ranked, the slots read 4.9 | 4.5, 4.1 | 4.0, 3.5: pair spacings 0.4 and 0.5
# instead of the modes' 0.9 and 0.6.
MIXED = np.array([4.5, 4.9, 4.0, 4.1, 3.5, 2.4, 2.3, 1.4, 1.3, 1.0])


def w_on_modes(model, levels, seed=0):
    """W = Q' diag(√levels) Vᵀ: level j on the j-th softest eigenvector of K_φ, the basis of each
    degenerate eigenspace first turned by a random angle (eigh's basis there is arbitrary)."""
    rng = np.random.default_rng(seed)
    _, Q, mode = target_modes(model.target_kernel())
    Q = Q.copy()
    for m in np.unique(mode):
        cols = np.nonzero(mode == m)[0]
        if cols.size == 2:
            a = rng.uniform(0, 2 * np.pi)
            Q[:, cols] = Q[:, cols] @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    n = levels.size
    V = np.linalg.qr(rng.normal(size=(model.n_hidden, model.n_hidden)))[0][:, :n]
    return Q[:, :n] @ np.diag(np.sqrt(levels)) @ V.T


def rbm_observables(model, w):
    return jax.jit(lambda w: model.observables({"W": w}, None, None, None, RBM_HP))(jnp.asarray(w, jnp.float32))


def test_target_modes_of_the_lattice():
    kappa, Q, mode = target_modes(lattice_kernel(N, M2))
    np.testing.assert_allclose(kappa, lattice_eigenvalues(N, M2), atol=1e-12)
    assert mode.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    np.testing.assert_allclose(Q.T @ Q, np.eye(N), atol=1e-12)


def test_overlap_assigns_levels_that_ranking_mixes():
    model = GaussianRBM()
    out = rbm_observables(model, w_on_modes(model, MIXED))
    np.testing.assert_allclose(out["xi2"], np.sort(MIXED), rtol=1e-5)
    np.testing.assert_allclose(out["xi2_by_mode"], MIXED, rtol=1e-5)
    np.testing.assert_allclose(out["mode_overlap"], 1.0, atol=1e-5)
    # ranking pairs slots (1, 2) and (3, 4): spacings 4.5 − 4.1 and 4.0 − 3.5 …
    ranked = np.asarray(out["xi2"])[::-1]  # by rank, largest first
    assert ranked[1] - ranked[2] == pytest.approx(0.4, abs=1e-4)
    assert ranked[3] - ranked[4] == pytest.approx(0.5, abs=1e-4)
    # … the modes' pairs are (4.9, 4.0) and (4.1, 3.5)
    by_mode = np.asarray(out["xi2_by_mode"])
    assert by_mode[1] - by_mode[2] == pytest.approx(0.9, abs=1e-4)
    assert by_mode[3] - by_mode[4] == pytest.approx(0.6, abs=1e-4)
    assert by_mode[0] == pytest.approx(4.5, rel=1e-5)


def test_overlap_assignment_with_tilted_eigenvectors():
    # each level's vector tilted by 0.3 rad towards the next mode: overlap cos² 0.3 ≈ 0.91,
    # still assigned to its own mode; the recorded overlap says how pure it is
    model = GaussianRBM()
    _, Q, mode = target_modes(model.target_kernel())
    order = [0, 1, 3, 5, 7, 9]  # one vector of each mode
    t = 0.3
    U = Q.copy()
    for a, b in zip(order[:-1], order[1:]):
        U[:, a] = np.cos(t) * Q[:, a] + np.sin(t) * Q[:, b]
    U[:, order[-1]] = np.cos(t) * Q[:, order[-1]] + np.sin(t) * Q[:, 0]
    U = np.linalg.qr(U)[0] * np.sign(np.diag(np.linalg.qr(U)[1]))  # orthonormal, close to the tilted vectors
    V = np.linalg.qr(np.random.default_rng(1).normal(size=(N, N)))[0]
    out = rbm_observables(model, U @ np.diag(np.sqrt(MIXED)) @ V.T)
    np.testing.assert_allclose(out["xi2_by_mode"], MIXED, rtol=1e-4)
    assert np.all(np.asarray(out["mode_overlap"]) > 0.8) and np.any(np.asarray(out["mode_overlap"]) < 0.95)


def test_more_hidden_than_visible_units_and_fewer():
    wide = GaussianRBM(n_visible=6, n_hidden=8)  # modes 0, 1 1, 2 2, 3; two zero levels
    levels = np.array([3.0, 3.2, 2.9, 1.5, 1.0, 0.5])
    out = rbm_observables(wide, w_on_modes(wide, levels, seed=2))
    np.testing.assert_allclose(out["xi2_by_mode"][:6], levels, rtol=1e-5)
    np.testing.assert_allclose(out["xi2_by_mode"][6:], 0.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["mode_overlap"][6:]), 0.0)
    # four hidden units on ten sites: the slots are modes 0, 1, 1 and one of mode 2
    narrow = GaussianRBM(n_hidden=4)
    levels = np.array([3.0, 4.6, 4.7, 3.6])
    out = rbm_observables(narrow, w_on_modes(narrow, levels, seed=3))
    np.testing.assert_allclose(out["xi2_by_mode"][0], 3.0, rtol=1e-5)
    np.testing.assert_allclose(np.sort(out["xi2_by_mode"][1:3]), [4.6, 4.7], rtol=1e-5)
    np.testing.assert_allclose(out["xi2_by_mode"][3], 3.6, rtol=1e-5)
    assert GaussianRBM().observable_axes()["xi2_by_mode"] == ("mode",)


def test_scaling_pairs_levels_by_mode():
    model = GaussianRBM()
    # four replicas, two snapshots: the mixed levels with random bases and hidden rotations
    ws = np.stack([w_on_modes(model, MIXED * (1 + 0.01 * s), seed=s) for s in range(8)])
    obs = jax.jit(jax.vmap(lambda w: model.observables({"W": w}, None, None, None, RBM_HP)))(jnp.asarray(ws, jnp.float32))
    shape = (1, 4, 2, N)
    arrays = {k: np.asarray(obs[k]).reshape(shape) for k in ("xi2", "xi2_by_mode")}
    arrays["diverged"] = np.zeros((1, 4), bool)
    manifest = {"points": [{"lr": 0.1, "batch_size": 16, **RBM_HP, "init_std": 0.1}], "steps": [0, 1000],
                "config": {"model": {"name": "gaussian_rbm"}}}
    res = Results(manifest, arrays, {})
    spec = scaling.spectrum(res)
    assert spec.name == "xi2_by_mode"
    assert spec.pairs[0] == (1, 2) and spec.labels[0] == "κ = 4.38"
    scale = (1 + 0.01 * np.arange(8)).reshape(4, 2)
    spacing = lambda r, s, k: np.diff(scaling.pair_levels(r, s, 0, k, 0), axis=-1)[..., 0]  # noqa: E731
    np.testing.assert_allclose(spacing(res, spec, 0), 0.9 * scale, rtol=1e-4)
    np.testing.assert_allclose(spacing(res, spec, 1), 0.6 * scale, rtol=1e-4)
    # results without the assignment fall back to ranking, which mixes the modes
    # (such results stored xi2 descending)
    old = Results(manifest, {"xi2": arrays["xi2"][..., ::-1], "diverged": arrays["diverged"]}, {})
    spec_old = scaling.spectrum(old)
    assert spec_old.name == "xi2" and spec_old.pairs == spec.pairs
    np.testing.assert_allclose(spacing(old, spec_old, 0), 0.4 * scale, rtol=1e-3)
    np.testing.assert_allclose(spacing(old, spec_old, 1), 0.5 * scale, rtol=1e-3)
