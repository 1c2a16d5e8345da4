"""`dysonbm.analysis.spectrum` estimators on matrices with known answers, the checkpoint readers of
`dysonbm.analysis.weights` on files written here, and `dbm spectrum` (bad input: one line, exit 2).

Tolerances come from the estimators' standard errors (3σ unless the issue fixes another:
tail exponents 2σ, the DBM diffusion 5 %); every draw uses a fixed seed.
"""

from __future__ import annotations

import json
import math
import pickle
import struct

import numpy as np
import pytest

from dysonbm import cli, io
from dysonbm.analysis import rmt
from dysonbm.analysis import spectrum as sp
from dysonbm.analysis import weights


def gaussian(n, m, sigma2=1.0, seed=0):
    return np.random.default_rng(seed).normal(scale=math.sqrt(sigma2), size=(n, m))


def goe_levels(n, seed):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return np.linalg.eigvalsh((a + a.T) / 2)


# --------------------------------------------------------------------------- MP, outliers
def test_mp_fit_of_a_gaussian_matrix_within_errors():
    n, m, s2 = 2000, 1000, 1.69
    x, n_, m_ = sp.levels_of(gaussian(n, m, s2))
    assert (n_, m_) == (n, m)
    fit = sp.mp_fit(x, n)
    assert fit.c == 0.5
    assert abs(fit.sigma2 - s2) < 3 * fit.sigma2_err
    lo, hi = rmt.mp_edges(s2, 0.5)
    edge_err = 3 * fit.sigma2_err * (1 + math.sqrt(0.5)) ** 2
    assert abs(fit.edge_hi - hi) < edge_err and abs(fit.edge_lo - lo) < edge_err
    assert fit.explained == 1.0
    assert fit.ks < 1.36 / math.sqrt(m) * 2  # levels are rigid: far inside the i.i.d. KS band
    free = sp.mp_fit(x, n, fit_c=True)
    assert abs(free.c - 0.5) < 0.01


def test_wide_matrix_is_transposed():
    w = gaussian(300, 600, seed=1)
    x, n, m = sp.levels_of(w)
    assert (n, m) == (600, 300) and x.size == 300


@pytest.mark.parametrize("seed", range(4))
def test_pure_noise_has_no_outliers(seed):
    n, m = 1000, 500
    x, _, _ = sp.levels_of(gaussian(n, m, seed=seed))
    assert sp.outliers(x, n).size == 0


def spiked(n, m, ell, seed):
    """Rows ~ N(0, I + ell v vᵀ): BBP outlier at (1 + ell)(1 + c/ell) iff ell > sqrt(c)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=m)
    v /= np.linalg.norm(v)
    z = rng.normal(size=(n, m))
    return z + (math.sqrt(1 + ell) - 1) * np.outer(z @ v, v)


def test_spike_above_bbp_is_found_where_theory_puts_it():
    n, m, ell = 2000, 500, 2.0  # c = 0.25, threshold sqrt(c) = 0.5
    x, _, _ = sp.levels_of(spiked(n, m, ell, 3))
    out = sp.outliers(x, n)
    c = m / n
    assert out.size == 1
    # the outlier's own fluctuation is O(n^{-1/2}): 2 % at n = 2000 is > 3σ
    assert abs(out[0] / ((1 + ell) * (1 + c / ell)) - 1) < 0.03


def test_spike_below_bbp_is_not_found():
    n, m = 2000, 500
    x, _, _ = sp.levels_of(spiked(n, m, 0.3, 3))
    assert sp.outliers(x, n).size == 0


# ----------------------------------------------------------------------------- tails
@pytest.mark.parametrize("a", [2.5, 3.5])
def test_tail_exponent_of_pareto_samples(a):
    # 2σ is a 95 % band (the Fisher error matches the spread over seeds): one fixed seed
    u = np.random.default_rng(0).uniform(size=5000)
    x = 2.0 * (1 - u) ** (-1 / (a - 1))  # density ∝ x^{-a} above 2
    t = sp.tail_exponent(x)
    assert abs(t.alpha - a) < 2 * t.alpha_err


def test_tail_exponent_of_a_matrix_with_pareto_entries():
    # |w| with P(|w| > y) = y^{-mu}: the top levels of WᵀW/n are single squared entries, so
    # ρ(λ) ∝ λ^{-1-mu/2}. At mu = 1 the tail holds at n = 1000 (mu ≳ 1.5 needs larger n).
    mu = 1.0
    rng = np.random.default_rng(5)
    w = (1 - rng.uniform(size=(1000, 500))) ** (-1 / mu) * rng.choice([-1.0, 1.0], size=(1000, 500))
    x, _, _ = sp.levels_of(w)
    t = sp.tail_exponent(x)
    assert abs(t.alpha - (1 + mu / 2)) < 2 * t.alpha_err


def test_tail_exponent_with_given_xmin():
    x = (1 - np.random.default_rng(2).uniform(size=4000)) ** (-1 / 2.0)  # a = 3, x_min = 1
    t = sp.tail_exponent(x, xmin=1.0)
    assert t.n_tail == 4000 and abs(t.alpha - 3.0) < 2 * t.alpha_err


# ------------------------------------------------------------------ local statistics
@pytest.mark.parametrize("method", ["kernel", "poly"])
def test_unfolding_gives_unit_mean_spacing(method):
    e = sp.unfold(goe_levels(1000, 0), method=method)
    s = np.diff(e)
    assert abs(s.mean() - 1) < 0.02  # the kept bulk: 90 % of the levels


def test_goe_ratio_and_surmise():
    x = goe_levels(2000, 1)
    st = sp.spacing_stats(x)
    assert abs(st.r - rmt.MEAN_R[1]) < 3 * st.r_err
    assert st.ks_goe < 1.63 / math.sqrt(st.n_spacings)  # the 1 % KS critical value
    assert st.ks_goe < st.ks_gue < st.ks_poisson


def test_gue_ratio():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(1500, 1500)) + 1j * rng.normal(size=(1500, 1500))
    r = sp.spacing_ratio(np.linalg.eigvalsh((a + a.conj().T) / 2))
    assert abs(r.value - rmt.MEAN_R[2]) < 3 * r.stderr


def test_ratio_of_a_batch_of_spectra():
    batch = np.stack([goe_levels(200, seed) for seed in range(20)])
    r = sp.spacing_ratio(batch)
    assert abs(r.value - rmt.MEAN_R[1]) < 3 * r.stderr


def test_independent_levels_are_poisson():
    x = np.random.default_rng(6).uniform(size=3000)
    st = sp.spacing_stats(x)
    assert abs(st.r - rmt.MEAN_R["poisson"]) < 3 * st.r_err
    assert st.ks_poisson < 1.63 / math.sqrt(st.n_spacings)
    assert st.ks_poisson < st.ks_goe


# ----------------------------------------------------------------------- diffusion
def test_level_diffusion_recovers_D_of_a_dbm_trajectory():
    jax = pytest.importorskip("jax")
    from dysonbm import sde as dy

    n, D = 32, 0.5
    dt = 0.2 * dy.recommended_dt(n, D)  # D·dt = 0.01 × squared spacing
    out = dy.simulate(dy.DysonBM(n, start="semicircle"), {"D": D, "dt": dt}, jax.random.key(7), 16, 200, 1)
    lv = np.asarray(out["levels"], dtype=float)  # (R, S, N)
    d = sp.level_diffusion(lv, dt=dt, lr=0.1, batch_size=8)
    assert abs(d.D / D - 1) < 0.05
    assert d.per_level.shape == (n,) and np.all(np.abs(d.per_level / D - 1) < 0.15)
    assert d.temperature == pytest.approx(d.D / 0.1) and d.T_pred == pytest.approx(0.1 / 8)
    assert d.noise_var == pytest.approx(d.temperature / d.T_pred)


def test_singular_value_diffusion_of_a_brownian_matrix():
    # W_k = W_{k-1} + sqrt(D) Z: each singular value diffuses with Var ds = D per step
    rng = np.random.default_rng(8)
    D, steps = 1e-4, 60
    w = rng.normal(size=(200, 100))
    sv = []
    for _ in range(steps):
        sv.append(np.linalg.svd(w, compute_uv=False))
        w = w + math.sqrt(D) * rng.normal(size=w.shape)
    d = sp.level_diffusion(np.array(sv), chiral=True)
    assert abs(d.D / D - 1) < 5 * d.D_err / D


# ------------------------------------------------------------------------- loaders
def write_safetensors(path, tensors: dict, bf16: str | None = None):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        if name == bf16:  # keep the top 16 bits of a float32
            raw = (np.ascontiguousarray(a, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
            kind = "BF16"
        else:
            raw, kind = np.ascontiguousarray(a, dtype="<f4").tobytes(), "F32"
        header[name] = {"dtype": kind, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "np"}
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def msgpack_encode(obj) -> bytes:
    """The msgpack subset Flax's ``serialization.to_bytes`` writes (ndarray as ext type 1)."""
    if isinstance(obj, dict):
        return bytes([0xDE]) + struct.pack(">H", len(obj)) + b"".join(msgpack_encode(k) + msgpack_encode(v)
                                                                     for k, v in obj.items())
    if isinstance(obj, str):
        b = obj.encode()
        return bytes([0xD9, len(b)]) + b
    if isinstance(obj, bytes):
        return bytes([0xC6]) + struct.pack(">I", len(obj)) + obj
    if isinstance(obj, (list, tuple)):
        return bytes([0xDC]) + struct.pack(">H", len(obj)) + b"".join(msgpack_encode(v) for v in obj)
    if isinstance(obj, bool):
        return bytes([0xC3 if obj else 0xC2])
    if isinstance(obj, int):
        return bytes([0xD3]) + struct.pack(">q", obj)
    if isinstance(obj, np.ndarray):
        payload = msgpack_encode([list(obj.shape), obj.dtype.name, obj.tobytes()])
        return bytes([0xC9]) + struct.pack(">I", len(payload)) + struct.pack(">b", 1) + payload
    raise TypeError(type(obj))


A = np.arange(12.0).reshape(4, 3)
B = np.arange(6.0).reshape(2, 3) - 1


def test_load_npz_and_npy(tmp_path):
    np.savez(tmp_path / "w.npz", a=A, b=B)
    np.save(tmp_path / "a.npy", A)
    got = weights.load_arrays(tmp_path / "w.npz")
    assert set(got) == {"a", "b"} and np.array_equal(got["a"], A)
    assert np.array_equal(weights.load_arrays(tmp_path / "a.npy")["a"], A)


def test_load_safetensors_header_format(tmp_path):
    write_safetensors(tmp_path / "m.safetensors", {"layer.0.weight": A, "bf": B}, bf16="bf")
    got = weights._read_safetensors(tmp_path / "m.safetensors")
    assert np.array_equal(got["layer.0.weight"], A) and got["layer.0.weight"].dtype == np.float32
    assert np.array_equal(got["bf"], B)  # small integers are exact in bfloat16
    assert np.array_equal(weights.load_arrays(tmp_path / "m.safetensors")["bf"], B)


def test_load_msgpack_pytree(tmp_path):
    tree = {"params": {"Dense_0": {"kernel": A.astype(np.float32), "bias": np.zeros(3, np.float32)}},
            "step": 7}
    (tmp_path / "ckpt.msgpack").write_bytes(msgpack_encode(tree))
    got = weights.load_arrays(tmp_path / "ckpt.msgpack")
    assert set(got) == {"params/Dense_0/kernel", "params/Dense_0/bias"}
    assert np.array_equal(got["params/Dense_0/kernel"], A)


def test_load_msgpack_chunked_leaf(tmp_path):
    big = np.arange(24.0).reshape(4, 6)
    flat = big.ravel()
    tree = {"w": {"__msgpack_chunked_array__": True, "shape": [4, 6],
                  "chunks": {"0": flat[:10], "1": flat[10:20], "2": flat[20:]}}}
    (tmp_path / "c.msgpack").write_bytes(msgpack_encode(tree))
    assert np.array_equal(weights.load_arrays(tmp_path / "c.msgpack")["w"], big)


def test_load_pickled_pytree(tmp_path):
    tree = {"enc": [A, (B, "note")], "n": 3}
    with open(tmp_path / "t.pkl", "wb") as f:
        pickle.dump(tree, f)
    got = weights.load_arrays(tmp_path / "t.pkl")
    assert set(got) == {"enc/0", "enc/1/0"} and np.array_equal(got["enc/1/0"], B)


def write_results(path, w, steps, lr=0.1, batch_size=4):
    """A minimal dbm results store with a weights array (point, replica, snapshot, row, col)."""
    p_, r_ = w.shape[:2]
    manifest = {"format": 1, "config": {"name": "t", "model": {"name": "multilayer"}, "replicas": r_,
                                        "steps": int(steps[-1])},
                "points": [{"lr": lr, "batch_size": batch_size}] * p_, "steps": list(steps)}
    arrays = {"diverged": np.zeros((p_, r_), bool), "weights": w}
    axes = {"diverged": ("point", "replica"), "weights": ("point", "replica", "snapshot", "row", "col")}
    io.save(io.Results(manifest, arrays, axes), path)


def test_load_results_directory(tmp_path):
    w = np.random.default_rng(0).normal(size=(1, 2, 3, 8, 4))
    write_results(tmp_path / "res", w, [10, 20, 30])
    got = weights.load_arrays(tmp_path / "res")
    assert len(got) == 6 and np.array_equal(got["weights/p0/r1/s2"], w[0, 1, 2])


def test_load_orbax_checkpoint(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    ocp.PyTreeCheckpointer().save(str(tmp_path / "ck"), {"params": {"dense": {"kernel": A}}})
    got = weights.load_arrays(tmp_path / "ck")
    assert np.array_equal(got["params/dense/kernel"], A)


def _orbax_dir_without_orbax(tmp_path):
    """An Orbax-looking directory at tmp_path/ck, where orbax is not installed (else skip)."""
    try:
        import orbax.checkpoint  # noqa: F401
        pytest.skip("orbax is installed")
    except ImportError:
        pass
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "_CHECKPOINT_METADATA").write_text("{}")


def test_orbax_directory_without_orbax_is_one_clear_error(tmp_path):
    _orbax_dir_without_orbax(tmp_path)
    with pytest.raises(weights.WeightsError, match="orbax"):
        weights.load_arrays(tmp_path / "ck")


# ------------------------------------------------------------------------------ CLI
def run_cli(argv, capsys):
    code = cli.main(["spectrum", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def test_cli_table_csv_json_figures(tmp_path, capsys):
    np.savez(tmp_path / "w.npz", **{"layer1/kernel": gaussian(400, 200, seed=1),
                                   "layer2/kernel": gaussian(300, 300, seed=2), "bias": np.zeros(5)})
    write_safetensors(tmp_path / "m.safetensors", {"attn.key": gaussian(256, 128, seed=3), "mlp.up": gaussian(64, 64)})
    code, out, err = run_cli([tmp_path / "w.npz", tmp_path / "m.safetensors", "--match", "kernel|key",
                              "--out", tmp_path / "o"], capsys)
    assert code == 0 and err == []
    assert "layer1/kernel" in out and "attn.key" in out and "mlp.up" not in out
    rows = json.loads((tmp_path / "o" / "spectrum.json").read_text())["matrices"]
    assert {r["matrix"] for r in rows} == {"layer1/kernel", "layer2/kernel", "attn.key"}
    assert all(r["n_outliers"] == 0 for r in rows)
    csv_lines = (tmp_path / "o" / "spectrum.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("source,matrix,rows,cols")
    assert len(list((tmp_path / "o" / "figures").glob("*.png"))) == 3


def test_cli_sequence_of_files_with_lr_and_batch(tmp_path, capsys):
    rng = np.random.default_rng(9)
    D = 1e-4
    w = rng.normal(size=(100, 50))
    paths = []
    for k in range(12):
        np.savez(tmp_path / f"c{k:02d}.npz", w=w)
        paths.append(tmp_path / f"c{k:02d}.npz")
        w = w + math.sqrt(D) * rng.normal(size=w.shape)
    argv = [*paths, "--sequence", "--lr", "0.01", "--batch-size", "4", "--out", tmp_path / "o"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0 and err == []
    seq = json.loads((tmp_path / "o" / "spectrum.json").read_text())["sequences"]
    assert len(seq) == 1 and seq[0]["checkpoints"] == 12
    s = seq[0]
    assert abs(s["D"] / D - 1) < 5 * s["D_err"] / D
    assert s["T_pred"] == pytest.approx(0.0025) and s["temperature"] == pytest.approx(s["D"] / 0.01)
    assert (tmp_path / "o" / "sequence.csv").exists()
    assert list((tmp_path / "o" / "figures").glob("flow_*.png"))


def test_cli_sequence_of_a_results_directory_reads_lr_and_batch(tmp_path, capsys):
    rng = np.random.default_rng(10)
    w = np.cumsum(0.01 * rng.normal(size=(1, 1, 8, 40, 20)), axis=2) + rng.normal(size=(1, 1, 1, 40, 20))
    write_results(tmp_path / "res", w, list(range(100, 900, 100)), lr=0.2, batch_size=8)
    code, out, err = run_cli([tmp_path / "res", "--sequence", "--out", tmp_path / "o"], capsys)
    assert code == 0 and err == []
    seq = json.loads((tmp_path / "o" / "spectrum.json").read_text())["sequences"]
    assert seq[0]["matrix"] == "weights/p0/r0" and seq[0]["lr"] == 0.2 and seq[0]["T_pred"] == pytest.approx(0.025)


def _bad_cases(tmp_path):
    good = gaussian(60, 30, seed=1)
    np.savez(tmp_path / "vectors.npz", b=np.zeros(4), s=np.zeros(()))
    np.savez(tmp_path / "tiny.npz", t=np.ones((1, 1)))
    nan = good.copy()
    nan[3, 4] = np.nan
    np.savez(tmp_path / "nan.npz", w=nan)
    np.savez(tmp_path / "zero.npz", w=np.zeros((20, 10)))
    np.savez(tmp_path / "good.npz", w=good)
    blob = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "corrupt.npz").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "corrupt.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    (tmp_path / "corrupt.msgpack").write_bytes(b"\xde\x00\x05\xd9")
    return {"missing": "no_such.npz", "no 2-D": "vectors.npz", "1x1": "tiny.npz", "nan": "nan.npz", "zero": "zero.npz",
            "corrupt npz": "corrupt.npz", "corrupt safetensors": "corrupt.safetensors",
            "corrupt msgpack": "corrupt.msgpack"}


@pytest.mark.parametrize("case", ["missing", "no 2-D", "1x1", "nan", "zero", "corrupt npz", "corrupt safetensors",
                                  "corrupt msgpack"])
def test_cli_bad_input_one_line_exit_2(case, tmp_path, capsys):
    name = _bad_cases(tmp_path)[case]
    code, out, err = run_cli([tmp_path / name], capsys)
    assert code == 2
    assert len(err) == 1 and name in err[0] and err[0].startswith("dbm: error:")


def test_cli_bad_inputs_do_not_stop_the_good_ones(tmp_path, capsys):
    cases = _bad_cases(tmp_path)
    mixed = gaussian(60, 30, seed=2)
    np.savez(tmp_path / "mixed.npz", ok=mixed, tiny=np.ones((1, 1)), nan=np.full((5, 5), np.nan))
    argv = [tmp_path / "good.npz", *(tmp_path / v for v in cases.values()), tmp_path / "mixed.npz",
            "--out", tmp_path / "o"]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert len(err) == len(cases) + 2  # one line per bad file, and per bad matrix of mixed.npz
    assert any("mixed.npz: tiny" in e for e in err) and any("mixed.npz: nan" in e for e in err)
    rows = json.loads((tmp_path / "o" / "spectrum.json").read_text())["matrices"]
    assert {(r["source"].split("/")[-1], r["matrix"]) for r in rows} == {("good.npz", "w"), ("mixed.npz", "ok")}


def test_cli_orbax_directory_without_orbax(tmp_path, capsys):
    _orbax_dir_without_orbax(tmp_path)
    code, _, err = run_cli([tmp_path / "ck"], capsys)
    assert code == 2 and len(err) == 1 and "orbax" in err[0].lower()
