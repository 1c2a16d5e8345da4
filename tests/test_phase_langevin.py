"""The cross-check helpers of `dysonbm.analysis.level_sde` and the level terms the multilayer model
records for it (the integrator itself: tests/test_level_sde.py)."""

import jax
import numpy as np
import pytest

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
            slope = (hi["level_drift"][j] - lo["level_drift"][j]) / (hi["gram"][j] - lo["gram"][j])
            np.testing.assert_allclose(out["level_stiffness"][j], -slope, rtol=1e-5, atol=1e-10)
        g = np.asarray(multilayer.per_sample_grads_from_features(w, problem["Z"], test["phi0"], test["y"]))
        U = np.linalg.eigh(np.asarray(w @ w.T))[1]
        ito = np.einsum("ai,nal->nil", U, g).var(axis=0).sum(axis=-1)
        np.testing.assert_allclose(out["level_ito"], ito, rtol=1e-8, atol=1e-14)
        assert np.all(np.diff(x) >= 0)


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
