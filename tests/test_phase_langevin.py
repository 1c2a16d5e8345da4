"""The cross-check helpers of `dysonbm.analysis.level_sde` and the level terms the multilayer model
records for it (the integrator itself: tests/test_level_sde.py)."""

import jax
import numpy as np
import pytest

from dysonbm import observables as obs
from dysonbm.analysis import level_sde as pl
from dysonbm.models import multilayer
from dysonbm.models.multilayer import Multilayer

from conftest import enable_x64


def test_level_terms_match_finite_differences_and_direct_formula():
    with enable_x64():
        model = Multilayer(level_sde=True)
        problem = model.problem(jax.random.key(0))
        test = jax.vmap(lambda k: model.sample(k, problem))(jax.random.split(jax.random.key(2), 64))
        w = model.init(jax.random.key(3), problem, {"init_std": 1.0})[0]
        observe = jax.jit(lambda v: model.observables(v, w, problem, test, {}))
        out = observe(w)
        x = np.asarray(out["gram"])
        uu, ss, vt = np.linalg.svd(np.asarray(w), full_matrices=False)
        for i in (0, 7, 15):  # singular index (descending); stored level j (ascending)
            j = len(ss) - 1 - i
            d = np.outer(uu[:, i], vt[i]) * 1e-5 * ss[i]
            hi, lo = (observe(w + sgn * d) for sgn in (1, -1))
            slope = (hi["sde_drift"][j] - lo["sde_drift"][j]) / (hi["gram"][j] - lo["gram"][j])
            np.testing.assert_allclose(out["sde_stiffness"][j], -slope, rtol=1e-5, atol=1e-10)
        g = np.asarray(multilayer.per_sample_grads_from_features(w, problem["Z"], test["phi0"], test["y"]))
        U = np.linalg.eigh(np.asarray(w @ w.T))[1]
        ito = np.einsum("ai,nal->nil", U, g).var(axis=0).sum(axis=-1)
        np.testing.assert_allclose(out["sde_ito"], ito, rtol=1e-8, atol=1e-14)
        # without training data every coefficient is the test set's: the published criterion's
        np.testing.assert_allclose(out["sde_drift"], out["level_drift"], rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(out["sde_noise"], out["pair_noise"], rtol=1e-9, atol=1e-13)
        assert np.all(np.diff(x) >= 0)


def test_data_step_terms_expand_the_levels_of_a_step_to_second_order():
    """x_i(W + αG) = x_i + α K̄_ii + α² S_ii + O(α³): the second-order residual is far below the
    first-order one, and shrinks as α³."""
    with enable_x64():
        rng = np.random.default_rng(5)
        w, g = rng.normal(size=(6, 11)), rng.normal(size=(6, 11))
        k_bar, s = (np.asarray(a) for a in obs.data_step_terms(w, g))  # levels descending
        x = np.linalg.eigvalsh(w @ w.T)[::-1]
        resid = {}
        for a in (2e-4, 1e-4):
            exact = np.linalg.eigvalsh((w + a * g) @ (w + a * g).T)[::-1]
            first = np.abs(exact - x - a * k_bar)
            resid[a] = np.abs(exact - x - a * k_bar - a * a * s)
            assert np.all(resid[a] < 1e-2 * first), (resid[a], first)
        assert np.all(resid[2e-4] > 6 * resid[1e-4])


def test_sde_coefficients_are_measured_on_the_training_data_padding_excluded():
    """The drift is the full-batch one over the unmasked training samples, the noise, Itô and
    slope terms are over the first n_test of them; padded samples weigh nothing."""
    with enable_x64():
        model = Multilayer(level_sde=True)
        problem = model.problem(jax.random.key(0))
        draw = lambda key, n: jax.vmap(lambda k: model.sample(k, problem))(jax.random.split(key, n))  # noqa: E731
        test, train = draw(jax.random.key(2), 16), draw(jax.random.key(5), 48)
        w0 = model.init(jax.random.key(3), problem, {"init_std": 1.0})[0]
        w = w0 + 0.3 * jax.random.normal(jax.random.key(4), w0.shape)
        mask = (np.arange(48) < 40).astype(float)
        poisoned = {k: v.at[40:].set(1e3) for k, v in train.items()}  # padding: must not count
        out = model.observables(w, w0, problem, test, {}, data=(poisoned, mask))
        full = {k: v[:40] for k, v in train.items()}
        g = np.asarray(multilayer.per_sample_grads_from_features(w, problem["Z"], full["phi0"], full["y"]))
        k_bar, step = obs.data_step_terms(w, g.mean(axis=0))
        np.testing.assert_allclose(out["sde_drift"], np.asarray(k_bar)[::-1], rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(out["sde_step"], np.asarray(step)[::-1], rtol=1e-9, atol=1e-13)
        # noise and Itô on the first n_test = 16 training samples, as the test set's formulas
        sub = model.observables(w, w0, problem, {k: v[:16] for k, v in train.items()}, {})
        for name in ("sde_noise", "sde_ito", "sde_stiffness"):
            np.testing.assert_allclose(out[name], sub[name], rtol=1e-9, atol=1e-13, err_msg=name)
        # and a subset that reaches into the padding leaves it out
        short = model.observables(w, w0, problem, draw(jax.random.key(6), 44), {}, data=(poisoned, mask))
        ref = model.observables(w, w0, problem, draw(jax.random.key(6), 40), {}, data=(full, np.ones(40)))
        for name in ("sde_drift", "sde_noise", "sde_ito", "sde_stiffness"):
            np.testing.assert_allclose(short[name], ref[name], rtol=1e-9, atol=1e-13, err_msg=name)


def test_regime_rule():
    z = {"u": 0.0, "d": 0.0, "top": 0.0}
    assert pl.regime({"u": 0.01, "d": -0.02, "top": 0.05}) == "frozen"
    assert pl.regime({"u": 0.5, "d": -0.2, "top": 0.4}, z) == "convergence"
    assert pl.regime({"u": 1.5, "d": 1.4, "top": 1.5}) == "growth"
    # a sign within two standard errors decides nothing
    assert pl.regime({"u": 1.5, "d": 0.3, "top": 1.5}, {"u": 0.1, "d": 0.2, "top": 0.1}) == "undetermined"
    assert pl.regime({"u": np.nan, "d": 1.0, "top": 1.0}) == "undetermined"


def test_log_changes():
    teacher = np.array([3.0, 1.0, 0.5])
    a = np.array([[2.0, 1.0, 0.0]])
    b = np.array([[5.0, 1.5, 0.0]])
    ch = pl.log_changes(a, b, teacher)
    np.testing.assert_allclose(ch["u"], np.log(2.5))
    np.testing.assert_allclose(ch["top"], np.log(2.5))
    np.testing.assert_allclose(ch["d"], np.log(2.0))  # max |x − x*|: 1 (level 1) → 2 (level 1)


class _FakeResults(dict):
    """The few fields of a multilayer `Results` that `interval_inputs` reads, one grid point."""

    def __init__(self, fields, steps):
        super().__init__({k: v[None] for k, v in fields.items()})
        self.steps = np.asarray(steps)
        self.diverged = np.zeros((1, fields["gram"].shape[0]), bool)

    def hp(self, name):
        return np.array([{"lr": 0.1, "batch_size": 10.0}[name]])


@pytest.mark.parametrize("stored", ["descending", "ascending"])
def test_interval_inputs_sort_levels_and_move_coefficients_with_them(stored):
    """Whatever order the store keeps, the levels come out ascending and every coefficient
    (Ṽ on both axes) belongs to the same level as before."""
    rng = np.random.default_rng(0)
    R, S, K = 2, 3, 4
    x = np.sort(rng.uniform(1, 10, (R, S, K)), axis=-1)
    drift, ito, gamma = (10 * x + k for k in (1, 2, 3))  # each a function of its level
    pair = 100 * x[..., :, None] + x[..., None, :]  # Ṽ_ij identifies (x_i, x_j)
    if stored == "descending":
        x, drift, ito, gamma = (a[..., ::-1] for a in (x, drift, ito, gamma))
        pair = pair[..., ::-1, ::-1]
    fields = {"gram": x, "level_drift": drift, "pair_noise": pair, "level_ito": ito, "level_stiffness": gamma}
    res = _FakeResults(fields, [0, 10, 20])
    inp = pl.interval_inputs(res, 0)
    xs = inp["x_start"]
    assert np.all(np.diff(xs, axis=-1) > 0)
    c = inp["coef"]
    np.testing.assert_allclose(c.stiffness, 10 * xs + 3)
    np.testing.assert_allclose(c.drift, 10 * xs + 1 + c.stiffness * xs)
    np.testing.assert_allclose(c.ito, 10 * xs + 2)
    np.testing.assert_allclose(c.pair, 100 * xs[..., :, None] + xs[..., None, :])


def test_velocity_is_drift_ito_and_coulomb_push():
    x, pair = np.array([1.0, 3.0]), np.array([[9.0, 0.5], [0.5, 7.0]])
    v = pl.velocity(x, np.array([0.1, -0.2]), pair, np.array([2.0, 4.0]), 0.25)
    np.testing.assert_allclose(v, [0.1 + 0.25 * 2.0 + 0.25 * 0.5 / -2.0, -0.2 + 0.25 * 4.0 + 0.25 * 0.5 / 2.0])


def test_interval_inputs_take_the_training_data_coefficients_where_stored():
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(1, 10, (2, 3, 4)), axis=-1)
    fields = {"gram": x, "level_drift": 10 * x, "pair_noise": x[..., :, None] * x[..., None, :],
              "level_ito": 0 * x, "level_stiffness": 0 * x,
              "sde_drift": 3 * x, "sde_step": 7 * x, "sde_noise": x[..., :, None] + x[..., None, :],
              "sde_ito": 5 * x, "sde_stiffness": 0 * x}
    inp = pl.interval_inputs(_FakeResults(fields, [0, 10, 20]), 0)
    xs = inp["x_start"]
    np.testing.assert_allclose(inp["coef"].drift, 3 * xs + 0.1 * 7 * xs)
    np.testing.assert_allclose(inp["coef"].pair, xs[..., :, None] + xs[..., None, :])
    np.testing.assert_allclose(inp["coef"].ito, 5 * xs)
