"""Adversarial robustness and backdoors, on any ``torch.nn.Module``: attacks, defenses, trigger inversion.

- Evasion (``fitscope robust``): :func:`pgd_attack` (L-inf / L2 PGD with restarts; the one PGD of
  :mod:`fitscope.train.adversarial`, which adversarial training uses too), :func:`l0_pixel_attack`,
  :func:`patch_attack`, :func:`robust_accuracy`; the sparse-Fourier IHT defense (:func:`iht_recover`,
  :class:`FourierIHTDefense`).
- Backdoors (``fitscope backdoor``): BadNets poisoning (:func:`poison_rows`, :func:`apply_trigger`),
  :func:`attack_success_rate`, trigger inversion by :func:`neural_cleanse` with its :func:`anomaly_index`, and
  :func:`smoothinv` from a single image.

This layer sits beside ``estimators``, ``kernels``, ``dynamics`` and ``explain``: it may import ``train``,
``models``, ``data``, ``runs`` and the base modules, never ``experiments``, ``report`` or ``cli``.
"""

from fitscope.robustness.attacks import (
    ATTACKS,
    RobustAccuracy,
    accuracy,
    adversarial_examples,
    l0_pixel_attack,
    l0_projection,
    margin,
    patch_attack,
    pgd_attack,
    pixel_count,
    predict_labels,
    robust_accuracy,
)
from fitscope.robustness.backdoor import (
    CORNERS,
    Poisoned,
    additive_attack_success,
    apply_trigger,
    attack_success_rate,
    patch_mask,
    poison_rows,
    top_positions_overlap,
)
from fitscope.robustness.fourier_defense import FourierIHTDefense, fourier_sparse_projection, iht_recover
from fitscope.robustness.trigger_inversion import (
    ANOMALY_THRESHOLD,
    MAD_CONSISTENCY,
    AnomalyResult,
    NeuralCleanseResult,
    SmoothInvResult,
    anomaly_index,
    neural_cleanse,
    smoothed_probs,
    smoothinv,
)

__all__ = [
    "ANOMALY_THRESHOLD", "ATTACKS", "CORNERS", "MAD_CONSISTENCY", "AnomalyResult", "FourierIHTDefense",
    "NeuralCleanseResult", "Poisoned", "RobustAccuracy", "SmoothInvResult", "accuracy", "additive_attack_success",
    "adversarial_examples", "anomaly_index", "apply_trigger", "attack_success_rate",
    "fourier_sparse_projection", "iht_recover", "l0_pixel_attack", "l0_projection", "margin", "neural_cleanse",
    "patch_attack", "patch_mask", "pgd_attack", "pixel_count", "poison_rows", "predict_labels", "robust_accuracy",
    "smoothed_probs", "smoothinv", "top_positions_overlap",
]
