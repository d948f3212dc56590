"""The HTML report: jinja2 templates, matplotlib figures embedded as data URIs, one file per run.

- :func:`new_figure`, :func:`figure_to_data_uri`: make a figure with the
  object API and embed it (:mod:`fitscope.report.figures`).
- :func:`render`, :func:`write_report`: render a template that extends
  ``base.html.j2`` and write ``<run>/report.html`` (:mod:`fitscope.report.html`).
"""

from fitscope.report.figures import figure_to_data_uri, figure_to_png, new_figure
from fitscope.report.html import (
    format_number,
    format_seconds,
    html_table,
    make_environment,
    render,
    write_report,
)

__all__ = [
    "figure_to_data_uri",
    "figure_to_png",
    "format_number",
    "format_seconds",
    "html_table",
    "make_environment",
    "new_figure",
    "render",
    "write_report",
]
