"""Explanations of a classifier's predictions, on any ``torch.nn.Module``: saliency maps and their sanity checks.

This layer sits beside ``estimators``, ``kernels``, ``dynamics`` and ``robustness``: it may import ``train``,
``models``, ``data``, ``runs`` and the base modules, never ``experiments``, ``report`` or ``cli``.
"""

__all__: list[str] = []
