"""Generic figure helpers: make a matplotlib figure, embed it in HTML as a PNG data URI.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure`
on an Agg canvas), never through ``pyplot``'s global state, so they are safe
in threads, in tests and on machines without a display. Study-specific
figures live next to their study (e.g. :mod:`fitscope.report.randomization`).
"""

from __future__ import annotations

import base64
import io
import sys

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def new_figure(width: float = 6, height: float = 4) -> Figure:
    """A blank figure of ``width`` x ``height`` inches on an Agg canvas, with constrained layout.

    Add axes with ``fig.subplots(...)`` and pass the figure to
    :func:`figure_to_data_uri`.
    """
    if not (width > 0 and height > 0):
        raise ValueError(f"new_figure: width and height must be positive inches; got {width} x {height}")
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The PNG bytes of ``fig`` at ``dpi`` (the figure is left open)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def figure_to_data_uri(fig: Figure, *, dpi: int = DPI) -> str:
    """``fig`` as a ``data:image/png;base64,...`` URI for an ``<img src>``; the figure is then released.

    Releasing clears the figure (and closes it if ``pyplot`` manages it), so
    loops that make many figures do not accumulate memory.
    """
    try:
        png = figure_to_png(fig, dpi=dpi)
    finally:
        release_figure(fig)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def release_figure(fig: Figure) -> None:
    """Free ``fig``: close it in ``pyplot`` if pyplot knows it, and clear its artists."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()
