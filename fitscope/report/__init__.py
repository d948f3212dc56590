"""The HTML report: jinja2 templates, matplotlib figures embedded as data URIs, one file per run.

- :func:`new_figure`, :func:`figure_to_data_uri`: make a figure with the
  object API and embed it (:mod:`fitscope.report.figures`).
- :func:`render`, :func:`write_report`: render a template that extends
  ``base.html.j2`` and write ``<run>/report.html`` (:mod:`fitscope.report.html`).
- :func:`format_percent`, :func:`percent_columns`: fractions shown as
  percentages in text and in tables; :func:`study_verdict`: the one-sentence
  answer at the top of a study's report.
"""

from fitscope.report.figures import figure_to_data_uri, figure_to_png, new_figure
from fitscope.report.html import (
    format_number,
    format_percent,
    format_seconds,
    html_table,
    make_environment,
    percent_columns,
    render,
    study_verdict,
    write_report,
)

__all__ = [
    "figure_to_data_uri",
    "figure_to_png",
    "format_number",
    "format_percent",
    "format_seconds",
    "html_table",
    "make_environment",
    "new_figure",
    "percent_columns",
    "render",
    "study_verdict",
    "write_report",
]
