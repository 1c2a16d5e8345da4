"""The published training loops in plain numpy, one replica and one step at a time.

Written the way the published generators are: a Python loop over replicas, per-step numpy on
one replica's arrays, the same protocol and sizes as `dbm`'s presets. `bench_reference.py`
runs one such process per core and times it whole, start-up included.

    python benchmarks/reference_loops.py MODEL REPLICAS STEPS [SEED]

MODEL: multilayer | ts | ts_online | rbm.
"""

from __future__ import annotations

import sys

import numpy as np


def multilayer(replicas: int, steps: int, rng, lr: float = 0.5, batch: int = 4, batches: int = 1000):
    """SCIENCE.md §3.3: tanh, K 16, L 32, d 3; each replica its own M, Z, teacher and dataset."""
    k, l, d = 16, 32, 3
    for _ in range(replicas):
        m = rng.normal(size=(l, d)) / np.sqrt(d)
        z = rng.normal(size=k) / np.sqrt(k)
        teacher = rng.normal(size=(k, l)) / np.sqrt(l)
        x = rng.normal(size=(batches * batch, d))
        y = np.tanh(np.tanh(x @ m.T) @ teacher.T) @ z
        w = rng.normal(size=(k, l)) / np.sqrt(l)
        for t in range(steps):
            j = t % batches
            xb, yb = x[j * batch:(j + 1) * batch], y[j * batch:(j + 1) * batch]
            phi0 = np.tanh(xb @ m.T)
            s = np.tanh(phi0 @ w.T)
            r = s @ z - yb
            delta = (r[:, None] * z[None, :] * (1.0 - s * s)) / batch
            w -= lr * delta.T @ phi0


def teacher_student(replicas: int, steps: int, rng, online: bool, lr: float = 0.1, batch: int = 16,
                    noise: float = 0.1, n: int = 2):
    """SCIENCE.md §3.1: W_t = 2 I; shared inputs and frozen per-replica noise (published), or
    fresh inputs and noise every step (online)."""
    w_t = 2.0 * np.eye(n)
    n_data = 500 * batch
    x = rng.normal(size=(n_data, n))
    for _ in range(replicas):
        if not online:
            g = rng.normal(size=(n_data, n, n)) * noise
            a = (g + g.transpose(0, 2, 1)) / np.sqrt(2.0)
        w = 0.1 * rng.normal(size=(n, n))
        for t in range(steps):
            if online:
                xb = rng.normal(size=(batch, n))
                g = rng.normal(size=(batch, n, n)) * noise
                ab = (g + g.transpose(0, 2, 1)) / np.sqrt(2.0)
            else:
                j = t % (n_data // batch)
                xb, ab = x[j * batch:(j + 1) * batch], a[j * batch:(j + 1) * batch]
            grad = -((w_t - w) @ (xb.T @ xb) / batch + ab.mean(axis=0))
            w -= lr * grad


def rbm(replicas: int, steps: int, rng, lr: float = 0.1, batch: int = 16, gibbs: int = 3):
    """SCIENCE.md §3.2: N_v = N_h = 10, μ² = 9, m² = 4, σ_h = 1, η = 0; exact data term,
    ``batch`` persistent chains advanced ``gibbs`` sweeps per update."""
    n, mu2, m2 = 10, 9.0, 4.0
    kernel = (m2 + 2) * np.eye(n) - np.roll(np.eye(n), 1, axis=1) - np.roll(np.eye(n), -1, axis=1)
    target = np.linalg.inv(kernel)
    for _ in range(replicas):
        w = 0.1 * rng.normal(size=(n, n))
        phi = rng.normal(size=(batch, n)) / np.sqrt(mu2)
        for _ in range(steps):
            for _ in range(gibbs):
                h = phi @ w + rng.normal(size=(batch, n))
                phi = h @ w.T / mu2 + rng.normal(size=(batch, n)) / np.sqrt(mu2)
            model = phi.T @ phi / batch
            w += lr * (target - model) @ w


def main(argv) -> int:
    model, replicas, steps = argv[0], int(argv[1]), int(argv[2])
    rng = np.random.default_rng(int(argv[3]) if len(argv) > 3 else 0)
    if model == "multilayer":
        multilayer(replicas, steps, rng)
    elif model in ("ts", "ts_online"):
        teacher_student(replicas, steps, rng, online=model == "ts_online")
    elif model == "rbm":
        rbm(replicas, steps, rng)
    else:
        raise SystemExit(f"unknown model {model!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
