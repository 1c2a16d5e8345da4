"""Host-side checks of process settings and per-replica parameters: one-line ValueErrors naming the field."""

from __future__ import annotations

import numpy as np


def _first_bad(values, ok) -> float:
    values = np.asarray(values, dtype=float).reshape(-1)
    bad = values[~np.asarray(ok).reshape(-1)]
    return float(bad[0]) if bad.size else float(values[0])


def _check_common(obj, n_min: int = 2):
    if not isinstance(obj.n, (int, np.integer)) or obj.n < n_min:
        raise ValueError(f"n must be an integer >= {n_min}, got n={obj.n!r}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")


def _check_rate(hp) -> None:
    """Raise ValueError for a negative decay rate γ of a matrix process (it would blow up)."""
    v = np.asarray(hp["gamma"], dtype=float)
    if not np.all(v >= 0):
        raise ValueError(f"gamma must be >= 0 (a negative rate grows without bound), got gamma={_first_bad(v, v >= 0)}")
