"""Named studies, each a :class:`~fitscope.experiments.study.Study` run by the one study runner.

:data:`STUDIES` maps a study's name (its run kind) to the module that defines
it as ``STUDY``; :func:`get_study` imports it on demand, so that importing
this package does not pull in every study's dependencies (Opacus, Flower).
"""

from __future__ import annotations

import importlib

from fitscope.errors import ConfigError

#: study name -> module defining ``STUDY``
STUDIES: dict[str, str] = {
    "audit": "fitscope.experiments.audit",
    "randomization": "fitscope.experiments.randomization",
    "leak": "fitscope.experiments.leak",
    "privacy-study": "fitscope.experiments.privacy_study",
    "federated": "fitscope.experiments.federated",
    "train": "fitscope.experiments.private_training",
    "kernels-uci": "fitscope.experiments.kernels_uci",
    "kernels-small-data": "fitscope.experiments.kernels_small_data",
    "kernels-complexity": "fitscope.experiments.kernels_complexity",
    "seed-agreement": "fitscope.experiments.seed_agreement",
    "dynamics-sharpness": "fitscope.experiments.dynamics_sharpness",
    "dynamics-connectivity": "fitscope.experiments.dynamics_connectivity",
    "dynamics-exp-lr": "fitscope.experiments.dynamics_exp_lr",
    "dynamics-layers": "fitscope.experiments.dynamics_layers",
    "dynamics-identity": "fitscope.experiments.dynamics_identity",
    "dynamics-matrix-factorization": "fitscope.experiments.dynamics_matrix_factorization",
    "noisy-labels": "fitscope.experiments.noisy_labels",
    "saliency": "fitscope.experiments.saliency",
    "robust": "fitscope.experiments.robust",
    "backdoor": "fitscope.experiments.backdoor",
}


def get_study(name: str):
    """The :class:`~fitscope.experiments.study.Study` called ``name`` (a key of :data:`STUDIES`)."""
    if name not in STUDIES:
        raise ConfigError(f"study: expected one of {', '.join(STUDIES)}; got {name!r}")
    return importlib.import_module(STUDIES[name]).STUDY
