"""Infinite-width kernels (NTK, NNGP, CNTK) and the kernel machines built on them.

- :func:`ntk`: the kernel matrix, ``arch="fc"`` or ``"conv"``, ``kind="ntk" | "nngp"``.
- :class:`NTKRegressor`, :class:`NTKClassifier`, :class:`NTKSVC`: scikit-learn estimators.
- :func:`complexity_measure`: the fine-grained generalization measure of Arora et al. 2019.
- :class:`RandomPatchFeatures`, :func:`random_patch_features`, :func:`cntk_lap_patch_kernel`: Coates-Ng
  random-patch features and their combination with CNTK-LAP.
"""

from fitscope.kernels.api import ntk
from fitscope.kernels.complexity import ComplexityResult, complexity_measure
from fitscope.kernels.machines import NTKClassifier, NTKRegressor, NTKSVC
from fitscope.kernels.patches import RandomPatchFeatures, cntk_lap_patch_kernel, random_patch_features

__all__ = ["ComplexityResult", "NTKClassifier", "NTKRegressor", "NTKSVC", "RandomPatchFeatures", "cntk_lap_patch_kernel",
           "complexity_measure", "ntk", "random_patch_features"]
