"""Transformer training throughput: vmapped replicas against one replica in a plain loop.

    python benchmarks/bench_transformer.py              # R = 1, 16, 64; 40 steps each
    python benchmarks/bench_transformer.py --steps 10 --replicas 1 16

Workload: the default `Transformer` (2 layers, 4 heads, d = 64, context 32) under AdamW
(lr 3e-3, weight decay 0.1), |B| = 16 windows of fresh data per step ("online"), one CPU
device. Throughput is replica-tokens per second, R·|B|·T·steps / seconds, T = context.

* engine: the program the runner compiles (`engine.make_sgd_sim` + `engine.segment_fn`,
  vmapped over R replicas, scanned over the steps, one snapshot at the end);
* loop: one replica, the SGD kernel's ``step_fn`` and its batch under ``jax.jit``, called
  once per step from Python (what a plain training script does).

Everything is compiled and run once before the timed call; the figures are medians of
``--repeats`` timed calls, measured side by side in one process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from dysonbm import engine
from dysonbm.data import DataLayout
from dysonbm.config import TrainConfig, make_optimizer
from dysonbm.models.transformer import Transformer
from dysonbm.sgd import sgd

LR, WEIGHT_DECAY, BATCH, INIT_STD = 3e-3, 0.1, 16, 0.02


def _hp(replicas: int) -> dict:
    return {"lr": jnp.full(replicas, LR), "batch_size": jnp.full(replicas, BATCH, jnp.int32),
            "init_std": jnp.full(replicas, INIT_STD), "weight_decay": jnp.full(replicas, WEIGHT_DECAY)}


def _median_time(fn, repeats: int) -> float:
    fn()  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def engine_seconds(model, tx, replicas: int, steps: int, repeats: int) -> float:
    sim = engine.make_sgd_sim(model, tx, DataLayout("online", BATCH, n_test=BATCH))
    root = jax.random.key(0)
    keys = {name: jax.vmap(lambda i, t=tag: jax.random.fold_in(jax.random.fold_in(root, t), i))(jnp.arange(replicas))
            for name, tag in (("replica", 3), ("problem", 0), ("test", 1), ("inputs", 2))}
    hp = _hp(replicas)
    state, data, _ = jax.jit(engine.init_fn(sim))(keys, hp)
    segment = jax.jit(engine.segment_fn(sim, steps, 1))

    def run():
        jax.block_until_ready(segment(state, hp, data, jnp.int32(0)))

    return _median_time(run, repeats)


def loop_seconds(model, tx, steps: int, repeats: int) -> float:
    init_fn, step_fn = sgd(model, tx)
    problem = model.problem(jax.random.key(0))
    hp = {k: v[0] for k, v in _hp(1).items()}
    state0 = jax.jit(init_fn)(jax.random.key(1), problem, hp)
    data_key = jax.random.key(2)

    @jax.jit
    def one_step(state, t):
        keys = jax.random.split(jax.random.fold_in(data_key, t), BATCH)
        batch = jax.vmap(lambda k: model.sample(k, problem))(keys)
        return step_fn(state, batch, jax.random.fold_in(data_key, t), problem, hp)

    def run():
        state = state0
        for t in range(steps):
            state = one_step(state, t)
        jax.block_until_ready(state)

    return _median_time(run, repeats)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    model = Transformer()
    tx = make_optimizer(TrainConfig(optimizer="adamw"))
    tokens = BATCH * model.context * args.steps
    print(f"# {jax.devices()[0].platform}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(f"# transformer L={model.layers} H={model.heads} d={model.d_model} T={model.context}, |B|={BATCH}, "
          f"{args.steps} steps, median of {args.repeats}")
    base = tokens / loop_seconds(model, tx, args.steps, args.repeats)
    print(f"{'setup':<22} {'replica-tokens/s':>18} {'vs loop':>8}")
    print(f"{'loop, R = 1':<22} {base:>18,.0f} {1.0:>8.2f}")
    for r in args.replicas:
        rate = r * tokens / engine_seconds(model, tx, r, args.steps, args.repeats)
        print(f"{f'engine, R = {r}':<22} {rate:>18,.0f} {rate / base:>8.2f}")
    print(f"# load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
