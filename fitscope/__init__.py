"""fitscope: measure how neural networks fit their data.

Layers (each imports only those below it): ``cli`` -> ``report`` ->
``experiments`` -> ``estimators`` / ``kernels`` / ``privacy`` -> ``train`` ->
``models`` -> ``data`` -> ``runs``. See DESIGN.md in the shared docs.
"""

__version__ = "0.1.0"

from fitscope.errors import FitscopeError  # noqa: E402

__all__ = ["FitscopeError", "__version__"]
