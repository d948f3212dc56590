"""Versions of Python, the platform, fitscope and its dependencies (for run.json and ``fitscope env``)."""

from __future__ import annotations

import platform
from importlib import metadata

import fitscope

# key in the result -> distribution name on PyPI
_PACKAGES = {
    "torch": "torch",
    "numpy": "numpy",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
}


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Versions that decide whether a run can be replayed bit for bit.

    Returns:
        A dict with ``python``, ``platform``, ``fitscope``, ``torch``,
        ``numpy``, ``scipy``, ``sklearn``, ``pandas``, ``pyarrow`` (``None``
        when a package is not installed), ``torch_threads`` (intra-op threads
        of torch), ``cuda`` (the CUDA version torch was built with, or
        ``None``) and ``cuda_available``.
    """
    out: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fitscope": fitscope.__version__,
    }
    for key, dist in _PACKAGES.items():
        out[key] = _distribution_version(dist)
    out["torch_threads"] = None
    out["cuda"] = None
    out["cuda_available"] = False
    if out["torch"] is not None:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["cuda"] = torch.version.cuda
        out["cuda_available"] = bool(torch.cuda.is_available())
    return out
