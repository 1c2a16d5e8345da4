"""A spectrum of levels with their targets, its degenerate pairs, and the stationary window:
what the scaling analyses of every model read (`dysonbm.analysis.scaling`, `.linear_net`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Spectrum:
    """Levels ``(P, R, T, L)`` of one observable with their targets ``(P, L)`` (same order)."""

    name: str  # observable name in the results
    levels: np.ndarray
    targets: np.ndarray
    pairs: list[tuple[int, int]]  # level indices of degenerate pairs
    singles: list[int]  # level indices of non-degenerate levels
    labels: dict[int, str]  # pair or single (first index) -> label, e.g. "κ = 4.38"
    kappa: dict[int, float] = field(default_factory=dict)  # RBM: κ of each mode


def stationary_start(results, fraction: float = 0.5) -> int:
    """First snapshot index of the stationary window: the last ``fraction`` of the run."""
    steps = results.steps
    return int(np.searchsorted(steps, steps[-1] * (1.0 - fraction), side="left"))


def degenerate_groups(target: np.ndarray, rtol: float = 1e-6) -> tuple[list, list]:
    """Pairs of adjacent levels with equal (non-zero) targets, and the remaining levels."""
    pairs, singles, i, n = [], [], 0, target.size
    scale = max(np.max(np.abs(target)), 1e-12)
    while i < n:
        if i + 1 < n and abs(target[i + 1] - target[i]) <= rtol * scale and abs(target[i]) > rtol * scale:
            if i + 2 < n and abs(target[i + 2] - target[i]) <= rtol * scale:
                raise ValueError(f"target {target[i]} is more than doubly degenerate")
            pairs.append((i, i + 1))
            i += 2
        else:
            singles.append(i)
            i += 1
    return pairs, singles
