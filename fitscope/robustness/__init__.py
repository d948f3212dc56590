"""Adversarial robustness and backdoors, on any ``torch.nn.Module``: attacks, defenses, trigger inversion.

This layer sits beside ``estimators``, ``kernels``, ``dynamics`` and ``explain``: it may import ``train``,
``models``, ``data``, ``runs`` and the base modules, never ``experiments``, ``report`` or ``cli``.
"""

__all__: list[str] = []

# adversarial robustness (fitscope robust): evasion attacks and the L0 Fourier defense
from fitscope.robustness.attacks import (  # noqa: E402
    ATTACKS, RobustAccuracy, adversarial_examples, l0_pixel_attack, l0_projection, margin, patch_attack,
    pgd_attack, pixel_count, predict_labels, robust_accuracy,
)
from fitscope.robustness.fourier_defense import FourierIHTDefense, fourier_sparse_projection, iht_recover  # noqa: E402

__all__ += ["ATTACKS", "FourierIHTDefense", "RobustAccuracy", "adversarial_examples", "fourier_sparse_projection",
            "iht_recover", "l0_pixel_attack", "l0_projection", "margin", "patch_attack", "pgd_attack", "pixel_count",
            "predict_labels", "robust_accuracy"]

# backdoors (fitscope backdoor): BadNets poisoning, attack success, Neural Cleanse and SmoothInv
from fitscope.robustness.backdoor import (  # noqa: E402
    CORNERS, Poisoned, additive_attack_success, apply_trigger, attack_success_rate, clean_accuracy, patch_mask,
    poison_rows, top_positions_overlap,
)
from fitscope.robustness.trigger_inversion import (  # noqa: E402
    ANOMALY_THRESHOLD, MAD_CONSISTENCY, AnomalyResult, NeuralCleanseResult, SmoothInvResult, anomaly_index,
    neural_cleanse, smoothed_probs, smoothinv,
)

__all__ += ["ANOMALY_THRESHOLD", "AnomalyResult", "CORNERS", "MAD_CONSISTENCY", "NeuralCleanseResult", "Poisoned",
            "SmoothInvResult", "additive_attack_success", "anomaly_index", "apply_trigger", "attack_success_rate",
            "clean_accuracy", "neural_cleanse", "patch_mask", "poison_rows", "smoothed_probs", "smoothinv",
            "top_positions_overlap"]
