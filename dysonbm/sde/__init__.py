"""Eigenvalue SDEs: confining potentials, the implicit-bond solver, exact samplers, the level processes
(Dyson Brownian motion, Wishart process, the weighted level SDE of a Gram matrix) — all stepped by one
integrator (`dysonbm.sde.split`) —, their matrix-space references, SGD → SDE conversions, a driver.

Each process is a frozen dataclass of static settings with pure functions of one replica
(``init(key, hp)``, ``step(state, key, hp)``, ``observe(state, hp)``); see `dysonbm.sde.processes`
for the protocol and the integration scheme.
"""

from dysonbm.sde.conversions import bulk_spacing, diffusion_from_noise, recommended_dt, temperature
from dysonbm.sde.draws import chi2
from dysonbm.sde.driver import simulate
from dysonbm.sde.matrix import MatrixDBM, MatrixWishart
from dysonbm.sde.potentials import POTENTIALS, Potential, get_potential
from dysonbm.sde.processes import DysonBM, LevelState, Process, WishartProcess
from dysonbm.sde.samplers import sample_hermite, sample_laguerre
from dysonbm.sde.split import Control, LevelTerms, StepInfo, split_step
from dysonbm.sde.weighted import LevelCoefficients, LevelSDE, integrate_levels, level_coefficients, level_velocity

__all__ = [
    "Potential", "POTENTIALS", "get_potential",
    "Process", "DysonBM", "WishartProcess", "LevelSDE", "MatrixDBM", "MatrixWishart", "LevelState",
    "LevelCoefficients", "level_coefficients", "level_velocity", "integrate_levels",
    "LevelTerms", "Control", "StepInfo", "split_step",
    "sample_hermite", "sample_laguerre", "chi2", "recommended_dt", "bulk_spacing",
    "temperature", "diffusion_from_noise", "simulate",
]
