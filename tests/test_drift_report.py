"""The drift criterion both ways (published: final weights, Ṽ_paper; alongside: a majority of late
snapshots, the SDE's Ṽ), T_c with its error and the published units, on synthetic results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dysonbm.analysis import phases
from dysonbm.io import Results
from dysonbm.models.multilayer import Multilayer
from dysonbm.plots import phase_diagram as phase_plots
from dysonbm.reproduce import phase_diagram

import multilayer_reference as mlp

K, L, R, S = 16, 32, 40, 5
T_VALUES = np.array([0.125, 0.5, 2.0, 8.0, 32.0, 128.0])
SIGMAS = np.array([0.25, 4.0])
# replicas passing at the weakest disorder, per T: K_t = c · threshold of the paper's V_t = 1,
# c = 3 passes with the SDE's V_t = 2 too, c = 1.5 with the paper's only, c = 0.5 with neither
BOTH = np.array([40, 32, 20, 8, 0, 0])  # final/sde: 1, 0.8, 0.5, 0.2, 0, 0
PAPER = np.array([40, 40, 36, 20, 4, 0])  # final/paper: 1, 1, 0.9, 0.5, 0.1, 0
MAJOR = np.array([40, 40, 40, 30, 10, 0])  # majority of the late snapshots (either V)


def synthetic(with_paper=True):
    P = SIGMAS.size * T_VALUES.size
    sw = np.repeat(SIGMAS, T_VALUES.size)
    T = np.tile(T_VALUES, SIGMAS.size)
    thr = np.sqrt(L / K) * (K - 1) * T / (4 * sw**2)  # K_t at equality for V_t = 1
    r = np.arange(R)[None, :]
    both, paper, major = (np.tile(a, SIGMAS.size)[:, None] for a in (BOTH, PAPER, MAJOR))
    c_final = np.where(r < both, 3.0, np.where(r < paper, 1.5, 0.5))
    c_late = np.where(r < major, 3.0, 0.5)
    K_t = np.empty((P, R, S))
    K_t[..., :-1] = (thr[:, None] * c_late)[..., None]
    K_t[..., -1] = thr[:, None] * c_final
    rng = np.random.default_rng(0)
    gram = np.sort(rng.uniform(0.1, 3.0, (P, R, S, K)), axis=-1)[..., ::-1]
    arrays = {
        "gram": gram, "test_loss": rng.uniform(0.1, 1.0, (P, R, S)), "q": rng.uniform(0, 1, (P, R, S)),
        "hs": rng.uniform(-1, 1, (P, R, S)), "mean_spacing": np.exp(rng.normal(size=(P, R, S))),
        "K_t": K_t, "V_t": np.full((P, R, S), 2.0), "diverged": np.zeros((P, R), bool),
    }
    if with_paper:
        arrays["V_t_paper"] = np.ones((P, R, S))
    manifest = {"points": [{"lr": 4 * t, "batch_size": 4, "init_std": s} for s, t in zip(sw, T)],
                "steps": [0, 1000, 2000, 3000, 4000],
                "config": {"name": "synthetic", "model": {"name": "multilayer", "hidden": L},
                           "data": {"protocol": "fixed", "batches_per_epoch": 1000, "n_test": 128}}}
    return Results(manifest, arrays, {})


def _log_interp(i, f_i, f_j, level=0.68):
    lt = np.log(T_VALUES)
    return float(np.exp(lt[i] + (f_i - level) / (f_i - f_j) * (lt[i + 1] - lt[i])))


@pytest.fixture(scope="module")
def summary():
    return phases.assemble(synthetic(), teacher_spectrum=np.linspace(3, 0.1, K))


def test_assemble_uses_the_published_criterion_and_keeps_the_others(summary):
    weak = summary["init_std"] == SIGMAS.min()
    assert summary["drift_rule"] == "final/paper"
    np.testing.assert_allclose(summary["drift_fraction"][weak], PAPER / R)
    fr = summary["drift_fractions"]
    assert set(fr) == set(phases.DRIFT_VARIANTS)
    np.testing.assert_allclose(fr["final/paper"][weak], PAPER / R)
    np.testing.assert_allclose(fr["final/sde"][weak], BOTH / R)
    np.testing.assert_allclose(fr["majority/paper"][weak], MAJOR / R)
    np.testing.assert_allclose(fr["majority/sde"][weak], MAJOR / R)
    np.testing.assert_array_equal(summary["passes"], summary["drift_passes"]["final/paper"])


def test_critical_temperature_with_error_per_variant(summary):
    tc = summary["T_c"]
    # published: 0.9 at T = 2, 0.5 at T = 8; the SDE's: 0.8 at T = 0.5, 0.5 at T = 2
    assert tc["final/paper"]["T_c"] == pytest.approx(_log_interp(2, 0.9, 0.5), rel=1e-12)
    assert tc["final/sde"]["T_c"] == pytest.approx(_log_interp(1, 0.8, 0.5), rel=1e-12)
    assert tc["final/paper"]["init_std"] == SIGMAS.min()
    for v in tc.values():
        assert v["replicas"] == R and v["n_boot"] == phases.TC_BOOTSTRAP
    # bootstrap error of a binomial crossing: about sqrt(f(1 − f)/R)/|slope| in ln T
    err = tc["final/paper"]["err"]
    f_slope = (0.9 - 0.5) / np.log(4.0)
    assert err / tc["final/paper"]["T_c"] == pytest.approx(np.sqrt(0.68 * 0.32 / R) / f_slope, rel=0.5)
    assert tc["final/paper"]["lo"] < tc["final/paper"]["T_c"] < tc["final/paper"]["hi"]


def test_published_units(summary):
    paper = summary["paper"]
    np.testing.assert_allclose(paper["loss"], 2 * summary["loss"])
    np.testing.assert_allclose(paper["hs"], summary["hs"] / 128)
    np.testing.assert_allclose(paper["lam"], 1000 * summary["lam"])
    assert summary["n_test"] == 128


def test_report_sections_state_the_criterion_the_error_and_the_units(summary):
    note = phase_diagram.drift_note(summary)
    assert "`final/paper`" in note and "Ṽ_{K,K−k}" in note and "not recorded" not in note
    tc_text = "\n".join(phase_diagram.critical_temperature_section(summary))
    tc = summary["T_c"]["final/paper"]
    assert f"**T_c = {tc['T_c']:.3g} ± {tc['err']:.2g}**" in tc_text
    assert "final/paper (published)" in tc_text and "| final/sde |" in tc_text
    assert f"{phases.TC_BOOTSTRAP} bootstrap resamples of the {R} replicas" in tc_text
    table = "\n".join(phase_diagram.fraction_section(summary))
    assert "loss_paper = 2·loss" in table and "hs_paper = hs/n_test (n_test = 128)" in table
    assert "lam × 1000 steps per epoch" in table
    for name in ("drift final/sde", "drift majority/paper", "hs_paper", "lam_epoch"):
        assert name in table
    assert "- `final/paper` (published):" in table


def test_without_the_papers_noise_the_sde_final_rule_leads(tmp_path):
    s = phases.assemble(synthetic(with_paper=False), teacher_spectrum=np.linspace(3, 0.1, K))
    assert s["drift_rule"] == "final/sde"
    assert set(s["drift_fractions"]) == {"final/sde", "majority/sde"}
    weak = s["init_std"] == SIGMAS.min()
    np.testing.assert_allclose(s["drift_fraction"][weak], BOTH / R)
    assert "did not record V_t_paper" in phase_diagram.drift_note(s)
    assert phase_plots.phase_map(s, tmp_path / "m.png").stat().st_size > 10_000


def test_multilayer_records_both_noise_matrices():
    model = Multilayer()
    problem = model.problem(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (64, model.d_in))
    phi0 = jnp.tanh(x @ problem["M"].T)
    y = model.output(problem["teacher"], phi0, problem["Z"])
    w0 = model.init(jax.random.key(2), problem, {"init_std": 1.0})[0]
    out = jax.jit(lambda w: model.observables(w, w0, problem, {"phi0": phi0, "y": y}, {}))(w0)
    k_t, v_t, extra = mlp.drift_coulomb_from_features(w0, problem["Z"], phi0, y)
    np.testing.assert_allclose(out["V_t"], v_t, rtol=1e-5)
    v_t_paper = phases.coulomb_term(out["pair_noise_paper"])  # formed on the host from the recorded matrix
    np.testing.assert_allclose(v_t_paper, extra["V_t_paper"], rtol=1e-4)
    # recorded in the ascending order of the levels; computed in the published descending basis
    np.testing.assert_allclose(out["pair_noise_paper"], extra["noise_paper"][::-1, ::-1], rtol=1e-4, atol=1e-7)
    # the SDE's Ṽ is a variance, the paper's a rotated one: negative entries there only
    assert np.all(np.asarray(out["pair_noise"]) >= 0) and np.any(np.asarray(out["pair_noise_paper"]) < 0)
    assert float(v_t_paper) != pytest.approx(float(out["V_t"]), rel=0.05)
    np.testing.assert_allclose(phases.coulomb_term(out["pair_noise"]), out["V_t"], rtol=1e-5)
    axes = model.observable_axes()
    assert axes["pair_noise_paper"] == ("level", "level2")
