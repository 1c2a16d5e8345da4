"""A job spanning processes: each runs its shard into a part directory; process 0 merges the parts."""

from __future__ import annotations

import json
import time
from pathlib import Path


from dysonbm import io
from dysonbm.config import Config
from dysonbm.runner.execute import _complete_results, run, state_of


def run_distributed(cfg: Config, out: str | Path, process_id: int, num_processes: int, wait_s: float = 1.0,
                    **kwargs) -> io.Results | None:
    """One process of a multi-process job: shard ``process_id`` of ``num_processes`` into
    ``out/part-<i>``; process 0 then waits for every part and merges them into ``out``.

    Call after ``jax.distributed.initialize``; ``out`` must be on a filesystem all processes
    see. Returns the merged results on process 0, this process's part elsewhere.
    """
    out = Path(out)
    reason = io.not_ours(out) if out.exists() else None
    if reason:  # the parts would be written into it and the merge replace it
        raise FileExistsError(f"{out}: {reason}; not replacing it")
    if state_of(out) == "complete":
        if kwargs.get("resume"):
            return _complete_results(out, cfg, None)
        if not kwargs.get("overwrite"):
            raise FileExistsError(f"{out} exists (use --overwrite or --resume)")
    part = run(cfg, out / f"part-{process_id}", shard=(process_id, num_processes), **kwargs)
    if process_id != 0:
        return part
    parts = [out / f"part-{i}" for i in range(num_processes)]
    like = json.loads((parts[0] / "manifest.json").read_text())  # as stored: JSON lists, not tuples
    while True:
        ready = [p for p in parts if _is_part_of(p, like, num_processes)]
        if len(ready) == num_processes:
            break
        time.sleep(wait_s)
    merged = io.merge([io.load(p) for p in parts])
    io.save(merged, out, overwrite=True)
    return merged


def _is_part_of(path: Path, like: dict, count: int) -> bool:
    """A finished part of the same job (a stale part of another config is waited over)."""
    if state_of(path) != "complete":
        return False
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("config") == like["config"] and m.get("shard", {}).get("count") == count
