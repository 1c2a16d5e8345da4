"""A small decoder-only character-level GPT (SCIENCE.md §3.5).

    tokens (T) → wte[tok] + wpe → L × [x += Attn(LN(x)); x += MLP(LN(x))] → LN → head → logits

Pre-LayerNorm blocks; causal multi-head self-attention (H heads of width d/H, no biases);
MLP d → 4d → d with GELU. Loss: cross-entropy of the next character, in nats (``bits`` per
character = nats / ln 2), averaged over the T positions of a window and the batch.

Data. The corpus (`dysonbm.corpus`: a user's file, or the generated grammar) is the model's
problem, ``{"corpus": tokens}``, the same for every replica. Its last ``val_fraction`` is held
out. A sample is a window of T + 1 characters of the training part at a start drawn from the
sample's key (`draw_input`), so the usual data protocols apply: "online" draws fresh windows
every step. Validation and training losses at snapshots are taken on ``n_eval`` fixed,
evenly spaced windows of each part (the same for every replica and snapshot).

Init: every matrix N(0, σ²) with σ the per-replica ``init_std`` (GPT-2: 0.02), the residual
projections (attention output, MLP output) N(0, σ²/(2L)); LayerNorm gains 1, biases 0.
Thus a head's Key matrix K (d × d/H) has i.i.d. entries of variance σ², and the levels of
X = KᵀK/d follow Marchenko–Pastur with c = (d/H)/d = 1/H and edges σ²(1 ± √c)²
(`mp_reference`). Loss at init: the final LayerNorm gives |h|² = d exactly, so a logit is
N(0, dσ²) over the head's draw, and the expected loss is ln V + dσ²/2 − (e^{dσ²} − 1)/(2V)
up to O((dσ²)²/V) (`init_loss`).

Weight decay (``weight_decay``, per replica) is AdamW's decoupled decay, applied to every
parameter; it is read by ``[train] optimizer = "adamw"``.

Snapshots (`observables`): per layer and head, the eigenvalues of X = KᵀK/d of the Key
matrix (``key_eigs``, axes layer, head, level) and, as ``spectra`` selects, of the Query and
Value matrices (``query_eigs``, ``value_eigs``) and per layer of the MLP matrices
(``mlp_in_eigs``, ``mlp_out_eigs``: X = WᵀW/4d of the 4d × d orientation); ``val_bits`` and
``train_bits``. The engine adds the gradient norm (on the test windows) and the running
training loss.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from dysonbm import corpus as corpora
from dysonbm import linalg
from dysonbm.models.base import Model, masked_mean

SPECTRA = ("key", "query", "value", "mlp_in", "mlp_out")
HEAD_SPECTRA = {"key": "wk", "query": "wq", "value": "wv"}
LN_EPS = 1e-5


def layer_norm(x, gain, bias):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + LN_EPS) * gain + bias


@dataclasses.dataclass(frozen=True)
class Transformer(Model):
    """Decoder-only character-level GPT trained on a text corpus (module doc)."""

    name: ClassVar[str] = "transformer"
    sweepable: ClassVar[tuple[str, ...]] = ("weight_decay",)
    # one corpus for all; each replica its own windows, init and test windows
    ensemble: ClassVar[dict] = {"problem": "run", "inputs": "replica", "test": "replica"}

    layers: int = 2
    heads: int = 4
    d_model: int = 64
    context: int = 32
    weight_decay: float = 0.0  # AdamW's; the presets use 0.1
    spectra: tuple = ("key",)
    val_fraction: float = 0.1
    n_eval: int = 64  # fixed windows for the validation and training losses at snapshots
    corpus_chars: int = 200_000  # length of the generated corpus (ignored with a text file)
    corpus_seed: int = 0
    text: str = ""  # a user's corpus (set from [data] text); "" = the generated one

    def __post_init__(self):
        for name in ("layers", "heads", "d_model", "context", "n_eval", "corpus_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} = {getattr(self, name)!r}: must be positive")
        if self.d_model % self.heads:
            raise ValueError(f"model.heads = {self.heads}: must divide model.d_model = {self.d_model}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"model.val_fraction = {self.val_fraction!r}: must be in (0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"model.weight_decay = {self.weight_decay!r}: must not be negative")
        spectra = (self.spectra,) if isinstance(self.spectra, str) else tuple(self.spectra)
        for s in spectra:
            if s not in SPECTRA:
                raise ValueError(f"model.spectra = {list(spectra)!r}: each one of {', '.join(SPECTRA)}")
        object.__setattr__(self, "spectra", spectra)
        n = len(self.encoded().tokens)
        if self.n_train - self.context - 1 < 1 or n - self.n_train < self.context + 1:
            raise ValueError(f"model.context = {self.context}: the corpus ({n} characters) is too short for "
                             f"training and validation windows of {self.context + 1} characters")

    def validate(self, point: dict) -> None:
        """A grid point's per-replica settings (`dysonbm.config.grid_points`)."""
        if point["weight_decay"] < 0:
            raise ValueError(f"weight_decay = {point['weight_decay']!r}: must not be negative")

    # -- corpus ---------------------------------------------------------------------------
    def encoded(self) -> corpora.Encoded:
        return corpora.load(self.text, self.corpus_chars, self.corpus_seed)

    @property
    def vocab(self) -> int:
        return self.encoded().vocab

    @property
    def n_train(self) -> int:
        return int(round(len(self.encoded().tokens) * (1.0 - self.val_fraction)))

    @property
    def d_head(self) -> int:
        return self.d_model // self.heads

    def problem(self, key):
        return {"corpus": jnp.asarray(self.encoded().tokens)}

    # -- parameters -----------------------------------------------------------------------
    def init(self, key, problem, hp):
        d, L, V, f = self.d_model, self.layers, self.vocab, 4 * self.d_model
        dtype = jnp.result_type(float)
        shapes = {"wte": (V, d), "wpe": (self.context, d), "head": (d, V),
                  "wq": (L, d, d), "wk": (L, d, d), "wv": (L, d, d), "wo": (L, d, d),
                  "w1": (L, d, f), "w2": (L, f, d)}
        keys = dict(zip(shapes, jax.random.split(key, len(shapes))))
        std = hp["init_std"]
        resid = std / math.sqrt(2.0 * L)
        params = {name: jax.random.normal(keys[name], shape, dtype) * (resid if name in ("wo", "w2") else std)
                  for name, shape in shapes.items()}
        ones, zeros = jnp.ones((L, d), dtype), jnp.zeros((L, d), dtype)
        params.update(ln1_g=ones, ln1_b=zeros, ln2_g=ones, ln2_b=zeros, b1=jnp.zeros((L, f), dtype), b2=zeros,
                      lnf_g=jnp.ones(d, dtype), lnf_b=jnp.zeros(d, dtype))
        return params, ()

    # -- samples --------------------------------------------------------------------------
    def draw_input(self, key):
        """The start of a training window."""
        return jax.random.randint(key, (), 0, self.n_train - self.context, jnp.int32)

    def make_sample(self, problem, inputs, noise):
        return {"tokens": jax.lax.dynamic_slice(problem["corpus"], (inputs,), (self.context + 1,)).astype(jnp.int32)}

    # -- forward and loss -----------------------------------------------------------------
    def logits(self, params, tokens):
        """Next-character logits (T, V) of one window of T tokens (T ≤ context)."""
        T, H, dh = tokens.shape[0], self.heads, self.d_head
        x = params["wte"][tokens] + params["wpe"][:T]
        causal = jnp.tril(jnp.ones((T, T), bool))
        for l in range(self.layers):
            h = layer_norm(x, params["ln1_g"][l], params["ln1_b"][l])
            q, k, v = ((h @ params[w][l]).reshape(T, H, dh) for w in ("wq", "wk", "wv"))
            scores = jnp.einsum("thd,shd->hts", q, k) / math.sqrt(dh)
            scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
            att = jax.nn.softmax(scores, axis=-1)
            x = x + jnp.einsum("hts,shd->thd", att, v).reshape(T, H * dh) @ params["wo"][l]
            h = layer_norm(x, params["ln2_g"][l], params["ln2_b"][l])
            x = x + jax.nn.gelu(h @ params["w1"][l] + params["b1"][l]) @ params["w2"][l] + params["b2"][l]
        return layer_norm(x, params["lnf_g"], params["lnf_b"]) @ params["head"]

    def window_loss(self, params, window):
        """Mean next-character cross-entropy (nats) over one window of T + 1 tokens."""
        logits = self.logits(params, window[:-1])
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, window[1:, None], axis=-1))

    def loss(self, params, batch, mask, problem, hp):
        per_window = jax.vmap(lambda w: self.window_loss(params, w))(batch["tokens"])
        return masked_mean(per_window, mask)

    def loss_and_grad(self, params, aux, batch, mask, key, problem, hp):
        loss, grads = jax.value_and_grad(self.loss)(params, batch, mask, problem, hp)
        return loss, grads, aux

    def trained_matrix(self, params):
        """The Key matrix of the first layer's first head (d × d/H): the engine's ``svals``
        are sqrt(d) times the square roots of its ``key_eigs``."""
        return params["wk"][0][:, : self.d_head]

    # -- snapshots ------------------------------------------------------------------------
    def eval_windows(self, problem, part: str):
        """The ``n_eval`` fixed windows (n_eval, T + 1) of the "train" or "val" part."""
        n, T = problem["corpus"].shape[0], self.context + 1
        lo, hi = (0, self.n_train - T) if part == "train" else (self.n_train, n - T)
        starts = corpora.window_starts(lo, hi, self.n_eval)
        windows = jax.vmap(lambda s: jax.lax.dynamic_slice(problem["corpus"], (s,), (T,)))(jnp.asarray(starts))
        return windows.astype(jnp.int32)

    def bits(self, params, problem, part: str):
        """Mean loss in bits per character on the fixed windows of ``part``."""
        windows = self.eval_windows(problem, part)
        per_window = jax.vmap(lambda w: self.window_loss(params, w))(windows)
        return masked_mean(per_window, jnp.ones(self.n_eval)) / math.log(2.0)

    def spectra_of(self, params) -> dict:
        """Eigenvalues (ascending) of X = WᵀW/n for the matrices ``spectra`` selects (module doc)."""
        L, H, d, dh = self.layers, self.heads, self.d_model, self.d_head
        out = {}
        for kind in self.spectra:
            if kind in HEAD_SPECTRA:
                w = params[HEAD_SPECTRA[kind]].reshape(L, d, H, dh).transpose(0, 2, 1, 3)  # (L, H, d, dh)
                x = jnp.einsum("lhij,lhik->lhjk", w, w) / d
            else:  # the 4d × d orientation: X = WᵀW/4d is d × d
                w = params["w1"].transpose(0, 2, 1) if kind == "mlp_in" else params["w2"]
                x = jnp.einsum("lij,lik->ljk", w, w) / w.shape[1]
            out[f"{kind}_eigs"] = linalg.eigvalsh(x.reshape((-1,) + x.shape[-2:])).reshape(x.shape[:-1])
        return out

    def observables(self, params, params0, problem, test, hp, data=None):
        return {"val_bits": self.bits(params, problem, "val"), "train_bits": self.bits(params, problem, "train"),
                **self.spectra_of(params)}

    def observable_axes(self):
        axes = {"val_bits": (), "train_bits": ()}
        for kind in self.spectra:
            axes[f"{kind}_eigs"] = ("layer", "head", "level") if kind in HEAD_SPECTRA else ("layer", "level")
        return axes

    # -- analytic references --------------------------------------------------------------
    def mp_reference(self, kind: str, init_std: float) -> tuple[float, float, int]:
        """``(σ², c, n)`` of the Marchenko–Pastur law of X = WᵀW/n at init for ``kind``."""
        if kind in HEAD_SPECTRA:
            return init_std**2, self.d_head / self.d_model, self.d_model
        std = init_std if kind == "mlp_in" else init_std / math.sqrt(2.0 * self.layers)
        return std**2, 0.25, 4 * self.d_model

    def init_loss(self, init_std: float) -> float:
        """Expected loss (nats) at init to second order in dσ² (module doc)."""
        s2 = self.d_model * init_std**2
        return math.log(self.vocab) + 0.5 * s2 - (math.exp(s2) - 1.0) / (2.0 * self.vocab)


def unigram_bits(model: Transformer) -> float:
    """Unigram entropy (bits per character) of the model's whole corpus."""
    return model.encoded().unigram_bits


__all__ = ["Transformer", "SPECTRA", "layer_norm", "unigram_bits"]
