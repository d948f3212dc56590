"""Adversarial robustness and backdoors, on any ``torch.nn.Module``: attacks, defenses, trigger inversion.

This layer sits beside ``estimators``, ``kernels``, ``dynamics`` and ``explain``: it may import ``train``,
``models``, ``data``, ``runs`` and the base modules, never ``experiments``, ``report`` or ``cli``.
"""

__all__: list[str] = []
