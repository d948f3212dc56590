"""Generic figure helpers: make a matplotlib figure, embed it in HTML as a PNG data URI.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure`
on an Agg canvas), never through ``pyplot``'s global state, so they are safe
in threads, in tests and on machines without a display. Study-specific
figures live next to their study (e.g. :mod:`fitscope.report.randomization`).

Sizes are chosen for the page: a report's text column is :data:`PAGE_PX`
pixels wide at a desktop width (1400 px window), and a PNG is shown at its
natural size (``inches * DPI`` pixels) when it fits. So a figure is at most
:data:`MAX_WIDTH` inches wide, a panel meant to sit beside another is
:data:`PANEL_WIDTH` inches (two fit on one line; on a narrow screen they stack,
see ``figure()`` in :mod:`fitscope.report.html`), and no text is smaller than
:data:`MIN_FONT_PT` points (about 12 px at :data:`DPI`):
:func:`figure_to_png` raises smaller text to it.
"""

from __future__ import annotations

import base64
import io
import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110
PAGE_PX = 952  # the report's text column at a 1400 px window (max-width 1040 minus padding)
MAX_WIDTH = 8.5  # inches: 935 px, shown unscaled in the text column
PANEL_WIDTH = 4.2  # inches: 462 px, two panels side by side fit the text column
SMALL_FONT = 9  # points: legends, panel titles
MIN_FONT_PT = 8  # points: 12.2 px at DPI 110, the smallest text a figure may hold


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


def percent_axis(axis, decimals: int = 1) -> None:
    """Label ``axis`` (``ax.xaxis`` or ``ax.yaxis``) of fractions as percentages: 0.25 -> ``25%``, 0.035 -> ``3.5%``."""
    from matplotlib.ticker import FuncFormatter

    from fitscope.report.html import format_percent

    axis.set_major_formatter(FuncFormatter(lambda value, _: format_percent(value, decimals)))


def plain_log_ticks(axis) -> None:
    """Numbers as plain text on a log ``axis`` (``20``, ``0.01``, not ``2x10^1``): majors always, minors 2, 3, 5
    within a range of less than two decades (call it after the data are drawn)."""
    from matplotlib.ticker import FuncFormatter

    lo, hi = axis.get_view_interval()
    narrow = hi > 0 and lo > 0 and np.log10(hi / lo) < 2

    def minor(value, _):
        mantissa = value / 10 ** np.floor(np.log10(value) + 1e-9)
        return f"{value:g}" if narrow and any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def enforce_min_font(fig: Figure, minimum: float = MIN_FONT_PT) -> None:
    """Raise every text of ``fig`` smaller than ``minimum`` points (titles, labels, legends, ticks) to it."""
    from matplotlib.text import Text

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for ticks in (axis.get_major_ticks(), axis.get_minor_ticks()):
                if ticks and ticks[0].label1.get_fontsize() < minimum:
                    axis.set_tick_params(which="both", labelsize=minimum)
                    break
    for text in fig.findobj(Text):
        if text.get_fontsize() < minimum:
            text.set_fontsize(minimum)


def figure_to_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The PNG bytes of ``fig`` at ``dpi`` (the figure is left open); text is at least :data:`MIN_FONT_PT`."""
    enforce_min_font(fig)
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


def draw_input(ax, x: np.ndarray, kind: str, limits: tuple[float, float] | None = None) -> None:
    """Draw one input on ``ax``: an image, a signal or a feature bar plot (``limits``: a shared y range)."""
    if kind == "image":
        if x.shape[0] == 3:
            img = np.transpose(x, (1, 2, 0))
            low, high = float(img.min()), float(img.max())
            ax.imshow((img - low) / (high - low) if high > low else np.zeros_like(img), aspect="equal")
        else:
            ax.imshow(x[0], cmap="gray_r", interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
    elif kind == "signal":
        for channel in x:
            ax.plot(channel, lw=0.8)
        ax.set_xticks([])
        ax.tick_params(labelsize=MIN_FONT_PT)
    else:
        ax.bar(np.arange(x.shape[0]), x, width=0.9, color="tab:blue")
        ax.axhline(0.0, color="gray", lw=0.5)
        ax.set_xticks([])
        ax.tick_params(labelsize=MIN_FONT_PT)
    if limits is not None and kind != "image":
        ax.set_ylim(*limits)
