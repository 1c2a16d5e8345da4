"""The replica engine: independence of replicas, chunking, masking, divergence, physics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dysonbm import config, runner
from dysonbm.data import draw_samples
from dysonbm.models.multilayer import Multilayer
from dysonbm.models.teacher_student import TeacherStudent, stationary_tau2

ML = """
name = "ml"
seed = 3
replicas = {replicas}
steps = {steps}
snapshot_every = {every}
[model]
name = "multilayer"
[train]
lr = 0.5
batch_size = 4
init_std = 1.0
[[sweep]]
{sweep}
"""

TS = """
name = "ts"
seed = 1
replicas = {replicas}
steps = {steps}
snapshot_every = {every}
[model]
name = "teacher_student"
noise = 0.1
[train]
lr = 0.1
batch_size = 16
[[sweep]]
{sweep}
"""


def data_table(protocol, **dataset):
    """The [data] table: dataset settings only where there is a dataset (online data has none)."""
    return {"protocol": protocol, **({} if protocol == "online" else dataset)}


def ml_cfg(replicas=3, steps=40, every=20, protocol="fixed", reshuffle="false", sweep="lr = [0.5]", **over):
    raw = config.tomllib.loads(ML.format(replicas=replicas, steps=steps, every=every, sweep=sweep))
    raw["data"] = data_table(protocol, batches_per_epoch=25, reshuffle=reshuffle == "true")
    return config.from_dict(config.apply_overrides(raw, over))


def ts_cfg(replicas=3, steps=40, every=20, protocol="online", sweep="lr = [0.1]", **over):
    raw = config.tomllib.loads(TS.format(replicas=replicas, steps=steps, every=every, sweep=sweep))
    raw["data"] = data_table(protocol, batches_per_epoch=20)
    return config.from_dict(config.apply_overrides(raw, over))


def final_params_loop(cfg):
    """Single replicas, one at a time, in a plain Python loop over steps (no vmap)."""
    plan = runner.Plan(cfg, devices=1)
    out = []
    init, step = jax.jit(plan.sim.init), jax.jit(plan.sim.step)
    for g in range(plan.total):
        keys = jax.tree_util.tree_map(lambda k: k[0], plan.replica_keys(np.array([g])))
        hp = {k: jnp.asarray(v[0]) for k, v in plan.hp_of(np.array([g])).items()}
        state, data = init(keys, hp)
        for t in range(cfg.steps):
            state = step(state, jnp.int32(t), hp, data)
        out.append(np.asarray(state["params"]))
    return np.stack(out)


def final_weights(results):
    return results["weights"][:, :, -1].reshape((-1,) + results["weights"].shape[3:])


@pytest.mark.parametrize("make", [
    lambda: ml_cfg(record={"weights": True}),  # teacher, data and test set per replica
    lambda: ml_cfg(reshuffle="true", record={"weights": True}, ensemble={"problem": "point", "inputs": "point"}),
    lambda: ts_cfg(record={"weights": True}),
    lambda: ts_cfg(protocol="fixed", record={"weights": True}, ensemble={"problem": "replica"},
                   model={"name": "teacher_student", "noise": 0.1, "teacher_eigs": [1.0, 2.0]}),
])
def test_vmapped_replicas_equal_python_loop_bitwise(make):
    cfg = make()
    vmapped = final_weights(runner.run(cfg, progress=False, devices=1))
    looped = final_params_loop(cfg)
    np.testing.assert_array_equal(vmapped, looped)


@pytest.mark.parametrize("make", [lambda: ml_cfg(replicas=64, steps=20, every=10, record={"weights": True}),
                                  # the level-SDE coefficients, on each replica's training data
                                  lambda: ml_cfg(replicas=64, steps=20, every=10,
                                                 model={"name": "multilayer", "level_sde": True}),
                                  # one sample per batch (its contractions summed elementwise)
                                  # and an odd batch (a matrix product)
                                  lambda: ml_cfg(replicas=32, steps=20, every=10, record={"weights": True},
                                                 sweep="batch_size = [1, 3]"),
                                  lambda: ts_cfg(replicas=64, steps=20, every=10, record={"weights": True}),
                                  lambda: ts_cfg(replicas=64, steps=20, every=10, protocol="fixed",
                                                 record={"weights": True}, ensemble={"problem": "replica"})])
def test_result_does_not_depend_on_chunk_size(make):
    cfg = make()
    runs = {c: runner.run(cfg, progress=False, devices=1, chunk_size=c) for c in (1, 7, 64)}
    for c in (1, 7):
        for name in runs[64].names():
            np.testing.assert_array_equal(runs[c][name], runs[64][name], err_msg=f"{name}, chunk {c}")


def test_a_sweep_compiles_once_per_program_and_batch_size_and_reports_it_apart(capsys):
    # 6 grid points x 6 replicas in chunks of 4: init and segment compiled once per batch size
    cfg = ts_cfg(replicas=6, steps=20, every=10, sweep="lr = [0.05, 0.1, 0.2]\nbatch_size = [4, 16]",
                 run={"chunk_size": 4})
    plan = runner.Plan(cfg, devices=1)
    # chunks hold points of one batch size: lr-major order alternates |B|, 2 chunks per point
    assert plan.n_chunks == 12 and {plan.chunk_padding(c).batch for c in range(12)} == {4, 16}
    res = runner.run(cfg, progress=True, devices=1)
    assert res.manifest["compiles"] == 4
    assert 0 < res.manifest["compile_s"] < res.manifest["wall_time_s"]
    assert "compile" in capsys.readouterr().err


def test_sharding_over_two_devices_is_bitwise_equal_to_one():
    assert len(jax.devices()) >= 2
    cfg = ml_cfg(replicas=10, steps=20, every=10, record={"weights": True})
    one = runner.run(cfg, progress=False, devices=1)
    two = runner.run(cfg, progress=False, devices=2)
    for name in one.names():
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


RBM = """
name = "rbm"
seed = 2
replicas = 4
steps = 40
snapshot_every = 20
[model]
name = "gaussian_rbm"
n_visible = 4
n_hidden = 4
mu2 = 9.0
m2 = 4.0
gibbs_steps = 2
[train]
lr = 0.05
init_std = 0.1
[[sweep]]
batch_size = {sweep}
"""


def rbm_cfg(sweep):
    return config.from_dict(config.tomllib.loads(RBM.format(sweep=sweep)))


@pytest.mark.parametrize("make", [
    lambda sweep: ts_cfg(replicas=4, protocol="online", sweep=f"batch_size = {sweep}", record={"weights": True}),
    lambda sweep: ts_cfg(replicas=4, protocol="fixed", sweep=f"batch_size = {sweep}", record={"weights": True},
                         ensemble={"inputs": "point"}),
    lambda sweep: ml_cfg(replicas=4, protocol="fixed", sweep=f"batch_size = {sweep}", record={"weights": True},
                         reshuffle="true"),
    lambda sweep: rbm_cfg(sweep),  # persistent chains padded like batches
], ids=["ts-online", "ts-fixed-point-inputs", "ml-fixed-reshuffled", "rbm"])
def test_a_points_numbers_do_not_depend_on_the_other_batch_sizes_of_the_grid(make):
    """Replicas with |B| = 4 give the same bits alone and in a grid with |B| = 16: a chunk pads
    batches and chains to its own points' batch size, never to the grid's largest."""
    alone = runner.run(make("[4]"), progress=False)
    grid = runner.run(make("[4, 16]"), progress=False)
    assert alone.names() == grid.names()
    for name in alone.names():
        if not name.startswith("problem_"):  # stored at their own granularity, compared below
            np.testing.assert_array_equal(grid[name][:1], alone[name], err_msg=name)
    for r in range(4):
        for name, value in alone.problem(0, r).items():
            np.testing.assert_array_equal(grid.problem(0, r)[name], value, err_msg=name)
    # and the batch size matters: the |B| = 16 point has other numbers
    assert not np.allclose(grid["test_loss"][1], alone["test_loss"][0], rtol=1e-3)


def test_hand_gradients_match_autodiff():
    key = jax.random.key(0)
    ts = TeacherStudent(n=3, teacher_eigs=(1.0, 2.0, 3.0))
    problem = ts.problem(key)
    hp = {"lr": 0.1, "batch_size": 5, "init_std": 0.3, "noise": 0.2}
    w, _ = ts.init(jax.random.key(1), problem, hp)
    batch = draw_samples(ts, jax.random.key(2), problem, 8)
    mask = (jnp.arange(8) < 5).astype(jnp.float32)
    _, g, _ = ts.loss_and_grad(w, (), batch, mask, None, problem, hp)
    np.testing.assert_allclose(g, jax.grad(ts.objective)(w, batch, mask, problem, hp), rtol=1e-5, atol=1e-6)
    for activation in ("tanh", "relu", "identity"):
        ml = Multilayer(activation=activation)
        problem = ml.problem(key)
        w, _ = ml.init(jax.random.key(1), problem, {**hp, "init_std": 2.0})
        batch = draw_samples(ml, jax.random.key(2), problem, 8)
        loss, g, _ = ml.loss_and_grad(w, (), batch, mask, None, problem, hp)
        np.testing.assert_allclose(g, jax.grad(ml.loss)(w, batch, mask, problem, hp), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(loss, ml.loss(w, batch, mask, problem, hp), rtol=1e-6)


def test_diverging_replica_is_flagged_and_leaves_neighbours_untouched():
    calm = ts_cfg(replicas=8, steps=60, every=20, sweep="lr = [0.1]", record={"weights": True})
    mixed = ts_cfg(replicas=8, steps=60, every=20, sweep="lr = [0.1, 40.0]", record={"weights": True})
    a = runner.run(calm, progress=False)
    b = runner.run(mixed, progress=False)
    assert not b["diverged"][0].any()
    assert b["diverged"][1].all()
    steps = b["diverge_step"][1]
    assert (steps > 0).all() and (steps <= 60).all()
    assert np.isfinite(b["weights"][1]).all()  # frozen at the last finite state
    for name in a.names():
        if name.startswith("problem_"):  # one teacher for the run (the published default)
            assert a.axes[name][0] != "point"
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)
            continue
        np.testing.assert_array_equal(b[name][:1], a[name], err_msg=name)


@pytest.mark.parametrize("lr,batch", [(0.1, 16), (0.3, 8)])
def test_teacher_student_stationary_variance(lr, batch):
    """Online data: the off-diagonal entries of W − W_t have variance τ² (SCIENCE.md §3.1).

    Snapshots 50 steps apart are independent (relaxation time ~1/α steps), so the sample of
    n = replicas·snapshots·2 entries has a variance estimator with standard error
    τ²·sqrt(2/n) (Gaussian entries); we require agreement within 5 standard errors.
    """
    cfg = ts_cfg(replicas=400, steps=2000, every=50, sweep=f"lr = [{lr}]\nbatch_size = [{batch}]",
                 record={"weights": True})
    res = runner.run(cfg, progress=False)
    plan_teacher = 2.0  # teacher_eigs = (2, 2): W_t = 2·I whatever O
    w = res["weights"][0, :, 10:]  # drop the first 500 steps (relaxation from the init)
    off = np.concatenate([w[..., 0, 1].ravel(), w[..., 1, 0].ravel()])
    assert np.allclose(w[..., 0, 0].mean(), plan_teacher, atol=0.01)
    tau2 = stationary_tau2(lr, batch, 0.1, n=2)
    n = off.size
    se = tau2 * np.sqrt(2.0 / n)
    assert abs(off.var() - tau2) < 5 * se, (off.var(), tau2, se)
