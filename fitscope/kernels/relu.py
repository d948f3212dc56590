"""The closed-form ReLU step of the infinite-width recursion, shared by the FC and conv kernels.

For a ReLU layer with c_sigma = 2 and pre-activation covariances Sigma(x, x'),
Sigma(x, x), Sigma(x', x') (METHODS section 5), with
rho = Sigma(x, x') / sqrt(Sigma(x, x) Sigma(x', x')) and t = arccos(rho):

    Sigma_new   = sqrt(Sigma(x, x) Sigma(x', x')) (sin t + (pi - t) cos t) / pi
    Sigma_dot   = (pi - t) / pi

Written by hand: it is two lines of maths that neither torch nor scipy ship,
and the FC and conv kernels must share exactly one copy of it.
"""

from __future__ import annotations

import math

import torch


def relu_step(cov: torch.Tensor, var1: torch.Tensor, var2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One ReLU layer of the NNGP/NTK recursion, elementwise.

    Args:
        cov: Sigma(x, x') of the previous layer, any shape.
        var1: Sigma(x, x), broadcastable to ``cov``.
        var2: Sigma(x', x'), broadcastable to ``cov``.

    Returns:
        ``(sigma, sigma_dot)``, both of ``cov``'s broadcast shape: the next
        layer's covariance and the derivative kernel. Where a variance is 0
        (an all-zero input patch), ``sigma`` is 0 and ``sigma_dot`` is 1/2,
        the limit of the formulas at rho = 0.
    """
    norm = torch.sqrt(torch.clamp(var1 * var2, min=0.0))
    tiny = torch.finfo(cov.dtype).tiny
    rho = torch.where(norm > tiny, cov / torch.clamp(norm, min=tiny), torch.zeros_like(cov))
    rho = torch.clamp(rho, -1.0, 1.0)
    t = torch.arccos(rho)
    # sin(arccos rho) = sqrt(1 - rho^2) and cos(arccos rho) = rho: one transcendental pass, not three
    sigma = norm * (torch.sqrt(1.0 - rho * rho) + (math.pi - t) * rho) / math.pi
    sigma_dot = (math.pi - t) / math.pi
    return sigma, sigma_dot
