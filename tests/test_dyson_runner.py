"""Eigenvalue SDEs through the same runner, results store and command as SGD."""

import numpy as np
import pytest

from dysonbm import cli, config, runner

DYSON = """
name = "dbm_quadratic"
seed = 2
replicas = 96
steps = 2400
snapshot_every = 400
[model]
name = "dyson"
n = 16
potential = "quadratic"
start = "zero"
D = 1.0
gamma = 1.0
dt = 0.004
[[sweep]]
beta = [1.0, 2.0]
"""


def test_stationary_second_moment_through_the_runner(write_config):
    """The β-Hermite Coulomb gas has E[Σλ²] = (D/γ)(N + βN(N−1)/2) exactly.

    Snapshots from t = 4.8 on (relaxation time 1/(2γ) for Σλ²) at spacing 1.6 are nearly
    independent; tolerance: 5 standard errors of the mean plus the scheme's documented
    bias at this dt (below 1%).
    """
    res = runner.run(config.load(write_config(DYSON)), progress=False)
    assert not res.diverged.any()
    levels = res["levels"]  # (point, replica, snapshot, level)
    assert np.all(np.diff(levels[:, :, 1:], axis=-1) > 0)  # strictly ordered after the degenerate start
    for p, beta in enumerate((1.0, 2.0)):
        m2 = np.sum(levels[p, :, 3:] ** 2, axis=-1).ravel()
        exact = 16 + beta * 16 * 15 / 2
        se = m2.std(ddof=1) / np.sqrt(m2.size)
        assert abs(m2.mean() - exact) < 5 * se + 0.01 * exact, (beta, m2.mean(), exact, se)


@pytest.mark.parametrize("setting", ["model.beta=0", "model.D=-1", "model.dt=0", "model.n=1"])
def test_bad_sde_parameters_exit_2(setting, write_config, tmp_path, capsys):
    out = tmp_path / "never"
    code = cli.main(["run", str(write_config(DYSON)), "--set", setting, "--set", "sweep.beta=[1.0]",
                     "--out", str(out), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dbm: error:"), err
    assert not out.exists()


def test_potential_must_be_a_function_of_one_level(write_config, tmp_path, capsys):
    import jax.numpy as jnp

    from dysonbm import sde

    out = tmp_path / "never"
    code = cli.main(["run", str(write_config(DYSON)), "--set", 'model.potential="sextic"', "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "potential" in capsys.readouterr().err
    # a function of the level vector is refused, with the shape it returned for one level
    with pytest.raises(ValueError, match=r"must map one scalar level to a scalar, got output shape \(3,\)"):
        sde.DysonBM(n=4, potential=lambda lam, hp: lam * jnp.ones(3))
    # one that cannot take a scalar level at all (it indexes the vector)
    with pytest.raises(ValueError, match="not a function of one scalar level"):
        sde.DysonBM(n=4, potential=lambda lam, hp: lam[0] ** 2)
    # a one-level U = λ⁴/4 is accepted, and its force is −U'(λ) = −λ³ level by level
    model = sde.DysonBM(n=4, potential=lambda lam, hp: 0.25 * lam**4)
    force = model.potential.force(jnp.array([1.0, -2.0, 0.5]), model.defaults())
    np.testing.assert_allclose(force, [-1.0, 8.0, -0.125], rtol=1e-6)
