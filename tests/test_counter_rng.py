"""Statistical battery of `dysonbm.counter_rng`, the generator of the Gaussian models' data and
of the RBM's Gibbs sweeps. Tolerances are 5 standard errors of each statistic under the null
(or a KS / chi-square tail probability of about 10⁻⁶), at fixed keys."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from dysonbm import counter_rng

N = 1 << 20
KEY = jax.random.key(20261130)


@pytest.fixture(scope="module")
def words():
    return np.asarray(counter_rng.bits(KEY, (N,)))


@pytest.fixture(scope="module")
def normals():
    return np.asarray(counter_rng.normal(KEY, (N,)), np.float64)


def chi2_ok(counts):
    """A chi-square statistic within 5 standard deviations of its mean under uniformity."""
    expected = counts.sum() / counts.size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    dof = counts.size - 1
    assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof), (chi2, dof)


def test_every_bit_is_a_fair_coin(words):
    ones = np.array([((words >> b) & 1).mean() for b in range(32)])
    assert np.all(np.abs(ones - 0.5) < 5 * 0.5 / math.sqrt(N)), ones


def test_uniform_fills_bins_evenly_alone_and_in_pairs(words):
    u = np.asarray(counter_rng.uniform(KEY, (N,)), np.float64)
    assert u.min() > 0 and u.max() < 1
    chi2_ok(np.bincount((u * 1024).astype(int), minlength=1024))
    # pairs at lags 1 (neighbours in a sample), 10 and 64 (the same entry of consecutive samples)
    for lag in (1, 10, 64):
        a, b = (u[:-lag] * 32).astype(int), (u[lag:] * 32).astype(int)
        chi2_ok(np.bincount(a * 32 + b, minlength=1024))
    # the top byte of consecutive words, as 3-tuples on 8×8×8 cells
    top = (words >> 29).astype(int)[: (N // 3) * 3].reshape(-1, 3)
    chi2_ok(np.bincount(top[:, 0] * 64 + top[:, 1] * 8 + top[:, 2], minlength=512))


def test_normal_moments_and_distribution(normals):
    z = normals
    se = {"mean": 1 / math.sqrt(N), "var": math.sqrt(2 / N), "skew": math.sqrt(6 / N), "kurt": math.sqrt(24 / N)}
    assert abs(z.mean()) < 5 * se["mean"]
    assert abs(z.var() - 1) < 5 * se["var"]
    assert abs(stats.skew(z)) < 5 * se["skew"]
    assert abs(stats.kurtosis(z)) < 5 * se["kurt"]
    # KS tail probability 2 exp(−2 x²) = 10⁻⁶ at x = 2.69
    assert stats.kstest(z, "norm").statistic * math.sqrt(N) < 2.69
    # the grid bounds the tails at |z| < 5.77; beyond 4σ the counts are Poisson
    assert np.abs(z).max() < 5.78
    beyond = np.sum(np.abs(z) > 4)
    expect = N * special.erfc(4 / math.sqrt(2))
    assert abs(beyond - expect) < 5 * math.sqrt(expect)


def test_no_serial_correlation(normals):
    z = normals
    for lag in (1, 2, 3, 7, 10, 16, 64, 1000):
        rho = np.mean(z[:-lag] * z[lag:])
        assert abs(rho) < 5 / math.sqrt(N - lag), (lag, rho)
    # sign changes of consecutive draws: Binomial(N − 1, ½)
    changes = np.sum(np.signbit(z[1:]) != np.signbit(z[:-1]))
    assert abs(changes - (N - 1) / 2) < 5 * math.sqrt((N - 1) / 4)


def test_streams_of_neighbouring_keys_are_uncorrelated():
    # replicas' keys are fold_in(root, g) for consecutive g: their blocks must look independent
    streams, n = 64, 1 << 14
    keys = jax.vmap(lambda g: jax.random.fold_in(KEY, g))(jnp.arange(streams))
    z = np.asarray(jax.vmap(lambda k: counter_rng.normal(k, (n,)))(keys), np.float64)
    rho = np.corrcoef(z)[np.triu_indices(streams, 1)]
    # n ρ² is χ²₁ per pair: its mean is 1 within 5 s.e. of the mean of 2016 pairs, and the
    # largest |ρ| √n stays below the Bonferroni bound of 10⁻⁶ over all pairs
    assert abs(np.mean(n * rho**2) - 1) < 5 * math.sqrt(2 / rho.size)
    assert np.abs(rho).max() * math.sqrt(n) < stats.norm.isf(0.5e-6 / rho.size)
    # the same entry across keys is itself a fair normal sample
    col = z[:, 0]
    assert abs(col.mean()) < 5 / math.sqrt(streams)


def test_a_sample_does_not_depend_on_the_block_size():
    small = counter_rng.normal(KEY, (5, 3))
    large = counter_rng.normal(KEY, (9, 3))
    np.testing.assert_array_equal(small, large[:5])
    other = counter_rng.normal(jax.random.fold_in(KEY, 1), (5, 3))
    assert not np.any(np.asarray(other) == np.asarray(small))


def test_jit_vmap_and_dtype():
    # compiled one key at a time or vmapped over keys: the same bits (op-by-op eager execution
    # rounds the unfused polynomials differently, as for any jitted function)
    keys = jax.random.split(KEY, 4)
    one = jax.jit(lambda k: counter_rng.normal(k, (3, 2)))
    np.testing.assert_array_equal(jax.jit(jax.vmap(lambda k: counter_rng.normal(k, (3, 2))))(keys),
                                  np.stack([one(k) for k in keys]))
    assert counter_rng.normal(KEY, (2,)).dtype == jnp.result_type(float)


def test_extreme_words_map_inside_the_open_intervals():
    # every 2²³-th word value is hit about once per 8×10⁶ draws, i.e. in every long run
    words = jnp.array([0, 511, 512, 1 << 31, (1 << 32) - 513, (1 << 32) - 1], jnp.uint32)
    u = np.asarray(counter_rng.uniform_from_bits(words))
    assert np.all((u > 0) & (u < 1)) and u[0] == u[1] < u[2] and u[4] < u[5] == 1 - u[0], u
    pairs = np.asarray(counter_rng.normal_pairs(words[:, None], words[None, :]))
    r = np.hypot(pairs[..., 0], pairs[..., 1])
    assert np.all(np.isfinite(pairs)) and np.all(r > 0)
    assert abs(r.max() - math.sqrt(48 * math.log(2))) < 1e-5


def test_box_muller_pairs_are_independent_normals(normals):
    x, y = normals[0::2], normals[1::2]
    n = x.size
    assert abs(np.mean(x * y)) < 5 / math.sqrt(n)
    # x² + y² of independent standard normals is exponential with mean 2; the angle uniform
    assert stats.kstest(x**2 + y**2, "expon", args=(0, 2)).statistic * math.sqrt(n) < 2.69
    assert stats.kstest(np.arctan2(y, x), "uniform", args=(-math.pi, 2 * math.pi)).statistic * math.sqrt(n) < 2.69
    # and the four sign quadrants are equally likely
    chi2_ok(np.bincount(2 * (x > 0) + (y > 0), minlength=4))


def test_polynomial_sine_and_cosine_match_numpy():
    v = np.linspace(0, 1, 100001, endpoint=False, dtype=np.float32)
    sin, cos = counter_rng._sincos_turns(jnp.asarray(v))
    assert np.abs(np.asarray(sin) - np.sin(2 * np.pi * v.astype(np.float64))).max() < 2e-7
    assert np.abs(np.asarray(cos) - np.cos(2 * np.pi * v.astype(np.float64))).max() < 2e-7


def test_refuses_more_draws_than_counters():
    with pytest.raises(ValueError, match="2\\*\\*32"):
        counter_rng.bits(KEY, (1 << 16, 1 << 16))
