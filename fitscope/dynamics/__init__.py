"""Training dynamics and the loss landscape: library functions on any ``torch.nn.Module``.

- :func:`hessian_top_eigenvalues`: the top-k eigenvalues of the full-batch loss Hessian (Lanczos on
  Hessian-vector products; the sharpness is the first).
- :func:`hessian_trace`: Hutchinson estimates of the Hessian's trace and Frobenius norm, with standard errors.
- :func:`hessian_vector_product`: one ``H v``.
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

__all__ = ["LOSSES", "HessianTrace", "LossHessian", "TopEigenvalues", "check_hessian_memory", "hessian_memory_bytes",
           "hessian_top_eigenvalues", "hessian_trace", "hessian_vector_product", "parameter_count",
           "per_example_loss"]
