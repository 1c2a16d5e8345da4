"""Models: one file each, all following the protocol of `dysonbm.models.base`; `dysonbm.registry`
maps their names to them."""

from dysonbm.models.base import Model, masked_mean
from dysonbm.models.gaussian_rbm import GaussianRBM
from dysonbm.models.linear_net import LinearNet
from dysonbm.models.multilayer import Multilayer
from dysonbm.models.teacher_student import TeacherStudent

__all__ = ["Model", "masked_mean", "GaussianRBM", "LinearNet", "Multilayer", "TeacherStudent"]
