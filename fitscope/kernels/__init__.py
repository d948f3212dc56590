"""Infinite-width kernels (NTK, NNGP, CNTK) and the kernel machines built on them.

- :func:`ntk`: the kernel matrix, ``arch="fc"`` or ``"conv"``, ``kind="ntk" | "nngp"``.
- :class:`NTKRegressor`, :class:`NTKClassifier`, :class:`NTKSVC`: scikit-learn estimators.
- :func:`complexity_measure`: the fine-grained generalization measure of Arora et al. 2019.
"""

from fitscope.kernels.api import ntk
from fitscope.kernels.complexity import ComplexityResult, complexity_measure
from fitscope.kernels.machines import NTKClassifier, NTKRegressor, NTKSVC

__all__ = ["ComplexityResult", "NTKClassifier", "NTKRegressor", "NTKSVC", "complexity_measure", "ntk"]
