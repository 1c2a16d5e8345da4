"""The checkpoint format: npz files carrying a fingerprint of the config and the layout, written
atomically; the state of a chunk moved to and from the host."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import jax
import numpy as np

CHECKPOINT = "checkpoint"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or written by another config."""


def _write_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` to a temporary file, then ``os.replace``: a reader sees old or new, whole."""
    # Zipped in memory first: numpy leaves its ZipFile open when interrupted, and one left on
    # a file we have closed prints a traceback when it is collected.
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # an interrupt mid-write leaves the previous file and no temporary
        tmp.unlink(missing_ok=True)
        raise


def _read_npz(path: Path, fingerprint: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as err:  # noqa: BLE001 - any unreadable file is refused the same way
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}); remove it or rerun with --overwrite") from None
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"checkpoint {path.parent} was written by another config or layout; "
                              "rerun with the same config and chunk size, or with --overwrite")
    return {"meta": meta, **arrays}


def _meta(fingerprint: str, **fields) -> np.ndarray:
    return np.asarray(json.dumps({"fingerprint": fingerprint, **fields}))


def _state_to_host(state) -> dict:
    leaves = jax.tree_util.tree_leaves(jax.device_get(state))
    out = {}
    for i, leaf in enumerate(leaves):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[f"state_{i}"] = np.asarray(leaf)
    return out


def _state_from_host(template, arrays: dict, sharding):
    """The saved leaves in the structure of ``template`` (a fresh init of the same chunk)."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if len([k for k in arrays if k.startswith("state_")]) != len(leaves):
        raise CheckpointError("checkpoint state does not match the program's state; rerun with --overwrite")
    out = []
    for i, like in enumerate(leaves):
        saved = arrays[f"state_{i}"]
        if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(jax.device_put(saved, sharding), impl=jax.random.key_impl(like))
        else:
            if saved.shape != like.shape or saved.dtype != like.dtype:
                raise CheckpointError("checkpoint state does not match the program's state; rerun with --overwrite")
            value = jax.device_put(saved, sharding)
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)
