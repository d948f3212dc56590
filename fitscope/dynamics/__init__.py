"""Training dynamics and the loss landscape: library functions on any ``torch.nn.Module``.

- :func:`hessian_top_eigenvalues`: the top-k eigenvalues of the full-batch loss Hessian (Lanczos on
  Hessian-vector products; the sharpness is the first).
- :func:`hessian_trace`: Hutchinson estimates of the Hessian's trace and Frobenius norm, with standard errors.
- :func:`hessian_vector_product`: one ``H v``.
- :func:`equivalent_exp_schedule`, :func:`lr_schedule`, :func:`is_scale_invariant`,
  :func:`check_scale_invariant`, :func:`predict_with_fresh_statistics`: the exponential learning rate that,
  without weight decay, trains a scale-invariant (batch-norm) network to the same function as weight decay
  (Li & Arora 2019).
- :func:`layer_groups`, :func:`reinitialize`, :func:`rerandomize`, :func:`layer_robustness`, :func:`snapshot`:
  reset one layer of a trained model to an earlier checkpoint or a fresh draw and measure the error
  (Zhang, Bengio, Singer 2019, "Are all layers created equal?").
- :func:`interpolate`, :func:`train_bezier`, :func:`dropout_path`, :func:`path_losses`, :func:`barrier`,
  :func:`dropout_stability`: mode connectivity, loss along the line, a trained Bezier curve (Garipov et al.
  2018) and the dropout path (Kuditipudi et al. 2019) between two networks, and their dropout stability.
- :func:`identity_or_constant`, :func:`output_correlations`, :func:`pixel_correlations`, :func:`function_form`:
  does a network trained to reproduce one example compute the identity or the constant on new inputs
  (Zhang, Bengio, Hardt, Mozer, Singer 2020, "Identity crisis").
- :func:`complete_deep`, :func:`complete_nuclear`, :func:`soft_impute`, :func:`effective_rank`,
  :func:`deep_factorization_gradients`: matrix completion by gradient descent on a deep factorization and its
  implicit low-rank bias against the nuclear norm (Arora, Cohen, Hu, Luo 2019).
- :func:`hessian_memory_bytes`, :func:`check_hessian_memory`, :func:`parameter_count`: the memory a request
  needs, estimated from the parameter count before anything is computed.

This layer sits beside ``estimators`` and ``kernels``: it may import ``train``, ``models``, ``data``, ``runs``
and the base modules, never ``experiments``, ``report`` or ``cli``.
"""

from fitscope.dynamics.hessian import (
    LOSSES,
    HessianTrace,
    LossHessian,
    TopEigenvalues,
    check_hessian_memory,
    hessian_memory_bytes,
    hessian_top_eigenvalues,
    hessian_trace,
    hessian_vector_product,
    parameter_count,
    per_example_loss,
)
from fitscope.dynamics.exp_lr import (
    SCHEDULES,
    ExpSchedule,
    ScaleInvariance,
    check_scale_invariant,
    equivalent_exp_schedule,
    is_scale_invariant,
    lr_schedule,
    predict_with_fresh_statistics,
)

from fitscope.dynamics.layer_robustness import (
    LayerGroup,
    LayerRobustness,
    layer_groups,
    layer_robustness,
    reinitialize,
    rerandomize,
    snapshot,
)

from fitscope.dynamics.connectivity import (
    BezierCurve,
    DropoutPath,
    barrier,
    bezier_point,
    check_same_architecture,
    dropout_forward,
    dropout_masks,
    dropout_path,
    dropout_stability,
    interpolate,
    loss_and_error,
    mlp_layers,
    parameters_of,
    path_losses,
    train_bezier,
)

from fitscope.dynamics.identity import (
    FORM_THRESHOLD,
    IdentityCorrelations,
    function_form,
    identity_or_constant,
    model_outputs,
    output_correlations,
    pixel_correlations,
)

from fitscope.dynamics.matrix_factorization import (
    DeepCompletion,
    complete_deep,
    complete_nuclear,
    deep_factorization_gradients,
    effective_rank,
    effective_rank_of_spectrum,
    init_factors,
    low_rank_matrix,
    nuclear_penalized_objective,
    observation_mask,
    relative_error,
    singular_values,
    soft_impute,
)

__all__ = ["LOSSES", "HessianTrace", "LossHessian", "TopEigenvalues", "check_hessian_memory", "hessian_memory_bytes",
           "hessian_top_eigenvalues", "hessian_trace", "hessian_vector_product", "parameter_count",
           "per_example_loss"]
__all__ += ["SCHEDULES", "ExpSchedule", "ScaleInvariance", "check_scale_invariant", "equivalent_exp_schedule",
            "is_scale_invariant", "lr_schedule", "predict_with_fresh_statistics"]
__all__ += ["LayerGroup", "LayerRobustness", "layer_groups", "layer_robustness", "reinitialize", "rerandomize",
            "snapshot"]
__all__ += ["BezierCurve", "DropoutPath", "barrier", "bezier_point", "check_same_architecture", "dropout_forward",
            "dropout_masks", "dropout_path", "dropout_stability", "interpolate", "loss_and_error", "mlp_layers",
            "parameters_of", "path_losses", "train_bezier"]
__all__ += ["FORM_THRESHOLD", "IdentityCorrelations", "function_form", "identity_or_constant", "model_outputs",
            "output_correlations", "pixel_correlations"]
__all__ += ["DeepCompletion", "complete_deep", "complete_nuclear", "deep_factorization_gradients",
            "effective_rank", "effective_rank_of_spectrum", "init_factors", "low_rank_matrix",
            "nuclear_penalized_objective", "observation_mask", "relative_error", "singular_values", "soft_impute"]
