"""End-to-end reproductions behind `dbm reproduce NAME`: run the sweeps, analyse, write a report.

Each reproduction module defines ``run(out: Path, quick: bool, progress: bool, resume: bool)
-> Path`` that returns the path of the report it wrote under ``out``, and ``OUTPUTS``, the
names it writes at the top of ``out`` (of which ``RUNS`` are results stores), so that an
existing ``out`` holding anything else is never written into.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

# name -> module under dysonbm.reproduce
REGISTRY = {
    "linear-net": "linear_net",
    "linear-scaling": "linear_scaling",
    "phase-diagram": "phase_diagram",
    "sgd-langevin": "sgd_langevin",
}


def get(name: str):
    if name not in REGISTRY:
        raise KeyError(name)
    return importlib.import_module(f"dysonbm.reproduce.{REGISTRY[name]}")


def out_problem(module, out: Path, replace: bool) -> str | None:
    """Why a reproduction may not write into ``out``, or None. An existing, non-empty ``out``
    needs ``replace`` (--overwrite or --resume) and may hold only what the reproduction
    writes (``module.OUTPUTS``, leftovers of an interrupted save), its results stores
    (``module.RUNS``) each a directory dbm wrote: anything else is someone's data."""
    from dysonbm import io

    if not out.is_dir():
        return None
    try:
        entries = sorted(os.listdir(out))
    except OSError as err:
        return f"--out = '{out}': cannot be read ({err.strerror or type(err).__name__})"
    if not entries:
        return None
    if not replace:
        return f"--out = '{out}': exists (use --overwrite to rerun into it, --resume to continue it)"
    for entry in entries:
        if entry in module.RUNS:
            reason = io.not_ours(out / entry)
            if reason:
                return f"--out = '{out}': {entry}: {reason}; not replacing it"
        elif entry not in module.OUTPUTS and not re.fullmatch(r"\..+\.(tmp|old)-\d+", entry):
            return f"--out = '{out}': holds {entry!r}, which this reproduction did not write; not replacing it"
    return None
