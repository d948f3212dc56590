"""Data: loaders, validation at the boundary, and corruptions with ground truth.

Notation used across this package: ``N`` examples, ``n_classes`` classes
(``K`` is kept for a number of models, ``C`` here for channels); inputs are
float32 of shape ``(N, D)`` (vectors), ``(N, C, L)`` (signals) or
``(N, C, H, W)`` (images); labels are int64 in ``[0, n_classes)``.

- :func:`load`: a built-in name (:func:`builtin_names`) or a ``.npz``/``.csv``
  file, a folder of ``.npy`` files, an MNIST IDX folder, a CIFAR-10/100 python
  folder or an image folder -> a checked :class:`Dataset`. ``.npy`` files and
  large ``.npz`` members are memory-mapped, not copied (:mod:`fitscope.data.mapped`;
  :func:`is_memory_mapped` tells whether an array is backed by a map).
- :func:`validate_arrays`: the boundary check every loader runs.
- :func:`corrupt`: the randomization-test corruptions of Zhang et al. (2017),
  returning a :class:`Corruption` that records which rows changed;
  :func:`flip_labels`: exact-rate label flips for label-issue detection.
- :func:`write_sample_grid`: a PNG of samples per class.
"""

from fitscope.data.builtin import builtin_names, describe_builtin
from fitscope.data.corruptions import CORRUPTION_KINDS, Corruption, corrupt, flip_labels
from fitscope.data.dataset import Dataset
from fitscope.data.load import load, supported_file_kinds
from fitscope.data.mapped import is_memory_mapped
from fitscope.data.preview import write_sample_grid
from fitscope.data.validation import validate_arrays

__all__ = [
    "CORRUPTION_KINDS",
    "Corruption",
    "Dataset",
    "builtin_names",
    "corrupt",
    "describe_builtin",
    "flip_labels",
    "is_memory_mapped",
    "load",
    "supported_file_kinds",
    "validate_arrays",
    "write_sample_grid",
]
