"""The split scheme's per-sub-step draws (`dysonbm.sde.draws._substep_draws`): exact laws and
per-replica determinism.

χ² laws are checked by a KS test against scipy's χ² (Bonferroni over the cases, family-wise
α = 1e-3), the noise by its first two moments (5 standard errors).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dysonbm import sde as dy
from dysonbm.sde.draws import _substep_draws

N = 16
COUNT = 4000  # sub-steps: COUNT·(N − 1) bond variables per case
CASES = [(1.0, 0.0), (2.0, 4.0), (4.0, 5.0), (3.0, 0.0), (1.5, 2.7), (7.0, 12.0)]  # (β, dof0)
ALPHA = 1e-3 / (2 * len(CASES))


@jax.jit
def _chiral_draws(keys, beta, dof0):  # β, dof0 traced: one compilation for every case
    return jax.vmap(lambda k: _substep_draws(k, N, beta, dof0, True, jnp.float32))(keys)


def _draw_many(beta, dof0):
    keys = jax.random.split(jax.random.key(11), COUNT)
    out = _chiral_draws(keys, jnp.float32(beta), jnp.float32(dof0))
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), out)


@pytest.mark.parametrize("beta,dof0", CASES)
def test_bond_chi2_laws(beta, dof0):
    """χ²_β for the bonds and χ²_dof0 for the origin: exact (integer ≤ 5) or Marsaglia–Tsang."""
    d = _draw_many(beta, dof0)
    assert stats.kstest(d.gap.ravel(), stats.chi2(beta).cdf).pvalue > ALPHA
    if dof0 > 0:
        assert stats.kstest(d.origin.ravel(), stats.chi2(dof0).cdf).pvalue > ALPHA
    else:
        assert np.all(d.origin == 0.0)
    z = d.noise.ravel()
    se = 1.0 / np.sqrt(z.size)
    assert abs(z.mean()) < 5 * se and abs(z.var() - 1.0) < 5 * np.sqrt(2.0) * se


def test_noise_and_bonds_independent():
    """For β = 1 the bond uses the sine partner of the noise's Box–Muller pair: independent."""
    d = _draw_many(1.0, 0.0)
    z, x = d.noise[:, : N - 1].ravel(), d.gap.ravel()
    r = np.corrcoef(z * z, x)[0, 1]
    assert abs(r) < 5 / np.sqrt(z.size)


@pytest.mark.parametrize("make", [lambda: dy.DysonBM(8, start="semicircle", dt=0.05),
                                  lambda: dy.WishartProcess(10, 8, dt=0.05)])
def test_replica_numbers_do_not_depend_on_the_batch(make):
    """A replica's trajectory is the same alone and in a batch, whatever the other replicas'
    β (a non-integer β elsewhere in the batch takes the general χ² path there only)."""
    p = make()
    hp = {k: jnp.asarray(v) for k, v in p.defaults().items()}
    key = jax.random.key(5)

    def run(state, hp):
        return jax.lax.fori_loop(0, 5, lambda t, s: p.step(s, jax.random.fold_in(key, t), hp), state).y

    alone = jax.jit(run)(p.init(key, hp), hp)
    batch_hp = {k: jnp.full((3,), v) for k, v in hp.items()}
    batch_hp["beta"] = jnp.asarray([1.0, 1.37, 2.0])
    states = jax.vmap(lambda _: p.init(key, hp))(jnp.arange(3))
    batched = jax.jit(jax.vmap(run))(states, batch_hp)
    np.testing.assert_array_equal(np.asarray(batched[0]), np.asarray(alone))
    assert np.all(np.diff(np.asarray(batched), axis=-1) > 0)
