"""The Gaussian RBM against its Langevin equation, and its trained scalars (SCIENCE.md §3.2).

System for the SDE checks: a diagonal target kernel diag(2, 3, 4) with μ² = 5, N_v = N_h = 3,
so the fixed points x* = μ² − κ = 3, 2, 1 are one unit apart and the relaxation rates
γ = 2x*/κ² = 1.5, 0.44, 0.125 differ; at T = α/|B| = 0.001 the widths (≲ 0.1) are far below the
gaps, the regime where the small-T Langevin theory of `dysonbm.analysis.rbm_langevin` applies without
mode mixing. Tolerances: 5 standard errors, plus the known O(α) and O(T) corrections where
they are not negligible against them (stated at each check).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dysonbm as dbm
from conftest import enable_x64
from dysonbm.analysis import rbm_langevin as rl
from dysonbm.models.gaussian_rbm import GaussianRBM, lattice_eigenvalues, target_modes

KERNEL = ((2.0, 0.0, 0.0), (0.0, 3.0, 0.0), (0.0, 0.0, 4.0))
MU2 = 5.0
KAPPA = np.array([2.0, 3.0, 4.0])
X_STAR = MU2 - KAPPA
GAMMA = 2.0 * X_STAR / KAPPA**2


def _small(**kw):
    return GaussianRBM(n_visible=3, n_hidden=3, mu2=MU2, kernel=KERNEL, gibbs_steps=2, **kw)


def _hp(**kw):
    return {"mu2": MU2, "sigma_h": 1.0, "eta": 0.0, "init_std": 0.3, "lr": 0.05, "batch_size": 1, **kw}


def _sgd_levels(model, lr, bs, replicas, steps, every, key, start=None):
    """σ_h²ξ² (R, S, N_h) and the weights at the end, from SGD replicas started at the fixed points."""
    model = model.replace(chains=bs)
    problem = model.problem(None)
    init_fn, step_fn = dbm.sgd(model, optax.sgd)
    _, q, _ = target_modes(model.target_kernel())
    w0 = jnp.asarray(q @ np.diag(np.sqrt(np.maximum(MU2 - np.sort(KAPPA), 0.0))), jnp.float32)
    hp = _hp(lr=lr, batch_size=bs)
    mask = jnp.ones(bs, jnp.float32)

    def init(key, hp):
        state = init_fn(key, problem, hp)
        return {**state, "params": {**state["params"], "W": w0}}

    def step(state, key, hp):
        return step_fn(state, None, key, problem, hp, mask)

    def observe(state, hp):
        w = state["params"]["W"]
        return {"xi2": jnp.linalg.eigvalsh(w.T @ w)[::-1], "W": w}

    out = dbm.simulate(init, step, observe, key=key, hp=hp, steps=steps, every=every, replicas=replicas)
    assert not np.any(np.asarray(out.state["diverged"]))
    x = np.asarray(out.observed["xi2"], float)
    start = x.shape[1] // 2 if start is None else start
    return x[:, start:], np.asarray(out.observed["W"][:, -1], float)


# ----------------------------------------------------------------------------- trained scalars
def test_scalar_gradients_match_autodiff_of_the_exact_likelihood():
    with enable_x64():
        model = GaussianRBM(n_visible=5, n_hidden=4, m2=1.0, mu2=7.0, learn=["mu2", "eta", "sigma_h"])
        problem = model.problem(None)
        exact_fn = jax.jit(lambda p, hp: model.exact_grad(p, problem, hp))
        auto_fn = jax.jit(jax.grad(lambda p, hp: model.loss(p, None, None, problem, hp)))
        for seed in range(3):
            hp = _hp(mu2=6.0 + seed, sigma_h=0.7 + 0.2 * seed, eta=0.4 - 0.3 * seed, init_std=0.4)
            hp = {k: jnp.asarray(v, jnp.float64) for k, v in hp.items()}
            params, _ = model.init(jax.random.key(seed), problem, hp)
            params = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
            exact, auto = exact_fn(params, hp), auto_fn(params, hp)
            assert set(exact) == {"W", "mu2", "eta", "sigma_h"}
            for name in exact:
                np.testing.assert_allclose(np.asarray(exact[name]), np.asarray(auto[name]), rtol=1e-9, atol=1e-12)
            # and the learnt values, not hp, are what the likelihood reads
            moved = {**params, "mu2": params["mu2"] + 0.5}
            assert model.loss(moved, None, None, problem, hp) != model.loss(params, None, None, problem, hp)


@pytest.mark.parametrize("data_term", ["exact", "samples"])
def test_sampled_scalar_gradients_are_unbiased(data_term):
    """The chains' phases: the mean of ``loss_and_grad`` over independent draws equals the exact
    gradient within 5 standard errors (chains start in equilibrium with W: no burn-in bias)."""
    chains, draws = 256, 64
    model = GaussianRBM(n_visible=4, n_hidden=3, m2=1.0, mu2=6.0, learn=("mu2", "eta", "sigma_h"),
                        data_term=data_term, chains=chains)
    problem = model.problem(None)
    hp = _hp(mu2=6.0, sigma_h=0.9, eta=0.3, init_std=0.5)
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}
    params, _ = model.init(jax.random.key(0), problem, hp)
    mask = jnp.ones(chains, jnp.float32)

    burn = model.replace(gibbs_steps=60)  # the slowest chain mode forgets its start as (x/μ²)^60

    def one(key):
        k_init, k_step, k_data = jax.random.split(key, 3)
        aux = {"phi": burn.gibbs(params["W"], jnp.zeros((chains, 4), jnp.float32), k_init, hp)}
        batch = jax.vmap(lambda k: model.make_sample(problem, model.draw_input(k), None))(jax.random.split(k_data, chains))
        return model.loss_and_grad(params, aux, batch, mask, k_step, problem, hp)[1]

    grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), draws))
    exact = model.exact_grad(params, problem, hp)
    for name in ("mu2", "eta", "sigma_h", "W"):
        g = np.asarray(grads[name], float).reshape(draws, -1)
        mean, se = g.mean(axis=0), g.std(axis=0, ddof=1) / math.sqrt(draws)
        assert np.all(np.abs(mean - np.asarray(exact[name]).ravel()) < 5 * se + 1e-6), name


def test_learn_is_validated():
    with pytest.raises(ValueError, match="learn"):
        GaussianRBM(learn=("mu2", "kappa"))
    with pytest.raises(ValueError, match="learn"):
        GaussianRBM(learn=("mu2", "mu2"))
    assert GaussianRBM(learn=["sigma_h"]).learn == ("sigma_h",)
    assert GaussianRBM().learn == ()


def test_learn_unknown_value_is_a_one_line_exit_2(tmp_path, capsys):
    from dysonbm import cli

    cfg = tmp_path / "c.toml"
    cfg.write_text('replicas = 2\nsteps = 2\n[model]\nname = "gaussian_rbm"\nlearn = ["mu2", "mass"]\n')
    out = tmp_path / "out"
    assert cli.main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "learn" in err and "mass" in err
    assert not out.exists()


def test_trained_mass_moves_the_cut_off_to_the_exact_likelihood_fixed_point():
    """Gradient flow on the exact likelihood with μ², σ_h and η trained, started with μ² = 4
    below the stiffest mode (κ = 5 cut off): μ² rises to κ_max and K reaches K_φ, the exact
    maximum (the marginal is Gaussian, so NLL = NLL_min iff K = K_φ and m = 0).

    Tolerance: the slowest direction is μ² itself once the learnt modes follow it; a cut mode
    gives dμ²/dτ = ½(1/μ² − 1/κ_max) ≈ (κ_max − μ²)/(2κ_max²), a rate 1/50 per unit τ, so
    16000 steps of α = 0.05 (τ = 800) leave e^{−16} ≈ 1e-7 of the initial gap of 1; K is asked
    to be within 1e-5 (float64). (α = 0.05 keeps αγ < 2 for the stiffest learnt mode,
    γ = 2σ_h²(μ² − κ)/κ² ≈ 10 at κ = 1 once σ_h has grown to 1.6.)"""
    with enable_x64():
        model = GaussianRBM(n_visible=4, n_hidden=4, m2=1.0, mu2=4.0, learn=("mu2", "eta", "sigma_h"))
        problem = model.problem(None)
        kappa = lattice_eigenvalues(4, 1.0)  # 1, 3, 3, 5
        hp = _hp(mu2=4.0, sigma_h=1.0, eta=0.2, init_std=0.3)
        params, _ = model.init(jax.random.key(3), problem, hp)
        params = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}

        @jax.jit
        def flow(p):
            def body(p, _):
                g = model.exact_grad(p, problem, hp)
                return jax.tree_util.tree_map(lambda a, b: a - 0.05 * b, p, g), None
            return jax.lax.scan(body, p, None, length=16000)[0]

        final = flow(params)
        live = model.live(final, hp)
        k_eigs = np.linalg.eigvalsh(np.asarray(model._kernel(final["W"], live)))
        np.testing.assert_allclose(k_eigs, kappa, atol=1e-5)
        assert abs(float(final["mu2"]) - kappa.max()) < 1e-5  # the cut-off moved from 4 to κ_max = 5
        assert abs(float(final["eta"])) < 1e-6  # the target has mean 0
        nll_min = 0.5 * (4 + np.sum(np.log(1.0 / kappa)) + 4 * math.log(2 * math.pi))
        assert abs(float(model.loss(final, None, None, problem, hp)) - nll_min) < 1e-9


# ----------------------------------------------------------------------------- noise
def test_measured_noise_matches_the_exact_pcd_covariance():
    """Per-chain covariance of the projected increment (lag 0 and integrated over the chain's
    memory) and the Itô term, against `noise_theory` at the same weights (Isserlis + the Gibbs
    chain's lag correlation (x/μ²)^k), within 5 standard errors. The batch-means estimator of
    the long-run covariance is low by ≈ 2q/((1 − q)² n) (q the lag-one correlation): 0.4% here,
    under a tenth of the tolerance."""
    model = GaussianRBM(n_visible=6, n_hidden=6, m2=1.0, mu2=4.5, gibbs_steps=2)
    problem = model.problem(None)
    kappa, q, _ = target_modes(model.target_kernel())
    rng = np.random.default_rng(0)
    w = q @ np.diag(np.sqrt(np.maximum(4.5 - kappa, 0))) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
    w = w + 0.05 * rng.normal(size=(6, 6))
    noise = rl.measure_noise(model, problem, w, _hp(mu2=4.5), jax.random.key(2), n_chains=4096, n_updates=128)
    for got, want, err in ((noise.pair, noise.theory["pair"], noise.pair_err), (noise.ito, noise.theory["ito"], noise.ito_err)):
        live = err > 0
        assert np.all(np.abs(got - want)[live] < 5 * err[live] + 1e-6 * np.abs(want).max())
    # the chain's memory matters: the top level's integrated variance is twice its lag-0 one
    assert noise.theory["pair"][0, 0] > 1.8 * noise.theory_lag0["pair"][0, 0]
    lag0_err = noise.pair_err[0, 0] / noise.theory["pair"][0, 0] * noise.theory_lag0["pair"][0, 0]
    assert abs(noise.pair_lag0[0, 0] - noise.theory_lag0["pair"][0, 0]) < 5 * lag0_err


# ----------------------------------------------------------------------------- SDE against SGD
@pytest.fixture(scope="module")
def small_t():
    """SGD at T = 0.001 (α = 0.05, |B| = 50) and the level SDE with the noise measured at its weights."""
    lr, bs, every = 0.05, 50, 20
    model = _small()
    x, w_end = _sgd_levels(model, lr, bs, replicas=128, steps=4000, every=every, key=jax.random.key(5))
    # Ṽ ∝ x²/(μ² − x)² varies by ~15% over the stationary spread of the top level: average it
    # over many replicas' weights, and carry its error into the width comparison
    noise = rl.measure_noise(model, model.problem(None), w_end, _hp(), jax.random.key(6), n_chains=128,
                             n_updates=64)
    lang = rl.langevin_levels(noise, KAPPA, MU2, 1.0, lr / bs, jax.random.key(7), replicas=256,
                              snapshots=x.shape[1], interval=lr * every)
    return lr, bs, lr * every, x, noise, lang


def test_sde_width_matches_sgd_and_theory_at_small_temperature(small_t):
    """Per mode: SGD width / Langevin width = sqrt(2/(2 − αγ)) (the discrete step's excess
    variance) within 5 combined standard errors, and the Langevin width equals the small-T
    theory sqrt(TṼ_aa/(2γ)) within 5 s.e. plus 3% (the O(T) shifts of γ and Ṽ at this T)."""
    lr, bs, dtau, x, noise, lang = small_t
    T = lr / bs
    assert np.all(np.isfinite(lang))
    for a in range(3):
        s = rl.mode_stats(x, (a,), X_STAR[a], GAMMA[a], dtau)
        g = rl.mode_stats(lang, (a,), X_STAR[a], GAMMA[a], dtau)
        expected = math.sqrt(2.0 / (2.0 - lr * GAMMA[a]))
        ratio = s.width / g.width
        noise_rel = 0.5 * noise.pair_err[a, a] / noise.pair[a, a]
        err = ratio * math.sqrt((s.width_err / s.width) ** 2 + (g.width_err / g.width) ** 2 + noise_rel**2)
        assert abs(ratio - expected) < 5 * err, (a, ratio, expected, err)
        theory = math.sqrt(T * noise.pair[a, a] / (2 * GAMMA[a]))
        assert abs(g.width - theory) < 5 * g.width_err + 0.03 * theory, (a, g.width, theory)


def test_sde_relaxation_rate_matches_the_potential_and_sgd(small_t):
    """Centre autocorrelation: the Langevin rate equals γ = 2σ_h²x*/κ² and the SGD rate
    −ln(1 − αγ)/α (one discrete step multiplies a deviation by 1 − αγ), each within 5 s.e.
    plus 3% (the estimator's nonlinear-drift and O(T) bias)."""
    lr, _, dtau, x, _, lang = small_t
    for a in range(3):
        s = rl.mode_stats(x, (a,), X_STAR[a], GAMMA[a], dtau)
        g = rl.mode_stats(lang, (a,), X_STAR[a], GAMMA[a], dtau)
        assert abs(g.rate - GAMMA[a]) < 5 * g.rate_err + 0.03 * GAMMA[a], (a, g.rate, GAMMA[a], g.rate_err)
        discrete = -math.log(1.0 - lr * GAMMA[a]) / lr
        assert abs(s.rate - discrete) < 5 * s.rate_err + 0.03 * discrete, (a, s.rate, discrete, s.rate_err)


def test_rotation_drift_completes_the_potential_to_the_exact_mean_drift():
    """f_a(x_a) + `rotation_drift` is the exact mean drift of level a: the projection of the
    exact likelihood gradient, −σ_h² Vᵀ(ḡᵀW + Wᵀḡ)V, at weights whose eigenvectors are tilted."""
    model = _small()
    problem = model.problem(None)
    rng = np.random.default_rng(4)
    w = np.diag(np.sqrt(X_STAR)) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    w = w + 0.1 * rng.normal(size=(3, 3))
    g = np.asarray(model.exact_grad({"W": jnp.asarray(w, jnp.float32)}, problem, _hp())["W"], float)
    u, xi, vt = np.linalg.svd(w)
    p = -(vt @ (g.T @ w + w.T @ g) @ vt.T)
    f, _ = rl.drift(xi**2, KAPPA, MU2, 1.0)
    rot = rl.rotation_drift(w[None], np.asarray(KERNEL), 1.0)
    np.testing.assert_allclose(f + rot, np.diag(p), rtol=1e-4, atol=1e-5)
    assert np.abs(rot).max() > 1e-3  # the tilt matters at these weights


def test_the_quick_rbm_langevin_config_is_valid():
    from dysonbm import config
    from dysonbm.reproduce import sgd_langevin, sgd_langevin_rbm

    cfg = config.load(sgd_langevin_rbm.CONFIG, sgd_langevin_rbm.SGD_QUICK)
    assert cfg.record.weights and cfg.snapshot_every == 20
    assert max(p["batch_size"] for p in config.grid_points(cfg)) == 16  # |B| chains per replica
    assert set(sgd_langevin_rbm.OUTPUTS) <= set(sgd_langevin.OUTPUTS) and "rbm" in sgd_langevin.RUNS


def test_only_rbm_is_a_part_of_the_reproduction(tmp_path, monkeypatch):
    from dysonbm import cli
    from dysonbm.reproduce import sgd_langevin_rbm

    seen = []

    def fake_part(out, quick, progress, resume):
        seen.append(quick)
        return "## Gaussian RBM\n", []

    monkeypatch.setattr(sgd_langevin_rbm, "run_part", fake_part)
    out = tmp_path / "res"
    assert cli.main(["reproduce", "sgd-langevin", "--quick", "--only", "rbm", "--out", str(out), "--quiet"]) == 0
    assert seen == [True] and "## Gaussian RBM" in (out / "report.md").read_text()
    assert not (out / "sgd").exists()  # the teacher–student part did not run
    assert cli.main(["reproduce", "sgd-langevin", "--only", "both", "--out", str(tmp_path / "x")]) == 2


# ----------------------------------------------------------------------------- slow sweeps
@pytest.mark.slow
@pytest.mark.parametrize("bs", [100, 25])
def test_width_follows_the_sde_over_a_batch_sweep(bs):
    """|B| = 100 and 25 at α = 0.05 (T = 0.0005, 0.002): per mode the SGD/Langevin width ratio is
    sqrt(2/(2 − αγ)) within 5 s.e. (with the measured noise's error), and the Langevin relaxation
    rate is γ within 5 s.e. + 3%."""
    lr, every = 0.05, 20
    model = _small()
    x, w_end = _sgd_levels(model, lr, bs, replicas=256, steps=8000, every=every, key=jax.random.key(bs))
    noise = rl.measure_noise(model, model.problem(None), w_end, _hp(), jax.random.key(1), n_chains=128)
    lang = rl.langevin_levels(noise, KAPPA, MU2, 1.0, lr / bs, jax.random.key(2), replicas=512,
                              snapshots=x.shape[1], interval=lr * every)
    for a in range(3):
        s = rl.mode_stats(x, (a,), X_STAR[a], GAMMA[a], lr * every)
        g = rl.mode_stats(lang, (a,), X_STAR[a], GAMMA[a], lr * every)
        ratio = s.width / g.width
        err = ratio * math.sqrt((s.width_err / s.width) ** 2 + (g.width_err / g.width) ** 2
                                + (0.5 * noise.pair_err[a, a] / noise.pair[a, a]) ** 2)
        assert abs(ratio - math.sqrt(2.0 / (2.0 - lr * GAMMA[a]))) < 5 * err, (a, ratio, err)
        assert abs(g.rate - GAMMA[a]) < 5 * g.rate_err + 0.03 * GAMMA[a], (a, g.rate)


@pytest.mark.slow
def test_quick_rbm_reproduction_writes_report_and_figure(tmp_path):
    """`dbm reproduce sgd-langevin --quick --only rbm`: the report, the figure, and the measured
    noise within 5 standard errors of its exact value at every point and level."""
    from dysonbm.reproduce import sgd_langevin as rep

    text = rep.run(tmp_path, quick=True, progress=False, parts=("rbm",)).read_text()
    assert (tmp_path / "rbm_langevin.png").stat().st_size > 10_000
    assert "### Where they agree and where it breaks down" in text
    rows = text.split("### Measured against exact noise")[1].split("\n\n")[1].splitlines()[2:]
    pulls = [float(row.split("|")[5]) for row in rows]
    assert len(pulls) == 4 and max(pulls) < 5, pulls
