"""End-to-end reproductions behind `dbm reproduce NAME`: run the sweeps, analyse, write a report.

Each reproduction module defines ``run(out: Path, quick: bool, progress: bool) -> Path`` that
returns the path of the report it wrote under ``out``.
"""

from __future__ import annotations

import importlib

# name -> module under dysonbm.reproduce
REGISTRY = {
    "linear-scaling": "linear_scaling",
    "phase-diagram": "phase_diagram",
    "sgd-langevin": "sgd_langevin",
}


def get(name: str):
    if name not in REGISTRY:
        raise KeyError(name)
    return importlib.import_module(f"dysonbm.reproduce.{REGISTRY[name]}")
