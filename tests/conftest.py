import os

# Tests see two CPU devices, like the 2-core CI machine with `dbm`'s default; set before jax loads.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()

# `dbm` commands run in-process store their compiled programs in a cache of this session's own
# (`dysonbm.compile_cache`), never in the user's
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["DBM_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="dbm-test-xla-")
atexit.register(shutil.rmtree, os.environ["DBM_COMPILE_CACHE"], True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# a small valid config that the CLI tests vary
GOOD = """
name = "tiny"
seed = 0
replicas = 4
steps = 20
snapshot_every = 10
[model]
name = "teacher_student"
[train]
lr = 0.1
batch_size = 4
[data]
protocol = "fixed"
n_data = 64
"""


def enable_x64():
    """A block computed in float64: `jax.enable_x64` where jax has it (0.8 on), else the
    `jax.experimental` context manager it replaced, so the tests run at the minimum versions."""
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as experimental_x64

    return experimental_x64(True)


@pytest.fixture
def write_config(tmp_path):
    """Write a TOML text to a file and return its path."""

    def write(text: str, name: str = "cfg.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
