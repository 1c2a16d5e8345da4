"""Two-level SGD spacings follow the GOE Wigner surmise at every learning rate and batch size
(SCIENCE.md §3.1): one panel per (α, |B|).

Each replica trains the N = 2 linear teacher–student model (teacher 2·I, label noise A) by plain
SGD on fresh samples: the kernel `dbm.sgd` with a user-written step, vmapped by `dbm.simulate`.
The spacing S = |λ₂ − λ₁| of the symmetric part, over the stationary second half, scaled by its
mean, is compared with P(s) = (π s/2) exp(−π s²/4).

    python experiments/wigner_surmise_panels.py          # 3 panels, 256 replicas
    python experiments/wigner_surmise_panels.py --full   # 6 panels, 3000 replicas
"""

import argparse

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import dysonbm as dbm


def pair_spacings(model, lr, batch_size, replicas, steps, key):
    teacher = model.problem(jax.random.key(0))
    init_fn, step_fn = dbm.sgd(model, optax.sgd)  # a function of the learning rate: lr stays a traced array

    def step(state, key, hp):
        batch = jax.vmap(lambda k: model.sample(k, teacher))(jax.random.split(key, batch_size))
        return step_fn(state, batch, None, teacher, hp)

    def eigenvalues(state, hp):
        w = state["params"]
        return jnp.linalg.eigvalsh((w + w.T) / 2)

    hp = {"lr": lr, "init_std": 0.1, "noise": model.noise}
    out = dbm.simulate(lambda k, hp: init_fn(k, teacher, hp), step, key=key, hp=hp, replicas=replicas,
                       steps=steps, every=steps // 20, save=eigenvalues)
    levels = np.asarray(out.saved)[:, 10:]  # the stationary second half
    return np.abs(levels[..., 1] - levels[..., 0]).ravel()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the published size")
    ap.add_argument("--out", default="wigner_surmise_panels.png", help="figure path")
    args = ap.parse_args(argv)
    panels = [(0.1, 16), (0.3, 16), (0.1, 4), (0.1, 64), (0.5, 16), (0.2, 8)] if args.full else [(0.1, 16), (0.3, 16), (0.1, 4)]
    replicas, steps = (3000, 5000) if args.full else (256, 400)
    model = dbm.TeacherStudent(n=2, teacher_eigs=(2.0, 2.0), noise=0.1)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    s = np.linspace(0, 3.5, 200)
    distances = []
    for ax, (lr, bs) in zip(axes[0], panels):
        spacing = pair_spacings(model, lr, bs, replicas, steps, jax.random.key(1))
        scaled = spacing / spacing.mean()
        ks, _ = dbm.rmt.ks_test(scaled, dbm.rmt.wigner_surmise_cdf, 1)
        distances.append(ks)
        print(f"α = {lr:g}, |B| = {bs}, T = {dbm.temperature(lr, bs):.4f}: ⟨S⟩ = {spacing.mean():.4f}, "
              f"KS distance to the surmise {ks:.3f}")
        ax.hist(scaled, bins=40, range=(0, 3.5), density=True, alpha=0.6)
        ax.plot(s, dbm.rmt.wigner_surmise(s, 1), "k")
        ax.set_title(f"α = {lr:g}, |B| = {bs}"), ax.set_xlabel("s = S/⟨S⟩")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    return distances


if __name__ == "__main__":
    main()
