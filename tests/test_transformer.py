"""The character-level transformer: causality, the loss and the Key spectrum at init against
their analytic values, learning beyond the unigram bar, replicas independent of chunking, the
generated corpus, and a bad `[data] text` path."""

import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dysonbm as dbm
from dysonbm import cli, corpus
from dysonbm.analysis import spectrum
from dysonbm.models.transformer import Transformer

TINY = """
name = "tiny_gpt"
seed = 0
replicas = 4
steps = 4
snapshot_every = 2
[model]
name = "transformer"
layers = 1
heads = 2
d_model = 16
context = 8
corpus_chars = 20000
n_eval = 8
[train]
optimizer = "adamw"
lr = 0.003
batch_size = 4
init_std = 0.02
[data]
protocol = "online"
n_test = 4
"""

HP = {"lr": 3e-3, "batch_size": 4, "init_std": 0.02, "weight_decay": 0.1}


def _replicas(model, count, init_std=0.02, seed=0):
    problem = model.problem(jax.random.key(0))
    hp = {**HP, "init_std": init_std}
    keys = jax.random.split(jax.random.key(seed), count)
    return problem, jax.jit(jax.vmap(lambda k: model.init(k, problem, hp)[0]))(keys)


def test_changing_a_future_token_leaves_earlier_logits_exactly_unchanged():
    model = Transformer(layers=2, heads=2, d_model=16, context=12, corpus_chars=20000)
    problem, params = _replicas(model, 1, init_std=0.3)  # a wide init: attention far from uniform
    params = jax.tree_util.tree_map(lambda a: a[0], params)
    tokens = jax.random.randint(jax.random.key(3), (12,), 0, model.vocab)
    logits_of = jax.jit(model.logits)
    base = np.asarray(logits_of(params, tokens))
    for j in (0, 5, 11):
        changed = tokens.at[j].set((tokens[j] + 1) % model.vocab)
        logits = np.asarray(logits_of(params, changed))
        np.testing.assert_array_equal(logits[:j], base[:j])  # bit for bit
        assert np.all(np.any(logits[j:] != base[j:], axis=-1)), j  # the change reaches every later position


def test_loss_at_init_matches_log_vocab_to_second_order():
    """Mean over replicas of the validation loss at init against ln V + s²/2 − (e^{s²} − 1)/(2V),
    s² = dσ² (`Transformer.init_loss`), within 5 standard errors over replicas plus the two
    neglected terms: O(s⁴/V) and LayerNorm's ε, which shrinks |h|² = d by ε/(Var x + ε) with
    Var x ≈ 2σ² at init (token plus position embedding)."""
    model = Transformer(corpus_chars=20000, n_eval=16)
    problem, params = _replicas(model, 48)
    bits = np.asarray(jax.jit(jax.vmap(lambda p: model.bits(p, problem, "val")))(params)) * math.log(2.0)
    s2 = model.d_model * 0.02**2
    want = model.init_loss(0.02)
    tol = 5 * bits.std(ddof=1) / math.sqrt(bits.size) + s2**2 / model.vocab + 0.5 * s2 * 1e-5 / (2 * 0.02**2)
    assert abs(bits.mean() - want) < tol, (bits.mean(), want, tol)
    assert abs(want - math.log(model.vocab)) < 0.02  # the prediction itself is ln V to 1%


def test_key_spectrum_at_init_is_marchenko_pastur():
    """Levels of X = KᵀK/d per head (K: d × d/H, entries N(0, σ²)): the exact finite-size
    moments E[tr X]/m = σ², E[tr X²]/m = σ⁴(n + m + 1)/n within 5 standard errors over
    matrices, and the top level at the MP edge: its mean at Johnstone's Tracy–Widom centring
    σ²(√(n−1) + √m)²/n + E[TW₁] s_TW (E[TW₁] = −1.2065), within 5 standard errors plus
    0.15 s_TW (the TW law's accuracy at these sizes, Johnstone 2001)."""
    model = Transformer(layers=2, heads=4, d_model=64, corpus_chars=20000)
    sigma = 0.05
    _, params = _replicas(model, 64, init_std=sigma)
    eigs = np.asarray(jax.jit(jax.vmap(model.spectra_of))(params)["key_eigs"], float)  # (R, L, H, m)
    s2, c, n = model.mp_reference("key", sigma)
    m = eigs.shape[-1]
    assert (m, c) == (model.d_head, model.d_head / model.d_model)
    per = eigs.reshape(-1, m)
    m1, m2 = per.mean(axis=1), (per**2).mean(axis=1)
    se = lambda v: v.std(ddof=1) / math.sqrt(v.size)  # noqa: E731
    assert abs(m1.mean() - s2) < 5 * se(m1)
    assert abs(m2.mean() - s2**2 * (n + m + 1) / n) < 5 * se(m2)
    top = per[:, -1]
    s_tw = spectrum.tw_scale(n, m, s2)
    centre = s2 * (math.sqrt(n - 1) + math.sqrt(m)) ** 2 / n - 1.2065 * s_tw
    assert abs(top.mean() - centre) < 5 * se(top) + 0.15 * s_tw, (top.mean(), centre, s_tw)
    # the pooled bulk: MP's edges σ²(1 ± √c)² hold all but the TW-scale overshoot
    lo, hi = s2 * (1 - math.sqrt(c)) ** 2, s2 * (1 + math.sqrt(c)) ** 2
    assert np.mean((per < lo - 3 * s_tw) | (per > hi + 3 * s_tw)) < 0.01
    fit = spectrum.mp_fit(per.ravel(), n, c=c)
    assert abs(fit.sigma2 - s2) < 5 * fit.sigma2_err + 0.02 * s2


def test_mlp_and_attention_spectra_have_the_init_variance():
    """Every selectable matrix: mean level of X = WᵀW/n equals its init variance (exactly in
    expectation), within 5 standard errors over matrices; shapes per layer (and head)."""
    model = Transformer(layers=2, heads=4, d_model=32, corpus_chars=20000, spectra=("query", "value", "mlp_in", "mlp_out"))
    _, params = _replicas(model, 16, init_std=0.05)
    spectra = jax.jit(jax.vmap(model.spectra_of))(params)
    assert spectra["value_eigs"].shape == (16, 2, 4, 8) and spectra["mlp_in_eigs"].shape == (16, 2, 32)
    assert set(model.observable_axes()) == {"val_bits", "train_bits", *spectra}
    for kind in model.spectra:
        s2, c, n = model.mp_reference(kind, 0.05)
        per = np.asarray(spectra[f"{kind}_eigs"], float).reshape(-1, spectra[f"{kind}_eigs"].shape[-1])
        assert per.shape[-1] / n == pytest.approx(c)
        m1 = per.mean(axis=1)
        assert abs(m1.mean() - s2) < 5 * m1.std(ddof=1) / math.sqrt(m1.size), kind


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    (path / "tiny.toml").write_text(TINY)
    return dbm.run(path / "tiny.toml", out=path / "run", run__chunk_size=4)


def test_replicas_are_bit_identical_whatever_the_chunking(tiny_run, write_config, tmp_path):
    whole = tiny_run
    chunks = dbm.run(write_config(TINY), out=tmp_path / "b", run__chunk_size=2)
    names = ["val_bits", "train_bits", "key_eigs", "test_loss", "train_loss", "grad_norm", "svals"]
    for name in names:
        np.testing.assert_array_equal(np.asarray(whole[name]), np.asarray(chunks[name]), err_msg=name)
    assert np.all(np.isfinite(np.asarray(whole["val_bits"])))


@pytest.mark.slow
def test_short_training_falls_well_below_the_unigram_entropy(write_config, tmp_path):
    text = TINY.replace("steps = 4\nsnapshot_every = 2", "steps = 300\nsnapshot_every = 150").replace(
        "replicas = 4", "replicas = 2").replace("d_model = 16", "d_model = 32").replace("batch_size = 4", "batch_size = 16")
    res = dbm.run(write_config(text), out=tmp_path / "run")
    unigram = Transformer(layers=1, heads=2, d_model=32, context=8, corpus_chars=20000).encoded().unigram_bits
    final = np.asarray(res["val_bits"])[0, :, -1]
    assert np.all(final < 0.8 * unigram), (final, unigram)


def test_generated_corpus_is_deterministic_with_the_stated_unigram_entropy():
    a, b, other = corpus.generate(30000, 7), corpus.generate(30000, 7), corpus.generate(30000, 8)
    assert a == b and a != other and len(a) == 30000
    counts = np.array(list(Counter(a).values()), float)
    p = counts / counts.sum()
    assert corpus.unigram_entropy(a) == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-12)
    enc = corpus.Encoded(a)
    assert enc.decode(enc.tokens) == a and enc.unigram_bits == corpus.unigram_entropy(a)
    # structure to learn: sentences agree in number across a relative clause
    assert " that " in a and ". " in a
    # the default corpus the model trains on, and the bar its report states
    model = Transformer(corpus_chars=30000, corpus_seed=7)
    assert model.encoded().unigram_bits == corpus.unigram_entropy(a)
    assert 3.5 < corpus.unigram_entropy(a) < math.log2(model.vocab)


def test_user_text_is_the_corpus(write_config, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcab cabba " * 400, encoding="utf-8")
    cfg = dbm.config.load(write_config(TINY + f'text = "{path}"\n'))
    model = dbm.config.build_model(cfg)
    assert model.vocab == 4 and model.encoded().decode(model.encoded().tokens[:6]) == "abcab "


@pytest.mark.parametrize("make, must", [
    (lambda d: str(d / "missing.txt"), "no such file"),
    (lambda d: str(d), "is a folder"),
    (lambda d: (d / "bin.txt").write_bytes(b"\xff\xfe\x00abc") and str(d / "bin.txt"), "not UTF-8"),
])
def test_bad_text_path_is_one_line_exit_2(write_config, tmp_path, capsys, monkeypatch, make, must):
    monkeypatch.chdir(tmp_path)
    value = make(tmp_path)
    cfg = write_config(TINY + f'text = "{value}"\n')
    capsys.readouterr()
    code = cli.main(["run", str(cfg), "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("dbm: error: data.text = ") and must in lines[0] and value in lines[0]
    assert not (tmp_path / "results").exists()


def test_weight_decay_needs_adamw(write_config):
    with pytest.raises(dbm.ConfigError, match="model.weight_decay"):
        dbm.config.load(write_config(TINY.replace('optimizer = "adamw"', 'optimizer = "adam"')
                                     .replace("context = 8", "context = 8\nweight_decay = 0.2")))
    with pytest.raises(dbm.ConfigError, match="train.optimizer"):
        dbm.config.load(write_config(TINY.replace('name = "transformer"', 'name = "teacher_student"')
                                     .replace("layers = 1\nheads = 2\nd_model = 16\ncontext = 8\ncorpus_chars = 20000\n"
                                              "n_eval = 8\n", "")))


def test_negative_weight_decay_in_a_sweep_is_refused(write_config):
    with pytest.raises(dbm.ConfigError, match="weight_decay = -0.1"):
        dbm.config.load(write_config(TINY + "[[sweep]]\nweight_decay = [0.1, -0.1]\n"))


def test_adamw_weight_decay_is_per_replica():
    """Two replicas differing only in weight decay: with zero gradient signal beyond the
    decay (lr·wd per step), the decoupled decay shrinks the parameters by (1 − lr·wd)."""
    from dysonbm.config import TrainConfig, make_optimizer

    tx = make_optimizer(TrainConfig(optimizer="adamw"))
    params = {"w": jnp.ones(3)}
    wds = jnp.array([0.0, 0.5])

    def one(wd):
        opt = tx(0.1, weight_decay=wd)
        updates, _ = opt.update({"w": jnp.zeros(3)}, opt.init(params), params)
        return updates["w"]

    u = np.asarray(jax.vmap(one)(wds))
    np.testing.assert_allclose(u, [[0, 0, 0], [-0.05] * 3], atol=1e-7)


def test_report_of_an_untrained_run_says_failed(tiny_run, tmp_path):
    """Four steps learn nothing: the report must say so, with both numbers, and still analyse
    the spectra (MP at init with the exact σ² = init_std², c = 1/heads)."""
    import json

    from dysonbm.analysis import transformer as ts
    from dysonbm.plots import transformer as transformer_plots
    from dysonbm.reproduce import transformer as rep

    an = ts.analyse(tiny_run)
    assert not an.passed
    assert an.unigram_bits == Transformer(layers=1, heads=2, d_model=16, context=8, corpus_chars=20000).encoded().unigram_bits
    assert an.points[0].init.sigma2 == pytest.approx(0.02**2) and an.c == 0.5
    figures = transformer_plots.plot_all(tiny_run, an, tmp_path / "figures")
    assert all(f.is_file() for f in figures)
    text = rep.report_markdown(tiny_run, an, figures, 1.0, "tiny", tmp_path)
    assert "FAILED" in text and f"{an.unigram_bits:.3f} bits/char" in text
    assert f"{an.points[0].val_bits:.4g}" in text and "](figures/key_esd_init.png)" in text
    data = json.loads(json.dumps(rep.report_json(tiny_run, an, 1.0), default=float))
    assert data["passed"] is False and data["points"][0]["val_bits"] > data["unigram_bits"] - ts.MARGIN_BITS
