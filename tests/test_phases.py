"""Phase labels, fractions, the classifier comparison and the critical temperature."""

import numpy as np
import pytest

from dysonbm.analysis import phases

K = 16
_rng = np.random.default_rng(0)
X0 = np.sort(_rng.uniform(0.1, 3.0, K))[::-1]  # an initial spectrum (descending)
TEACHER = np.sort(_rng.uniform(0.1, 3.0, K))[::-1]


def _one(loss=0.5, loss0=1.0, x_t=None, q=0.2, finite=True, teacher=TEACHER, **kw):
    """Classify a single replica; spectrum_0 is X0 throughout."""
    x_t = X0 if x_t is None else x_t
    return str(phases.classify_observables(loss, loss0, x_t, X0, q, finite, teacher, **kw))


# ---------------------------------------------------------------------------------------
# each label from a constructed case
# ---------------------------------------------------------------------------------------
def test_each_label_has_a_case():
    assert _one(loss=np.nan) == "divergent"
    assert _one(x_t=np.full(K, np.inf)) == "divergent"
    assert _one(finite=False) == "divergent"
    # converged to 1e-6 of the initial loss with the teacher's spectrum (to 1%)
    assert _one(loss=1e-6, x_t=TEACHER * 1.01) == "ordered"
    # spectrum within 5% of its start, features still 90% the initial ones
    assert _one(loss=0.9, x_t=X0 * 1.05, q=0.9) == "glassy"
    # spectrum spreading (×3), loss stuck at 0.8 since the earlier snapshot
    assert _one(loss=0.8, x_t=X0 * 3.0, q=0.1, loss_prev=0.8) == "paramagnetic"
    # frozen but low overlap, shrinking spectrum: no rule applies
    assert _one(loss=0.5, x_t=X0 * 0.95, q=0.2) == "unresolved"


def test_ordered_needs_both_convergence_and_the_teacher_spectrum():
    assert _one(loss=2e-2, x_t=TEACHER) != "ordered"  # not below loss0/100
    assert _one(loss=1e-6, x_t=TEACHER + 0.5) != "ordered"  # spectrum off by 0.5 > 0.1·max
    assert _one(loss=1e-6, x_t=TEACHER + 0.5, teacher=None) == "ordered"  # spectral test skipped
    # only the leading levels compared: a wrong smallest level is tolerated
    teacher = np.linspace(3.0, 1.0, K)
    off = teacher.copy()
    off[-1] = 0.2  # still the smallest level, 0.8 away from the teacher's (> 0.1·3)
    assert _one(loss=1e-6, x_t=off, teacher=teacher) != "ordered"
    assert _one(loss=1e-6, x_t=off, teacher=teacher, teacher_levels=K - 1) == "ordered"
    # spectra given in ascending order are sorted before comparing
    assert _one(loss=1e-6, x_t=TEACHER[::-1]) == "ordered"


def test_paramagnetic_needs_growth_and_a_plateau():
    assert _one(loss=0.8, x_t=X0 * 0.5, q=0.1) != "paramagnetic"  # shrinking spacings
    assert _one(loss=0.8, x_t=X0 * 3.0, q=0.1, loss_prev=1.6) != "paramagnetic"  # still falling
    assert _one(loss=0.8, x_t=X0 * 3.0, q=0.1, loss_prev=1.6, plateau_rtol=0.6) == "paramagnetic"
    assert _one(loss=1e-3, x_t=X0 * 3.0, q=0.1, teacher=None) == "ordered"  # converged, not plateaued


def test_order_of_precedence():
    # divergent > everything: a non-finite flag overrides an otherwise ordered replica
    assert _one(loss=1e-6, x_t=TEACHER, finite=False) == "divergent"
    # ordered > glassy: converged onto a teacher equal to the initial (frozen) spectrum, high q
    assert _one(loss=1e-6, x_t=X0 * 1.01, q=0.99, teacher=X0) == "ordered"
    # glassy > paramagnetic: 5% growth of the spacing with a plateau, frozen and high q
    assert _one(loss=0.8, x_t=X0 * 1.05, q=0.9, loss_prev=0.8) == "glassy"
    assert _one(loss=0.8, x_t=X0 * 1.05, q=0.3, loss_prev=0.8) == "paramagnetic"
    # thresholds are keywords: a stricter q moves the glassy replica on to paramagnetic
    assert _one(loss=0.8, x_t=X0 * 1.05, q=0.9, loss_prev=0.8, q_glassy=0.95) == "paramagnetic"


def test_broadcast_over_grid_and_replicas():
    loss = np.array([[1e-6, 0.9], [0.8, np.nan]])  # (grid point, replica)
    x_t = np.stack([[TEACHER, X0 * 1.05], [X0 * 3.0, X0]])
    x_0 = np.broadcast_to(X0, x_t.shape)
    q = np.array([[0.1, 0.9], [0.1, 0.5]])
    labels = phases.classify_observables(loss, 1.0, x_t, x_0, q, None, TEACHER)
    assert labels.shape == (2, 2)
    assert labels.tolist() == [["ordered", "glassy"], ["paramagnetic", "divergent"]]


def test_classify_trajectories_uses_first_last_and_any_nonfinite():
    S = 5
    t = np.linspace(0, 1, S)
    loss = np.stack([1.0 * 10.0 ** (-6 * t), np.full(S, 0.8), np.full(S, 0.8)])  # (R=3, S)
    spectra = np.stack(
        [
            X0 + (TEACHER - X0) * t[:, None],  # flows to the teacher
            X0 * np.exp(t)[:, None],  # grows e-fold
            X0 * np.exp(t)[:, None],
        ]
    )
    q = np.stack([1 - 0.5 * t, 1 - 0.9 * t, 1 - 0.9 * t])
    spectra[2, 2, 0] = np.nan  # a mid-run overflow that later "recovers" is still divergent
    labels = phases.classify_trajectories(loss, spectra, q, TEACHER)
    assert labels.tolist() == ["ordered", "paramagnetic", "divergent"]
    # a loss still falling over the last half of the run is not a plateau
    falling = np.stack([np.full(S, 0.8) * 10.0 ** (-t)] * 2)
    assert phases.classify_trajectories(falling, spectra[:2], q[:2]).tolist()[1] == "unresolved"


# ---------------------------------------------------------------------------------------
# fractions and grids
# ---------------------------------------------------------------------------------------
def test_drift_fraction():
    passes = np.array([[True, True, False, False], [True, True, True, False], [False] * 4])
    np.testing.assert_allclose(phases.drift_fraction(passes), [0.5, 0.75, 0.0])
    valid = np.array([[True, True, True, False], [True] * 4, [False] * 4])
    f = phases.drift_fraction(passes, valid=valid)
    np.testing.assert_allclose(f[:2], [2 / 3, 0.75])
    assert np.isnan(f[2])
    # (grid point, replica, snapshot): reduce the replica axis only
    assert phases.drift_fraction(np.ones((3, 4, 2), bool)).shape == (3, 2)


def test_phase_grid_majority_and_fractions():
    labels = np.array(
        [
            ["ordered", "ordered", "glassy", "paramagnetic"],
            ["paramagnetic"] * 3 + ["divergent"],
            ["glassy", "glassy", "ordered", "ordered"],  # tie: "ordered" precedes "glassy"
            ["unresolved", "divergent", "divergent", "unresolved"],  # tie: "divergent" first
        ]
    )
    grid = phases.phase_grid(labels, grid_shape=(2, 2))
    assert grid["majority"].tolist() == [["ordered", "paramagnetic"], ["ordered", "divergent"]]
    np.testing.assert_allclose(grid["fractions"]["ordered"], [[0.5, 0.0], [0.5, 0.0]])
    np.testing.assert_allclose(grid["fractions"]["paramagnetic"], [[0.25, 0.75], [0.0, 0.0]])
    total = sum(grid["fractions"][name] for name in phases.LABELS)
    np.testing.assert_allclose(total, 1.0)


def test_compare_classifiers_table():
    labels = np.array([["ordered"] * 4, ["paramagnetic"] * 4, ["glassy"] * 4, ["ordered"] * 4])
    frac = np.array([0.99, 0.2, 0.5, 0.7])
    coords = {"T": np.array([0.03, 64.0, 0.03, 1.0]), "init_std": np.array([0.5, 0.5, 4.0, 0.5])}
    rows = phases.compare_classifiers(labels, frac, coords=coords)
    assert [r["majority"] for r in rows] == ["ordered", "paramagnetic", "glassy", "ordered"]
    assert [r["drift_level"] for r in rows] == [0.95, 0.0, 0.0, 0.68]
    assert rows[0]["agree@0.997"] is False and rows[0]["agree@0.95"] is True
    assert rows[1]["agree@0.68"] is True  # paramagnetic and below every level
    assert rows[2]["agree@0.68"] is None  # glassy is outside the drift/Coulomb split
    assert rows[3]["agree@0.68"] is True and rows[3]["agree@0.95"] is False
    assert rows[1]["T"] == 64.0 and rows[0]["f_ordered"] == 1.0
    text = phases.format_comparison(rows)
    assert "agree@0.68: 1.000 of 3" in text
    assert "agree@0.95: 0.667 of 3" in text
    assert len(text.splitlines()) == 1 + len(rows) + 3


# ---------------------------------------------------------------------------------------
# boundaries
# ---------------------------------------------------------------------------------------
def test_critical_temperature_linear_in_log_t_is_exact():
    T = 2.0 ** np.arange(-5, 7)  # the published temperature grid, 0.03125 … 64
    f = np.clip(1.0 - 0.2 * np.log2(T), 0.0, 1.0)  # 0.68 reached at log2 T = 1.6
    assert phases.critical_temperature(T, f, 0.68) == pytest.approx(2.0**1.6, rel=1e-12)
    assert phases.critical_temperature(T, f, 0.95) == pytest.approx(2.0**0.25, rel=1e-12)
    # the order of the T values does not matter
    perm = np.random.default_rng(1).permutation(T.size)
    assert phases.critical_temperature(T[perm], f[perm], 0.68) == pytest.approx(2.0**1.6, rel=1e-12)


def test_critical_temperature_on_a_smooth_curve_and_over_sigma():
    T = 2.0 ** np.arange(-5, 7)
    Tc = np.array([0.7, 3.0, 20.0])[:, None]  # one curve per σ_W
    f = 1.0 / (1.0 + (T / Tc) ** 2)  # crosses 0.5 at T = Tc, smooth in log T
    est = phases.critical_temperature(T, f, 0.5)
    assert est.shape == (3,)
    # log-interpolating between powers of two: a few percent at most
    np.testing.assert_allclose(est, Tc[:, 0], rtol=0.05)
    # no crossing: always ordered, or never
    assert np.isnan(phases.critical_temperature(T, np.ones(T.size), 0.68))
    assert np.isnan(phases.critical_temperature(T, np.zeros(T.size), 0.68))


def test_disorder_line_is_where_tanh_of_a_gaussian_turns_bimodal():
    assert phases.disorder_line**2 == pytest.approx(0.5)

    def log_density(s, sigma):  # s = tanh(u), u ~ N(0, σ²)
        return -np.arctanh(s) ** 2 / (2 * sigma**2) - np.log1p(-(s**2))

    h = 1e-3
    for sigma, peaked in [(0.95 * phases.disorder_line, True), (1.05 * phases.disorder_line, False)]:
        curvature = log_density(h, sigma) - 2 * log_density(0.0, sigma) + log_density(-h, sigma)
        assert (curvature < 0) == peaked


# ---------------------------------------------------------------------------------------
# the drift criterion: final weights (published) or a majority of late snapshots
# ---------------------------------------------------------------------------------------
def _criterion_threshold(K=16, L=32, T=1.0, init_std=1.0, V=1.0):
    """K_t at equality of K_t/(√r (K−1)) ≥ T V_t/(4σ_W²)."""
    return np.sqrt(L / K) * (K - 1) * T * V / (4.0 * init_std**2)


def test_final_and_majority_rules_differ_on_a_constructed_trajectory():
    K, L = 16, 32
    thr = _criterion_threshold(K, L)
    V = np.ones((3, 9))
    K_t = np.zeros((3, 9))
    K_t[0, 5:8] = 2 * thr  # drift-dominated at 3 of the 4 late snapshots, not at the end
    K_t[1, 8] = 2 * thr  # only at the end
    K_t[2, 4:] = 2 * thr  # throughout the late half
    majority = phases.drift_passes(K_t, V, 1.0, 1.0, K, L, rule="majority")
    final = phases.drift_passes(K_t, V, 1.0, 1.0, K, L, rule="final")
    np.testing.assert_array_equal(majority, [True, False, True])
    np.testing.assert_array_equal(final, [False, True, True])
    # the default keeps the majority rule; the published one is asked for by name
    np.testing.assert_array_equal(phases.drift_passes(K_t, V, 1.0, 1.0, K, L), majority)
    # the final rule compares at the threshold itself: K_t just above and just below
    K_t[:, -1] = thr * np.array([1.001, 0.999, 1.0])
    np.testing.assert_array_equal(phases.drift_passes(K_t, V, 1.0, 1.0, K, L, rule="final"), [True, False, True])
    with pytest.raises(ValueError, match="rule"):
        phases.drift_passes(K_t, V, 1.0, 1.0, K, L, rule="last")


def test_paper_and_sde_noise_give_different_verdicts():
    # same K_t, V_t_paper three times smaller than V_t: passes with the paper's, fails with the SDE's
    K, L = 16, 32
    thr = _criterion_threshold(K, L, V=1.0)
    K_t = np.full((1, 5), 1.5 * thr)
    assert not phases.drift_passes(K_t, np.full((1, 5), 3.0), 1.0, 1.0, K, L, rule="final")[0]
    assert phases.drift_passes(K_t, np.full((1, 5), 1.0), 1.0, 1.0, K, L, rule="final")[0]


# ---------------------------------------------------------------------------------------
# T_c with its bootstrap error over replicas
# ---------------------------------------------------------------------------------------
T_GRID = 2.0 ** np.arange(-5, 7)  # the published temperatures
# a drift fraction 1/(1 + (T/T0)²) crossing 0.68 halfway (in log T) between T = 1 and 2
T_CROSS = 2.0**0.5
T0 = T_CROSS / np.sqrt(1 / 0.68 - 1)


def _passes(replicas, seed):
    p = 1.0 / (1.0 + (T_GRID / T0) ** 2)
    return np.random.default_rng(seed).random((T_GRID.size, replicas)) < p[:, None]


def test_critical_temperature_error_is_zero_for_identical_replicas():
    # every replica the same: every resample gives the same curve
    passes = np.repeat((T_GRID < 1.5)[:, None], 50, axis=1)
    out = phases.critical_temperature_error(T_GRID, passes, n_boot=200)
    assert out["T_c"] == pytest.approx(2.0 ** (np.log2(1.0) + (1 - 0.68) / 1.0))
    assert out["err"] < 1e-12 and out["no_crossing"] == 0.0 and out["replicas"] == 50


def test_critical_temperature_error_matches_the_spread_and_shrinks_as_one_over_sqrt_replicas():
    # calibration: the bootstrap error of one data set against the spread of T_c over 30
    est = [phases.critical_temperature_error(T_GRID, _passes(1600, s), n_boot=300, seed=s) for s in range(30)]
    tc = np.array([e["T_c"] for e in est])
    # centred on the noise-free estimate (the grid interpolation's, not the curve's 2^0.5)
    exact = phases.critical_temperature(T_GRID, 1.0 / (1.0 + (T_GRID / T0) ** 2))
    assert np.mean(tc) == pytest.approx(exact, rel=0.01)
    assert np.mean([e["err"] for e in est]) == pytest.approx(np.std(tc, ddof=1), rel=0.3)
    # 16× the replicas: 4× smaller error
    err = {R: np.mean([phases.critical_temperature_error(T_GRID, _passes(R, 100 + s), n_boot=300, seed=s)["err"]
                       for s in range(3)]) for R in (400, 6400)}
    assert 3.2 < err[400] / err[6400] < 5.0


def test_critical_temperature_error_counts_only_valid_replicas():
    passes = _passes(400, 7)
    valid = np.ones_like(passes)
    # invalid replicas that all "pass" must not move T_c
    extra = np.ones((T_GRID.size, 400), bool)
    both = phases.critical_temperature_error(T_GRID, np.hstack([passes, extra]),
                                             np.hstack([valid, ~extra]), n_boot=100)
    alone = phases.critical_temperature_error(T_GRID, passes, n_boot=100)
    assert both["T_c"] == pytest.approx(alone["T_c"], rel=1e-12)
    assert both["replicas"] == 800


def test_paper_units():
    summary = {"loss": np.array([0.5, 1e-3]), "hs": np.array([0.64, -0.32]), "lam": np.array([1e-4, -2e-5])}
    out = phases.paper_units(summary, 128, phases.steps_per_epoch({"batches_per_epoch": 1000}, [4, 8]))
    np.testing.assert_allclose(out["loss"], [1.0, 2e-3])
    np.testing.assert_allclose(out["hs"], [0.005, -0.0025])
    np.testing.assert_allclose(out["lam"], [0.1, -0.02])
    # a dataset given by size: an epoch is n_data/|B| steps
    np.testing.assert_allclose(phases.steps_per_epoch({"n_data": 4000}, [4, 8]), [1000, 500])
