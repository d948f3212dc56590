"""Render the HTML report of a run: jinja2 templates, tables and figures, one self-contained file.

Templates live in ``fitscope/report/templates``. A study's template extends
``base.html.j2`` and fills ``{% block content %}``; the base adds the header
(title, run id, kind, status, created) and the closing sections (config and
seeds, timings, versions, the command line to replay the run).

Available in every template (no import needed):

- ``figure(uri, caption)``: a ``<figure>`` with a PNG data URI and a caption
  (``None`` for ``uri`` renders nothing);
- ``table(df_or_rows, caption=None, max_rows=200)``: a styled table from a
  DataFrame, a list of dicts or a dict (also usable as a filter:
  ``{{ df | table }}``); numbers right-aligned and formatted per column;
- filters ``num`` (one number), ``seconds`` (a duration), ``flatten`` (a
  nested dict as dotted keys), ``command`` (an argv list as a shell line).

``macros.html.j2`` holds the same ``figure`` and ``table`` as macros for
templates that prefer ``{% from "macros.html.j2" import figure, table %}``.
"""

from __future__ import annotations

import functools
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from fitscope.runs.atomic import atomic_write_text

REPORT_NAME = "report.html"
_MISSING = Markup('<span class="na">&mdash;</span>')


# -- number formatting ---------------------------------------------------
def _is_number(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, (list, tuple, dict)) else False
    except (TypeError, ValueError):
        return False


def _float_decimals(magnitude: float) -> int | None:
    """Decimals that give about 4 significant digits to numbers up to ``magnitude``; None: use %.3g."""
    if magnitude == 0:
        return 0
    if magnitude < 1e-3 or magnitude >= 1e9:
        return None
    return min(6, max(0, 3 - math.floor(math.log10(magnitude))))


def format_number(value: Any, decimals: int | None = -1) -> str:
    """A number as short readable text: ints with thousands separators, floats to ~4 significant digits.

    Args:
        value: the number (anything else is returned as ``str(value)``).
        decimals: fixed decimals for a float; ``-1`` picks them from the
            value's size, ``None`` uses scientific notation.
    """
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if _is_missing(value):
        return "\u2014"
    if not _is_number(value):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if math.isinf(value):
        return "\u221e" if value > 0 else "-\u221e"
    if decimals == -1:
        decimals = _float_decimals(abs(value))
    if decimals is None:
        return f"{value:.3g}"
    return f"{value:,.{decimals}f}"


def format_seconds(seconds: Any) -> str:
    """A duration in seconds as text: ``0.42 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if _is_missing(seconds) or not _is_number(seconds):
        return "\u2014"
    s = float(seconds)
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round((s % 3600) / 60)):02d} min"


def flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level of dotted keys (``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``)."""
    if not isinstance(mapping, Mapping):
        return {prefix: mapping} if prefix else {"": mapping}
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def command_line(argv: Sequence[str] | None) -> str:
    """A recorded ``sys.argv`` as a shell line to replay it (``fitscope ...`` for the console script)."""
    if not argv:
        return ""
    argv = [str(a) for a in argv]
    head = os.path.basename(argv[0])
    if head in ("fitscope", "fitscope.exe") or argv[0].endswith(os.path.join("fitscope", "__main__.py")):
        return shlex.join(["fitscope", *argv[1:]])
    if head == "-c":
        return shlex.join(["python", "-c", "...", *argv[1:]])
    return shlex.join(argv)


def _strict(value: Any) -> None:
    """Raise jinja2's UndefinedError for a template variable that is not defined (StrictUndefined)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()


# -- tables ----------------------------------------------------------------
def _to_frame(data: Any, index: bool | None):
    import pandas as pd

    if isinstance(data, pd.Series):
        data = data.to_frame()
    if isinstance(data, pd.DataFrame):
        frame = data
        keep_index = index if index is not None else not isinstance(frame.index, pd.RangeIndex) or (
            frame.index.name is not None
        )
        if keep_index:
            frame = frame.reset_index()
        return frame
    if isinstance(data, Mapping):
        return pd.DataFrame({"name": list(map(str, data.keys())), "value": list(data.values())})
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        rows = list(data)
        if rows and all(isinstance(r, Mapping) for r in rows):
            return pd.DataFrame(rows)
        if not rows:
            return pd.DataFrame()
    raise TypeError(f"table: expected a DataFrame, a list of dicts or a dict; got {type(data).__name__}")


def _cell_text(value: Any, decimals: int | None | str) -> Markup:
    if isinstance(value, Markup):
        return value
    if isinstance(value, (list, tuple, dict)):
        from fitscope.runs.atomic import canonical_json

        try:
            return escape(canonical_json(value))
        except TypeError:
            return escape(str(value))
    if _is_missing(value):
        return _MISSING
    if decimals == "auto":  # a mixed column (e.g. config values): show each value as it is
        import numpy as np

        if isinstance(value, (float, np.floating)) and math.isfinite(value):
            return escape(f"{float(value):.6g}")
        return escape(format_number(value))
    if decimals == "int":
        return escape(format_number(value))
    return escape(format_number(value, decimals))


def html_table(data: Any, caption: str | None = None, max_rows: int = 200, index: bool | None = None) -> Markup:
    """A styled HTML table of ``data`` (DataFrame, list of dicts, or dict as name/value rows).

    Numeric columns are right-aligned and share one number format per column
    (about 4 significant digits of the largest value); missing values show
    as a dash; booleans as yes/no. At most ``max_rows`` rows are shown, with
    a note on how many were left out. A DataFrame's index is shown when it
    is named or not a plain range (``index`` forces it either way).
    """
    import numpy as np
    import pandas as pd

    _strict(data)
    frame = _to_frame(data, index)
    n_rows = len(frame)
    shown = frame.iloc[:max_rows] if max_rows and n_rows > max_rows else frame
    columns = list(frame.columns)
    kinds: list[tuple[bool, Any]] = []  # (numeric?, decimals)
    for column in columns:
        series = frame[column]
        if pd.api.types.is_bool_dtype(series):
            kinds.append((False, "auto"))
        elif pd.api.types.is_integer_dtype(series):
            kinds.append((True, "int"))
        elif pd.api.types.is_float_dtype(series):
            finite = np.abs(series.to_numpy(dtype=float, na_value=np.nan))
            finite = finite[np.isfinite(finite)]
            kinds.append((True, _float_decimals(float(finite.max())) if finite.size else 0))
        else:
            numeric = series.dropna().map(_is_number)
            kinds.append((bool(len(numeric)) and bool(numeric.all()), "auto"))
    parts = ['<div class="table-wrap"><table class="data">']
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead><tr>")
    for column, (numeric, _) in zip(columns, kinds):
        cls = ' class="num"' if numeric else ""
        parts.append(f"<th{cls}>{escape(str(column))}</th>")
    parts.append("</tr></thead><tbody>")
    for row in shown.itertuples(index=False, name=None):
        parts.append("<tr>")
        for value, (numeric, decimals) in zip(row, kinds):
            cls = ' class="num"' if numeric else ""
            parts.append(f"<td{cls}>{_cell_text(value, decimals)}</td>")
        parts.append("</tr>")
    if not n_rows:
        parts.append(f'<tr><td class="na" colspan="{max(1, len(columns))}">no rows</td></tr>')
    parts.append("</tbody></table>")
    if len(shown) < n_rows:
        parts.append(f'<p class="note">showing {len(shown):,} of {n_rows:,} rows</p>')
    parts.append("</div>")
    return Markup("".join(parts))


def figure(uri: str | None, caption: str | None = None, alt: str | None = None) -> Markup:
    """A ``<figure>`` showing the image ``uri`` (a data URI) with ``caption``; empty when ``uri`` is None."""
    _strict(uri)
    if not uri:
        return Markup("")
    text = caption or ""
    cap = f"<figcaption>{escape(text)}</figcaption>" if text else ""
    return Markup(f'<figure><img src="{escape(uri)}" alt="{escape(alt or text or "figure")}">{cap}</figure>')


# -- environment and rendering --------------------------------------------
def make_environment(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    """A jinja2 environment over the package templates (autoescape on, StrictUndefined).

    Args:
        loader: an extra loader searched before the package templates (e.g.
            a ``DictLoader`` or ``FileSystemLoader`` of your own templates,
            which may extend ``base.html.j2``).
    """
    package = jinja2.PackageLoader("fitscope", "report/templates")
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([loader, package]) if loader is not None else package,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    from fitscope import __version__

    env.globals.update(figure=figure, table=html_table, _figure_html=figure, _table_html=html_table,
                       fitscope_version=__version__)
    env.filters.update(
        table=html_table, num=format_number, seconds=format_seconds, flatten=flatten, command=command_line
    )
    return env


@functools.lru_cache(maxsize=1)
def default_environment() -> jinja2.Environment:
    """The shared environment over the package templates (built once)."""
    return make_environment()


def render(template_name: str, context: dict, *, environment: jinja2.Environment | None = None) -> str:
    """Render the template ``template_name`` with ``context``; returns the HTML text.

    Args:
        template_name: e.g. ``"randomization.html.j2"``.
        context: template variables; a variable the template uses but
            ``context`` lacks is an error (StrictUndefined).
        environment: default :func:`default_environment`.
    """
    env = environment or default_environment()
    return env.get_template(template_name).render(**context)


def run_context(run) -> dict:
    """The ``run`` variable templates see: the run's ``run.json`` dict plus ``path`` and ``report``."""
    meta = dict(run.meta)
    meta["path"] = str(run.path)
    meta["report"] = str(Path(run.path) / REPORT_NAME)
    meta.setdefault("timings", {})
    return meta


def write_report(run, template_name: str, context: dict, *,
                 environment: jinja2.Environment | None = None) -> Path:
    """Render ``template_name`` for ``run`` and write ``<run>/report.html`` atomically; returns its path.

    The template sees ``context`` plus ``run`` (see :func:`run_context`);
    ``title`` defaults to "<kind> run <id>".
    """
    from fitscope.runs.run import utc_now

    full = {"title": f"{run.kind} run {run.id}", "generated": utc_now(), **context, "run": run_context(run)}
    html = render(template_name, full, environment=environment)
    return atomic_write_text(Path(run.path) / REPORT_NAME, html)
