"""`dysonbm.linalg`: on CPU every solver sees one matrix at a time, however it is batched.

A batched LAPACK call splits its batch over XLA's thread pool and waits on it; with one XLA
device per core every pool thread may be such a waiting caller: a deadlock (it stalled the
transformer preset on two devices). The test looks at what reaches the library."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dysonbm import linalg

SOLVERS = {"eigh": linalg.eigh, "eigvalsh": linalg.eigvalsh, "svdvals": linalg.svdvals}
LIBRARY = ("eigh", "svd")


def library_operand_ranks(jaxpr):
    """Ranks of the operands of every eigh/svd primitive in ``jaxpr``, sub-jaxprs included."""
    ranks = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in LIBRARY:
            ranks.append(eqn.invars[0].aval.ndim)
        for sub in _sub_jaxprs(eqn.params.values()):
            ranks += library_operand_ranks(sub)
    return ranks


def _sub_jaxprs(values):
    for v in values:
        if hasattr(v, "eqns"):
            yield v
        elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
            yield v.jaxpr
        elif isinstance(v, (tuple, list)):
            yield from _sub_jaxprs(v)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("how", ["stack", "vmap"])
def test_the_library_sees_one_matrix_at_a_time(name, how):
    g = jax.random.normal(jax.random.key(0), (2, 3, 5, 5))
    x = g @ jnp.swapaxes(g, -1, -2)
    fn = SOLVERS[name] if how == "stack" else jax.vmap(jax.vmap(SOLVERS[name]))
    ranks = library_operand_ranks(jax.make_jaxpr(fn)(x).jaxpr)
    assert ranks and all(r == 2 for r in ranks), ranks
    expect = {"eigh": lambda a: np.linalg.eigh(a)[0], "eigvalsh": np.linalg.eigvalsh,
              "svdvals": lambda a: np.linalg.svd(a, compute_uv=False)[..., ::-1]}[name](np.asarray(x, np.float64))
    out = jax.jit(fn)(x)
    got = out[0] if name == "eigh" else out
    assert got.shape == expect.shape
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)
