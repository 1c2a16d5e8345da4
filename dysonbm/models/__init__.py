"""Models: one file each, all following the protocol of `dysonbm.models.base`."""

from dysonbm.models.base import Model, masked_mean
from dysonbm.models.gaussian_rbm import GaussianRBM
from dysonbm.models.multilayer import Multilayer
from dysonbm.models.teacher_student import TeacherStudent
from dysonbm.models.transformer import Transformer

REGISTRY: dict[str, type] = {cls.name: cls for cls in (TeacherStudent, Multilayer, GaussianRBM, Transformer)}

# eigenvalue SDEs run through the same runner (`[model] name = "dyson"`, ...)
from dysonbm.dyson import DysonBM, MatrixDBM, MatrixWishart, WishartProcess  # noqa: E402

REGISTRY.update({"dyson": DysonBM, "wishart": WishartProcess, "matrix_dyson": MatrixDBM, "matrix_wishart": MatrixWishart})

__all__ = ["Model", "masked_mean", "GaussianRBM", "Multilayer", "TeacherStudent", "Transformer", "REGISTRY"]
