"""Explanations of a classifier's predictions, on any ``torch.nn.Module``: saliency maps and their sanity checks.

This layer sits beside ``estimators``, ``kernels``, ``dynamics`` and ``robustness``: it may import ``train``,
``models``, ``data``, ``runs`` and the base modules, never ``experiments``, ``report`` or ``cli``.
"""

from fitscope.explain.saliency import (
    METHODS,
    competitive_gradient_x_input,
    gradient_x_input_all_classes,
    saliency_maps,
)
from fitscope.explain.sanity import (
    CascadeMaps,
    cascade_layers,
    cascading_models,
    cascading_randomization,
    random_labels,
    retrain_on_random_labels,
)
from fitscope.explain.similarity import METRICS, spearman_similarity, ssim_similarity, top_k_overlap

__all__: list[str] = [
    "CascadeMaps",
    "METHODS",
    "METRICS",
    "cascade_layers",
    "cascading_models",
    "cascading_randomization",
    "competitive_gradient_x_input",
    "gradient_x_input_all_classes",
    "random_labels",
    "retrain_on_random_labels",
    "saliency_maps",
    "spearman_similarity",
    "ssim_similarity",
    "top_k_overlap",
]
