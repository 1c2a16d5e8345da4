"""Analysis of results: reference laws and statistics (`rmt`), spectra of any matrix (`spectrum`) and
checkpoint readers (`weights`), the linear-scaling fits (`scaling`), the phase diagram (`phases`), the
level SDE of X = WWᵀ with measured coefficients (`level_sde`), and SGD against its Langevin
prediction (`langevin_comparison`; the Gaussian RBM's in `rbm_langevin`)."""

from dysonbm.analysis import langevin_comparison, level_sde, phases, rbm_langevin, rmt, scaling, spectrum, weights

__all__ = ["langevin_comparison", "level_sde", "phases", "rbm_langevin", "rmt", "scaling", "spectrum", "weights"]
