"""The linear one-hidden-layer network (dysonbm.models.linear_net, SCIENCE.md §3.4).

The Monte Carlo checks run the model's own gradient through the SGD kernel (`dysonbm.sgd`)
with fresh data every step, so they test the model, the kernel and the exact linearised
second-moment recursion together. Standard errors come from the spread over independent
replicas; every tolerance is 5 of them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import enable_x64

import dysonbm as dbm
from dysonbm.models.linear_net import (
    LinearNet,
    balance_step_var,
    layer_mean_spacing,
    stationary_covariance,
    stationary_entry_var,
)


def run_sgd(model, lr, batch, replicas, steps, every, seed=0, noise=None, tx=optax.sgd, init_std=0.0):
    """(params at snapshots, problem): online SGD (or ``tx``) of ``model``; snapshot axis 1."""
    problem = model.problem(jax.random.key(seed + 1000))
    init_fn, step_fn = dbm.sgd(model, tx)
    hp = {"lr": lr, "batch_size": batch, "init_std": init_std, "noise": model.noise if noise is None else noise}

    def init(key, hp):
        return init_fn(key, problem, hp)

    def step(state, key, hp):
        keys = jax.random.split(key, batch)
        samples = jax.vmap(lambda k: model.sample(k, problem))(keys)
        return step_fn(state, samples, key, problem, hp)

    traj = dbm.simulate(init, step, key=jax.random.key(seed), hp=hp, steps=steps, every=every, replicas=replicas,
                        save=lambda state, hp: state["params"])
    return jax.tree_util.tree_map(np.asarray, traj.saved), jax.tree_util.tree_map(np.asarray, problem)


def mean_and_se(per_sample):
    """Mean over (replica, snapshot), s.e. from per-replica means."""
    per_rep = per_sample.mean(axis=1)
    return per_rep.mean(axis=0), per_rep.std(axis=0, ddof=1) / math.sqrt(per_rep.shape[0])


@pytest.mark.parametrize("lr, batch, n", [(0.1, 16, 2), (0.4, 4, 2), (0.05, 8, 3)])
def test_isotropic_closed_form_is_the_general_solve(lr, batch, n):
    s0 = 1.3
    w = math.sqrt(s0) * np.eye(n)
    v = stationary_entry_var(lr, batch, 0.1, s0, n)
    np.testing.assert_allclose(stationary_covariance(lr, batch, 0.1, w, w), v * np.eye(n * n), rtol=1e-9, atol=1e-15)
    # the balanced point in random bases: the same law, rotated (E's entries stay i.i.d.)
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    o, _ = np.linalg.qr(rng.standard_normal((n, n)))
    np.testing.assert_allclose(stationary_covariance(lr, batch, 0.1, o @ w, u @ w @ o.T), v * np.eye(n * n),
                               rtol=1e-9, atol=1e-15)


def test_pair_spacing_from_the_general_solve_is_the_closed_form():
    """The report's ⟨S⟩ (Gaussian (u, v) from the dense solve) equals sqrt(2π τ²) at N = 2, and
    D's walk enters as an isotropic variance of (u, v)."""
    from dysonbm.analysis.linear_net import pair_mean_spacing

    for lr, batch in ((0.1, 16), (0.3, 4)):
        want = layer_mean_spacing(lr, batch, 0.1, 1.0)
        assert pair_mean_spacing(lr, batch, 0.1, (1.0, 1.0), (0, 1)) == pytest.approx(want, rel=1e-9)
        tau2 = want**2 / (2 * math.pi)
        assert pair_mean_spacing(lr, batch, 0.1, (1.0, 1.0), (0, 1), balance_var=0.2 * tau2) == pytest.approx(
            math.sqrt(2 * math.pi * 1.05 * tau2), rel=1e-9)  # (u, v) have variance 4τ² each


def test_full_reproduction_configs_load():
    from dysonbm import config, presets
    from dysonbm.reproduce import linear_net

    for name in ("linear_net_quick", "linear_net_pairs", "linear_net_wide"):
        assert config.load(presets.path(name)).model == "linear_net"
    cfg = config.load(presets.path("linear_net_wide"), {k: v for k, v in linear_net.WIDE_FULL.items()})
    assert cfg.replicas == linear_net.WIDE_FULL["replicas"]


def test_no_stationary_state_raises():
    with pytest.raises(ValueError, match="no stationary state"):
        stationary_entry_var(1.0, 4, 0.1, 1.0, 2)
    with pytest.raises(ValueError, match="no stationary state"):
        stationary_covariance(1.0, 4, 0.1, np.eye(2), np.eye(2))


def test_second_moments_against_sgd_nondegenerate():
    """Rectangular net (N_in 3, N_h 2, N_out 2), target singular values 1.5, 0.7: every element of
    Cov(vec E) from SGD against the exact linearised recursion at the balanced teacher point."""
    model = LinearNet(n_in=3, n_hidden=2, n_out=2, teacher_singular_values=(1.5, 0.7), noise=0.1, start="teacher")
    params, problem = run_sgd(model, lr=0.25, batch=8, replicas=2000, steps=200, every=20)
    e = np.einsum("rtij,rtjk->rtik", params["w2"], params["w1"]) - problem["teacher"]
    vec = e[:, 3:].reshape(e.shape[0], -1, 6)  # after 60 steps: slowest rate 2·0.7·0.25·(…) relaxed
    m, se = mean_and_se((vec[..., :, None] * vec[..., None, :]).reshape(*vec.shape[:2], 36))
    exact = stationary_covariance(0.25, 8, 0.1, problem["w1_star"], problem["w2_star"]).ravel()
    assert np.all(np.abs(m - exact) < 5 * se + 1e-9), ((m - exact) / se).reshape(6, 6)
    assert np.max(exact) > 20 * np.max(se)  # the check resolves the covariance


def test_second_moments_against_sgd_exact_not_leading_order():
    """Square degenerate target at α_e = 2s₀α = 1: the exact v is resolved; its leading order
    α_e A²/(2|B|) is off by a factor 2.5 and rejected."""
    model = LinearNet(teacher_singular_values=(1.0, 1.0), noise=0.1, start="teacher")
    params, problem = run_sgd(model, lr=0.5, batch=16, replicas=2000, steps=100, every=10)
    e = np.einsum("rtij,rtjk->rtik", params["w2"], params["w1"]) - problem["teacher"]
    v, v_se = mean_and_se(np.mean(e[:, 2:].reshape(e.shape[0], -1, 4) ** 2, axis=-1))
    exact = stationary_entry_var(0.5, 16, 0.1, 1.0, 2)
    assert abs(v - exact) < 5 * v_se
    assert abs(v - 1.0 * 0.01 / 32) > 5 * v_se
    # per-layer levels are the product's singular values (balanced); their mean spacing
    g1 = np.linalg.eigvalsh(np.einsum("rtij,rtkj->rtik", params["w1"], params["w1"]))[:, 2:]
    s, s_se = mean_and_se(g1[..., 1] - g1[..., 0])
    # ⟨S⟩ of a Gaussian 2×2 GOE with the exact τ²; the law of E is Gaussian to leading order only
    assert abs(s / layer_mean_spacing(0.5, 16, 0.1, 1.0) - 1) < 5 * s_se / s + 0.02


def test_balance_step_identity():
    """ΔD = α²(W₂ᵀGGᵀW₂ − W₁GᵀGW₁ᵀ) exactly, for any G (one step of the update)."""
    rng = np.random.default_rng(1)
    w1, w2, g = rng.standard_normal((3, 5)), rng.standard_normal((4, 3)), rng.standard_normal((4, 5))
    lr = 0.3
    d = lambda a, b: a @ a.T - b.T @ b  # noqa: E731
    n1, n2 = w1 - lr * w2.T @ g, w2 - lr * g @ w1.T
    np.testing.assert_allclose(d(n1, n2) - d(w1, w2), lr**2 * (w2.T @ g @ g.T @ w2 - w1 @ g.T @ g @ w1.T),
                               rtol=1e-12, atol=1e-12)


def gd_balance_drift(lr, time, x, problem, w1, w2):
    """|D(τ) − D(0)|_F after noiseless full-batch GD for a time τ = α n."""
    model = LinearNet(n_in=3, n_hidden=2, n_out=2, noise=0.0)
    batch = {"x": x, "a": jnp.zeros((x.shape[0], 2, 3))}
    mask = jnp.ones(x.shape[0])
    hp = {"noise": 0.0}

    def body(params, _):
        _, g, _ = model.loss_and_grad(params, (), batch, mask, None, problem, hp)
        return jax.tree_util.tree_map(lambda p, q: p - lr * q, params, g), None

    params, _ = jax.lax.scan(body, {"w1": w1, "w2": w2}, None, length=int(round(time / lr)))
    d = lambda p: p["w1"] @ p["w1"].T - p["w2"].T @ p["w2"]  # noqa: E731
    return float(jnp.linalg.norm(d(params) - d({"w1": w1, "w2": w2}))), params


def test_gradient_flow_conserves_balance():
    """D is conserved by gradient flow: over a fixed time its change under GD is O(α), halving
    with α (the Euler error of a conserved quantity), while the weights move by O(1)."""
    with enable_x64():
        rng = np.random.default_rng(2)
        model = LinearNet(n_in=3, n_hidden=2, n_out=2, teacher_singular_values=(1.2, 0.8), noise=0.0)
        problem = model.problem(jax.random.key(3))
        x = jnp.asarray(rng.standard_normal((256, 3)))
        w1, w2 = jnp.asarray(0.3 * rng.standard_normal((2, 3))), jnp.asarray(0.3 * rng.standard_normal((2, 2)))
        drifts = []
        for lr in (4e-3, 2e-3, 1e-3):
            drift, params = gd_balance_drift(lr, 4.0, x, problem, w1, w2)
            drifts.append(drift)
        moved = float(jnp.linalg.norm(params["w1"] - w1))
        assert moved > 0.3
        # ratios 2 up to the O(α) term of the Euler error
        assert drifts[0] / drifts[1] == pytest.approx(2.0, rel=0.02)
        assert drifts[1] / drifts[2] == pytest.approx(2.0, rel=0.01)
        assert drifts[2] < 1e-2 * moved


def test_sgd_balance_drift_of_predicted_order():
    """At a balanced square point D random-walks with per-step variance α⁴s₀²A⁴/|B|² times 2N
    off the diagonal and 4(N − 1) on it (leading order in α; N = 3 tells the two apart):
    Var(D(t) − D(0)) = t times that. The O(α_e) excess (≈ 1.2 at α_e = 0.1) is ≈ 5% at α_e = 0.02,
    below the 5 standard errors (≈ 16%) of 2000 replicas."""
    with enable_x64():
        lr, batch, noise, steps = 0.01, 16, 0.1, 200
        model = LinearNet(n_in=3, n_hidden=3, n_out=3, teacher_singular_values=(1.0, 1.0, 1.0), noise=noise,
                          start="teacher")
        params, _ = run_sgd(model, lr, batch, replicas=2000, steps=steps, every=steps)
        d = np.einsum("rtij,rtkj->rtik", params["w1"], params["w1"]) - np.einsum("rtji,rtjk->rtik", params["w2"], params["w2"])
        drift = d[:, -1] - d[:, 0]
        off, diag = balance_step_var(lr, batch, noise, 1.0, 3)
        for x, per_step in ((drift[:, 0, 1], off), (drift[:, 2, 2], diag)):
            var, var_se = float(np.mean(x**2)), float(np.std(x**2, ddof=1) / math.sqrt(x.size))
            assert abs(var - steps * per_step) < 5 * var_se, (var / (steps * per_step), var_se / var)


def test_teacher_is_a_fixed_point_of_noiseless_gd():
    with enable_x64():
        model = LinearNet(n_in=4, n_hidden=3, n_out=3, teacher="product", teacher_hidden=3, noise=0.0, start="teacher")
        problem = model.problem(jax.random.key(5))
        params, _ = model.init(jax.random.key(6), problem, {"init_std": 0.0})
        x = jax.random.normal(jax.random.key(7), (64, 4))
        batch = {"x": x, "a": jax.random.normal(jax.random.key(8), (64, 3, 4))}
        loss, grads, _ = model.loss_and_grad(params, (), batch, jnp.ones(64), None, problem, {"noise": 0.0})
        assert float(loss) < 1e-28
        assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads)) < 1e-14
        # and off it the gradient is not zero, and descends the loss
        off = {"w1": params["w1"] * 1.01, "w2": params["w2"]}
        loss1, grads1, _ = model.loss_and_grad(off, (), batch, jnp.ones(64), None, problem, {"noise": 0.0})
        step = jax.tree_util.tree_map(lambda p, g: p - 0.01 * g, off, grads1)
        assert float(model.loss(step, batch, jnp.ones(64), problem, {})) < float(loss1)


@pytest.mark.parametrize("tx", [lambda lr: optax.sgd(lr, momentum=0.9), optax.adam])
def test_any_optax_transform_trains_both_layers(tx):
    """From a small random init both layers learn a rank-2 product target (no noise)."""
    model = LinearNet(n_in=4, n_hidden=3, n_out=3, teacher="product", teacher_hidden=2, noise=0.0)
    params, problem = run_sgd(model, 0.02, 16, replicas=4, steps=600, every=600, tx=tx, init_std=0.3)
    err = np.einsum("rtij,rtjk->rtik", params["w2"], params["w1"]) - problem["teacher"]
    start, end = (np.sum(err[:, k] ** 2, axis=(1, 2)) for k in (0, -1))
    assert np.all(end < 1e-4 * start), (start, end)


def test_gradient_is_that_of_the_objective():
    model = LinearNet(n_in=3, n_hidden=2, n_out=4, teacher="product", noise=0.3)
    problem = model.problem(jax.random.key(0))
    params, _ = model.init(jax.random.key(1), problem, {"init_std": 0.5})
    batch = jax.vmap(lambda k: model.sample(k, problem))(jax.random.split(jax.random.key(2), 6))
    mask = jnp.array([1.0, 1, 1, 1, 0, 0])
    hp = {"noise": 0.3}
    _, grads, _ = jax.jit(model.loss_and_grad)(params, (), batch, mask, None, problem, hp)
    want = jax.jit(jax.grad(model.objective))(params, batch, mask, problem, hp)
    for k in ("w1", "w2"):
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-5, atol=1e-6)


def test_bad_settings_name_the_field():
    for kw, field in ((dict(n_hidden=0), "model.n_hidden"), (dict(teacher="x"), "model.teacher"),
                      (dict(start="zero"), "model.start"), (dict(noise=-1.0), "model.noise"),
                      (dict(teacher_singular_values=(1.0, 1.0, 1.0)), "model.teacher_singular_values"),
                      (dict(teacher="matrix", teacher_matrix=((1.0,),)), "model.teacher_matrix")):
        with pytest.raises(ValueError, match=field):
            LinearNet(**kw)


def test_runner_records_both_layers(tmp_path, write_config, protocol="fixed",
                                    ensemble={"problem": "replica", "inputs": "run", "noise": "point"}):  # noqa: B006
    """Through the runner (a finite dataset, the teacher per replica; the online protocol runs in
    the slow tests' presets)."""
    data = 'protocol = "online"' if protocol == "online" else 'protocol = "fixed"\nn_data = 32'
    ens = "\n".join(f'{k} = "{v}"' for k, v in ensemble.items())
    cfg = write_config(f"""
name = "ln"
replicas = 3
steps = 20
snapshot_every = 10
[model]
name = "linear_net"
n_in = 3
n_hidden = 2
n_out = 2
teacher = "product"
[train]
lr = 0.05
batch_size = 4
[data]
{data}
[ensemble]
{ens}
[[sweep]]
lr = [0.05, 0.1]
""")
    res = dbm.run(cfg, out=tmp_path / "out")
    assert res["gram1"].shape == (2, 3, 3, 2) and res["gram2"].shape == (2, 3, 3, 2)
    assert res["product_sv2"].shape == (2, 3, 3, 2) and res["balance"].shape == (2, 3, 3, 2)
    w1w1 = res["gram1"].sum(-1) - res["gram2"].sum(-1)  # tr D from the two spectra
    np.testing.assert_allclose(w1w1, res["balance"].sum(-1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["product_sv2"], res["svals"] ** 2, rtol=1e-4, atol=1e-6)
    lead = {"replica": (2, 3), "point": (2,), "run": ()}[ensemble.get("problem", "run")]
    assert res["problem_teacher"].shape == lead + (2, 3)


# ---------------------------------------------------------------------------------------
# heavy checks: the shipped presets end to end (`make test-slow`)


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory):
    from dysonbm import presets

    return dbm.run(presets.path("linear_net_quick"), out=tmp_path_factory.mktemp("ln") / "pairs")


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    from dysonbm import presets

    return dbm.run(presets.path("linear_net_wide"), out=tmp_path_factory.mktemp("ln") / "wide")


@pytest.mark.slow
@pytest.mark.parametrize("species", ["gram1", "gram2", "product_sv2"])
def test_pairs_one_line_through_the_origin_and_the_surmise(pairs_run, species):
    """α-sweep and |B|-sweep together: ⟨S⟩ and √π σ of each species on one line of slope 1
    (theory) within 5 standard errors; pooled spacings within KS 0.03 of the β = 1 surmise."""
    from dysonbm.analysis import scaling

    an = scaling.analyse(pairs_run, observable=species)
    assert len(an.stats) == 7
    for q in ("mean_s", "sqrtpi_sigma"):
        f = an.fits[q]
        assert abs(f.slope - 1.0) < 5 * f.slope_err, (q, f.slope, f.slope_err)
        assert np.all(np.abs(f.pull) < 5), (q, f.pull)
    assert an.pooled_ks[0] <= 0.03
    assert all(s.ks_d <= 0.03 for s in an.stats)


@pytest.mark.slow
@pytest.mark.parametrize("species", ["gram1", "gram2", "product_sv2"])
def test_wide_levels_follow_the_predicted_semicircle(wide_run, species):
    """N = 32: the second moment of each species' levels within 5 standard errors of
    (N + 1)τ² (c² for σ²) plus, for the layers, ⟨tr D²⟩/(4N) of the recorded D; the
    pooled levels within KS 0.03 of the finite-N GOE and of the semicircle of the predicted
    radius; the centre at its second-order prediction within 5% of the level spread."""
    from dysonbm.analysis.linear_net import semicircle_check

    c = semicircle_check(wide_run, 0, species)
    assert abs(c.second_moment - c.second_moment_measured_d) < 5 * c.second_moment_err
    assert c.ks_goe[0] <= 0.03 and c.ks_semicircle[0] <= 0.03
    assert abs(c.centre - c.centre_pred) < 0.05 * math.sqrt(c.second_moment)
    assert abs(c.mean_r[0] - 0.5307) < 5 * c.mean_r[1] + 0.002  # finite-N GOE ⟨r⟩ is within 0.002 of 0.5307


@pytest.mark.slow
def test_level_sde_with_measured_coefficients_matches_sgd(wide_run):
    """The β = 1 DBM with γ, D measured from the SGD centre of mass reproduces the stationary
    σ² levels (second moment within 5 combined standard errors, KS ≤ 0.03), and γ, D agree with
    the exact discrete-map values −ln(1 − α_e)/α and γ·v within 5 standard errors."""
    from dysonbm.analysis.linear_net import level_sde_check

    c = level_sde_check(wide_run, 0, "product_sv2")
    (m1, e1), (m2, e2) = c.sgd_second_moment, c.sde_second_moment
    assert abs(m1 - m2) < 5 * math.hypot(e1, e2)
    assert c.ks_levels[0] <= 0.03 and c.ks_spacing[0] <= 0.03
    gamma_exact = -math.log(1 - 0.2) / 0.1
    assert abs(c.gamma - gamma_exact) < 5 * c.gamma_err
    v = stationary_entry_var(0.1, 16, 0.1, 1.0, 32)
    assert abs(c.D - 4 * gamma_exact * v) < 5 * c.D_err
