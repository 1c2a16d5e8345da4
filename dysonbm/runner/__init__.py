"""Chunks of replicas × segments of steps, sharded over devices, checkpointed, resumable.

The grid's P points × R replicas are flattened to global replica ids ``g = p·R + r``. A run
covers a contiguous range of ids (all of them, or one shard ``i/n``), in chunks of at most a
fixed size (padded with copies of their last replica, which are discarded), each chunk one
jitted program whose replica axis is split over the local devices by ``shard_map``. A chunk
holds grid points of one batch size, to which its batches and persistent chains are padded
(`Plan.padding`): a sweep of batch sizes compiles once per size, and no replica pays for a
larger batch than its own. Between segments the
host collects the snapshots, reports progress and writes a checkpoint; nothing crosses to
the host inside a scan. No number depends on the chunk size, the device count, the shard, the
other grid points or an interruption: each replica's key is ``fold_in(root, g)``.

Devices. On CPU each XLA device is one core's worth of work, and XLA exposes a single host
device unless told otherwise before its first computation. The ``dbm`` command does this for
you (one device per core); from Python, call ``dysonbm.cli.configure_host_devices()`` before
the first computation (or set ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>``).

Memory per replica (`Plan.footprint`, printed by ``dbm run --dry-run``):

    device  = 2 × (state + replica data + one batch + broadcast problem/test set
                   + observables of one segment and of t = 0 + hyperparameters)
    results = snapshots × observables + hyperparameters + 5 bytes (diverged, diverge_step)

The factor 2 is headroom for XLA's temporaries (gradients, the scan carry being rebuilt).
With ``run.chunk_size = 0`` the chunk is the largest that fits a budget: half of the
devices' free memory where the backend reports it, else 2 GiB (CPU). The host holds the
results of the whole run (``results`` × replicas), which is also the size written to disk.

Many machines. ``shard=(i, n)`` runs the i-th of n contiguous ranges of replica ids (whole
grid points when n ≤ P) into a directory of its own; `io.merge` joins them. A job spanning
hosts (`run_distributed`, after ``jax.distributed.initialize``) gives each process the shard
of its process index on its own local devices and lets process 0 merge the parts. Replicas
never communicate, so a global mesh would buy nothing but cross-host synchronisation at
every segment, and a slow or lost host would stall all others; independent parts also
checkpoint and resume one by one. The parts meet on a filesystem all processes see.

Checkpoints (``DIR/checkpoint/``): ``chunk-<c>.npz`` with the results of each finished
chunk, and ``position.npz`` with the position (chunk, segments done), the state of the
current chunk and its snapshots so far. Both carry a hash of the resolved config and of
what fixes the layout of the numbers (chunk, slots, segment length, id range, versions); a
checkpoint whose hash differs, or that cannot be read, is refused (`CheckpointError`).
Files are written to a temporary name and moved into place with ``os.replace``.
"""

from dysonbm.runner.checkpoint import CHECKPOINT, CheckpointError
from dysonbm.runner.distributed import run_distributed
from dysonbm.runner.dryrun import calibrate, dry_run, estimate
from dysonbm.runner.execute import execute, manifest, results_mismatch, run, state_of
from dysonbm.runner.plan import CPU_BUDGET, DEVICE_FRACTION, HEADROOM, Plan, device_budget, shard_range, simulation
from dysonbm.runner.progress import Progress

__all__ = [
    "CHECKPOINT", "CheckpointError", "run_distributed", "calibrate", "dry_run", "estimate", "execute", "manifest",
    "results_mismatch", "run", "state_of", "CPU_BUDGET", "DEVICE_FRACTION", "HEADROOM", "Plan", "device_budget",
    "shard_range", "simulation", "Progress",
]
