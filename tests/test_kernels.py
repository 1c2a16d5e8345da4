"""The SGD kernel and `simulate` from Python, on the caller's own arrays, without a config."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dysonbm as dbm
from dysonbm import config, divergence, ensemble, runner
from dysonbm.data import dataset
from dysonbm.models.multilayer import Multilayer
from dysonbm.models.teacher_student import TeacherStudent

F = jnp.result_type(float)


def ml_config(replicas, steps, every, seed=3):
    return config.from_dict({
        "name": "ml", "seed": seed, "replicas": replicas, "steps": steps, "snapshot_every": every,
        "model": {"name": "multilayer"},
        "train": {"lr": 0.5, "batch_size": 4, "init_std": 1.0},
        "data": {"protocol": "fixed", "batches_per_epoch": 25},
        "record": {"weights": True},
    })


@pytest.mark.parametrize("model", [Multilayer(), TeacherStudent(noise=0.3)], ids=["multilayer", "teacher_student"])
def test_a_datasets_sample_does_not_depend_on_its_length_nor_on_the_replicas_beside_it(model):
    keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.key(7), r))(jnp.arange(5))

    def draw(count):
        @jax.jit
        @jax.vmap
        def one(key):
            return dataset(model, key, jax.random.fold_in(key, 1), model.problem(key), count)
        return one

    long = draw(300)(keys)
    for count, replicas in [(7, 5), (7, 1), (300, 2), (1, 3)]:
        short = draw(count)(keys[:replicas])
        for a, b in zip(jax.tree_util.tree_leaves(short), jax.tree_util.tree_leaves(long)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[:replicas, :count], err_msg=f"{count}, {replicas}")
    if isinstance(model, Multilayer):  # the teacher's labels, not a copy of the inputs
        assert float(jnp.std(long["y"])) > 0.05


def test_kernel_alone_equals_the_runner_bitwise():
    """64 replicas of the published multilayer ensemble (teacher, dataset and test set per
    replica), drawn by hand from the documented key derivation (`dysonbm.ensemble`), stepped
    by the jitted, vmapped kernel in a Python loop: the runner's weights, bit for bit."""
    replicas, steps, seed, batch, per_epoch = 64, 30, 3, 4, 25
    res = runner.run(ml_config(replicas, steps, steps, seed), progress=False)
    model = Multilayer()

    root = jax.random.key(seed)
    g = jnp.arange(replicas, dtype=jnp.uint32)  # one grid point: global id = replica
    key_of = lambda tag: jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, tag), i))(g)  # noqa: E731

    @jax.jit  # compiled like the runner's draws: op by op, x / sqrt(d) may round differently
    @jax.vmap
    def draw(problem_key, inputs_key):
        problem = model.problem(problem_key)
        return problem, dataset(model, inputs_key, inputs_key, problem, per_epoch * batch)

    problem, data = draw(key_of(ensemble.TAGS["problem"]), key_of(ensemble.TAGS["inputs"]))
    k_init, k_run, _ = jax.vmap(lambda k: tuple(jax.random.split(k, 3)))(key_of(ensemble.REPLICA))
    hp = {"lr": jnp.full(replicas, 0.5, F), "batch_size": jnp.full(replicas, batch, jnp.int32),
          "init_std": jnp.full(replicas, 1.0, F)}

    init_fn, step_fn = dbm.sgd(model, lambda lr: optax.sgd(lr))
    state = jax.jit(jax.vmap(init_fn))(k_init, problem, hp)
    step = jax.jit(jax.vmap(step_fn))
    for t in range(steps):
        b = (t % per_epoch) * batch
        xs = jax.tree_util.tree_map(lambda a: a[:, b:b + batch], data)
        state = step(state, xs, jax.vmap(lambda k: jax.random.fold_in(k, t))(k_run), problem, hp)

    assert int(state["step"][0]) == steps and not state["diverged"].any()
    np.testing.assert_array_equal(np.asarray(state["params"]), res["weights"][0, :, -1])


def test_simulate_runs_an_sde_process_as_the_runner_does():
    """`simulate` is the runner's machinery: with the runner's replica keys, the same levels."""
    cfg = config.from_dict({
        "name": "dbm", "seed": 5, "replicas": 6, "steps": 40, "snapshot_every": 20,
        "model": {"name": "dyson", "n": 8, "start": "semicircle", "dt": 0.01},
    })
    res = runner.run(cfg, progress=False)
    p = dbm.DysonBM(n=8, start="semicircle", dt=0.01)
    hp = {name: np.float32(v) for name, v in p.defaults().items()}
    out = dbm.simulate(p.init, p.step, p.observe, key=jax.random.fold_in(jax.random.key(5), ensemble.REPLICA),
                       hp=hp, replicas=6, steps=40, every=20)
    np.testing.assert_array_equal(out.steps, [0, 20, 40])
    np.testing.assert_array_equal(np.asarray(out.observed["levels"]), res["levels"][0])


def teacher_student_setup(teacher_eigs=(2.0, 2.0), batch=8):
    model = TeacherStudent(n=len(teacher_eigs), teacher_eigs=teacher_eigs, noise=0.3)
    teacher = model.problem(jax.random.key(0))

    def batch_of(key):
        return jax.vmap(lambda k: model.sample(k, teacher))(jax.random.split(key, batch))

    return model, teacher, batch_of


def test_custom_optax_chain_with_per_replica_learning_rates():
    """clip_by_global_norm then momentum SGD, lr traced per replica: each replica follows the
    update written out by hand (clip to norm 1, trace m ← g + 0.9 m, W ← W − lr m)."""
    model, teacher, batch_of = teacher_student_setup()
    tx = lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr, momentum=0.9))  # noqa: E731
    init_fn, step_fn = dbm.sgd(model, tx)
    lrs = jnp.asarray([0.01, 0.05, 0.2], F)
    hp = {"lr": lrs, "init_std": jnp.full(3, 0.1, F), "noise": jnp.full(3, 0.3, F)}
    keys = jax.random.split(jax.random.key(1), 3)
    state = jax.vmap(init_fn, in_axes=(0, None, 0))(keys, teacher, hp)
    step = jax.jit(jax.vmap(step_fn, in_axes=(0, 0, 0, None, 0)))

    w = np.asarray(state["params"], np.float64)
    m = np.zeros_like(w)
    clipped = 0
    for t in range(20):
        batches = jax.vmap(batch_of)(jax.random.split(jax.random.key(100 + t), 3))
        step_keys = jax.random.split(jax.random.key(200 + t), 3)
        for r in range(3):
            one = jax.tree_util.tree_map(lambda a, r=r: a[r], batches)
            mask = jnp.ones(8, F)
            _, grad, _ = model.loss_and_grad(jnp.asarray(w[r], F), (), one, mask, None, teacher,
                                             {"noise": hp["noise"][r]})
            grad = np.asarray(grad, np.float64)
            norm = np.sqrt(np.sum(grad**2))
            clipped += norm > 1.0
            grad = grad * min(1.0, 1.0 / norm)
            m[r] = grad + 0.9 * m[r]
            w[r] = w[r] - float(lrs[r]) * m[r]
        state = step(state, batches, step_keys, teacher, hp)
        np.testing.assert_allclose(np.asarray(state["params"]), w, rtol=2e-5, atol=2e-6, err_msg=f"step {t}")
    assert clipped > 0  # the clip acted, so the chain's first transform is exercised


def test_a_single_transform_is_shared_by_all_replicas():
    model, teacher, batch_of = teacher_student_setup()
    init_fn, step_fn = dbm.sgd(model, optax.adam(0.01))
    hp = {"init_std": jnp.full(4, 0.1, F), "noise": jnp.full(4, 0.3, F)}  # no lr: the transform holds it
    out = dbm.simulate(lambda k, hp: init_fn(k, teacher, hp),
                       lambda s, k, hp: step_fn(s, batch_of(k), k, teacher, hp),
                       lambda s, hp: {"loss": s["loss"]}, key=jax.random.key(2), hp=hp, steps=300, every=100)
    loss = np.asarray(out.observed["loss"])
    assert loss.shape == (4, 4)
    assert (loss[:, -1] < 0.2 * loss[:, 1]).all()  # Adam reaches the noise floor from the init


def test_divergence_freezes_one_replica_and_leaves_its_neighbours_untouched():
    model, teacher, batch_of = teacher_student_setup()
    init_fn, step_fn = dbm.sgd(model, lambda lr: optax.sgd(lr), bounds=dbm.Bounds(max_loss=1e6, max_weight=1e3))

    def run(lrs):
        hp = {"lr": jnp.asarray(lrs, F), "init_std": 0.1, "noise": 0.3}
        return dbm.simulate(lambda k, hp: init_fn(k, teacher, hp),
                            lambda s, k, hp: step_fn(s, batch_of(k), k, teacher, hp),
                            key=jax.random.key(3), hp=hp, steps=60, every=20, save=lambda s, hp: s["params"])

    calm = run([0.1] * 8)
    mixed = run([0.1] * 5 + [40.0] + [0.1] * 2)
    flag, at = np.asarray(mixed.state["diverged"]), np.asarray(mixed.state["diverge_step"])
    assert flag.tolist() == [False] * 5 + [True] + [False] * 2
    assert 0 < at[5] <= 60 and (at[flag == 0] == -1).all()
    assert np.isfinite(np.asarray(mixed.saved)).all()  # frozen at its last good weights
    assert (np.abs(np.asarray(mixed.saved[5, -1])) <= 1e3).all()
    np.testing.assert_array_equal(np.asarray(mixed.saved[5, -1]), np.asarray(mixed.saved[5, -2]))
    others = np.r_[0:5, 6:8]
    for a, b in zip(jax.tree_util.tree_leaves((calm.saved, calm.state)),
                    jax.tree_util.tree_leaves((mixed.saved, mixed.state))):
        np.testing.assert_array_equal(np.asarray(a)[others], np.asarray(b)[others])


@pytest.mark.parametrize("bound", [1e3, float("inf")])
def test_the_bound_check_flags_nan_inf_and_large_entries_in_any_leaf(bound):
    ok = {"w": jnp.ones((3, 4), F), "b": jnp.full(2, -7.0, F)}
    assert not bool(divergence.beyond(ok, bound))
    for leaf, value in [("w", np.nan), ("w", np.inf), ("b", -np.inf), ("b", np.nan)]:
        tree = {**ok, leaf: ok[leaf].at[1].set(value)}
        assert bool(divergence.beyond(tree, bound)), (leaf, value)
        # NaN must propagate through the max under vmap too (one bad replica of three)
        batch = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b, a]), ok, tree)
        assert jax.jit(jax.vmap(lambda t: divergence.beyond(t, bound)))(batch).tolist() == [False, True, False]
    large = {**ok, "b": ok["b"].at[0].set(-2e3)}
    assert bool(divergence.beyond(large, bound)) == np.isfinite(bound)
    assert not bool(divergence.beyond({}, bound))


def test_simulate_gives_a_replica_the_same_numbers_alone_and_among_others():
    # the multilayer's hidden layer is a matrix product: one replica alone runs as two (at
    # K = 33, |B| = 8 a batch axis of one replica is summed in another order than of two)
    model = Multilayer(features=33)
    problem = model.problem(jax.random.key(5))
    data = dataset(model, jax.random.key(6), jax.random.key(6), problem, 80)
    init_fn, step_fn = dbm.sgd(model, lambda lr: optax.sgd(lr))

    def step(state, key, hp):
        start = (state["step"] % 10) * 8
        batch = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, 8), data)
        return step_fn(state, batch, key, problem, hp)

    def run(lrs):
        hp = {"lr": jnp.asarray(lrs, F), "init_std": 1.0}
        return dbm.simulate(lambda k, hp: init_fn(k, problem, hp), step, key=jax.random.key(8), hp=hp, steps=30,
                            every=10, save=lambda s, hp: s["params"])

    alone, among = run([0.5]), run([0.5, 0.3, 0.1])
    assert alone.saved.shape == (1, 4, 33, 32) and alone.state["params"].shape == (1, 33, 32)
    np.testing.assert_array_equal(np.asarray(alone.saved[0]), np.asarray(among.saved[0]))
    assert not np.array_equal(np.asarray(among.saved[0, -1]), np.asarray(among.saved[0, 0]))  # it trained


def test_user_snapshot_function_is_recorded():
    model, teacher, batch_of = teacher_student_setup((1.0, 2.0, 3.0), batch=4)
    init_fn, step_fn = dbm.sgd(model, lambda lr: optax.sgd(lr))
    hp = {"lr": jnp.linspace(0.05, 0.2, 5, dtype=F), "init_std": 0.1, "noise": 0.0}
    init = lambda k, hp: init_fn(k, teacher, hp)  # noqa: E731
    step = lambda s, k, hp: step_fn(s, batch_of(k), k, teacher, hp)  # noqa: E731

    def save(state, hp):  # any pytree: the spectrum of the symmetric part, and a scalar
        w = state["params"]
        return {"eigs": jnp.linalg.eigvalsh(0.5 * (w + w.T)), "lr_times_step": hp["lr"] * state["step"]}

    out = dbm.simulate(init, step, key=jax.random.key(4), hp=hp, steps=400, every=50, save=save)
    assert out.observed == {}
    assert out.saved["eigs"].shape == (5, 9, 3) and out.saved["lr_times_step"].shape == (5, 9)
    np.testing.assert_allclose(out.saved["lr_times_step"], np.asarray(hp["lr"])[:, None] * out.steps, rtol=1e-6)
    w = np.asarray(out.state["params"])
    np.testing.assert_allclose(out.saved["eigs"][:, -1], np.linalg.eigvalsh(0.5 * (w + np.swapaxes(w, 1, 2))),
                               rtol=1e-5, atol=1e-5)
    # noise-free SGD converges to the teacher: the recorded spectrum ends at its eigenvalues
    np.testing.assert_allclose(out.saved["eigs"][:, -1], np.tile([1.0, 2.0, 3.0], (5, 1)), atol=2e-3)


def test_simulate_refuses_inconsistent_sizes():
    p = dbm.DysonBM(n=4)
    with pytest.raises(ValueError, match="multiple of every"):
        dbm.simulate(p.init, p.step, p.observe, key=jax.random.key(0), hp=p.defaults(), replicas=2, steps=10, every=3)
    with pytest.raises(ValueError, match="replicas="):
        dbm.simulate(p.init, p.step, p.observe, key=jax.random.key(0), hp=p.defaults(), steps=10)
    with pytest.raises(ValueError, match="leading axis"):
        dbm.simulate(p.init, p.step, p.observe, key=jax.random.key(0), hp={**p.defaults(), "beta": np.ones(3)},
                     replicas=2, steps=10)
    with pytest.raises(TypeError, match="optax"):
        dbm.sgd(TeacherStudent(), "adam")


def test_import_dysonbm_touches_no_device_and_keeps_sgd_a_function():
    # XLA reads its flags when the backend starts, not at import: a device count set after
    # `import dysonbm` (as the `dbm` command does) must still take effect
    code = ("import os, dysonbm, dysonbm.engine, dysonbm.sgd, dysonbm.runner; "
            "os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=3'; "
            "import jax; assert len(jax.devices('cpu')) == 3, jax.devices(); "
            "from dysonbm import sgd; assert callable(dysonbm.sgd) and sgd is dysonbm.sgd; "
            "assert dysonbm.simulate is dysonbm.engine.simulate; assert 'DysonBM' in dir(dysonbm)")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_dbm_command_still_sets_one_device_per_core():
    # `import dysonbm` imports jax now; the command must still set the device count before XLA starts
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = ("import os, sys; os.sched_getaffinity = lambda pid: {0, 1, 2}; "
            "from dysonbm import cli; sys.exit(cli.main(['info']))")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    assert sum(line.strip().startswith(("0:", "1:", "2:")) for line in out.splitlines()) == 3, out
