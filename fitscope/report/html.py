"""Render the HTML report of a run: jinja2 templates, tables and figures, one self-contained file.

Templates live in ``fitscope/report/templates``. A study's template extends
``base.html.j2`` and fills ``{% block content %}``; the base adds the header
(title, run id, kind, status, created) and the closing sections (config and
seeds, timings, versions, the command line to replay the run).

Available in every template (no import needed):

- ``figure(uri, caption)``: a ``<figure>`` with a PNG data URI and a caption
  (``None`` for ``uri`` renders nothing);
- ``figure(uris, caption)`` with a list: the images as separate panels in
  one wrapping row (side by side on a wide screen, stacked on a narrow one);
  an item may also be a tile dict (``uri``, ``lines`` of text, ``flag``), drawn
  as an image with its caption lines in HTML under it (galleries);
- ``table(df_or_rows, caption=None, max_rows=200, percent=None)``: a styled
  table from a DataFrame, a list of dicts or a dict (also usable as a filter:
  ``{{ df | table }}``); numbers right-aligned and formatted per column; the
  columns named in ``percent`` (or in ``df.attrs["percent"]``) hold fractions
  shown as percentages; the table scrolls sideways inside its own box, its
  caption stays above the box;
- filters ``num`` (one number), ``pct`` (a fraction as a percentage:
  ``0.973`` -> ``97.3%``), ``pct_numbers`` (fractions written in a text as
  percentages), ``percent_columns`` (a DataFrame copy whose named columns
  show as percentages), ``seconds`` (a duration), ``flatten`` (a nested dict
  as dotted keys), ``command`` (an argv list as a shell line).

Every report may set ``verdict``: one sentence shown in a box at the top of
the page. :func:`write_report` asks the study's report module for one
(:func:`study_verdict`) when the context has none.

``macros.html.j2`` holds the same ``figure`` and ``table`` as macros for
templates that prefer ``{% from "macros.html.j2" import figure, table %}``.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import re
import shlex
import warnings
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


def format_percent(value: Any, decimals: int = 1, *, trim: bool = True) -> str:
    """A fraction as a percentage: ``0.973`` -> ``97.3%``, ``0.5`` -> ``50%``; missing values as a dash.

    Args:
        value: the fraction (1.0 is 100%); anything not a number is returned as text.
        decimals: decimals of the percentage.
        trim: drop a ``.0`` when the percentage is a whole number (prose);
            ``False`` keeps every value of a table column at the same decimals.
    """
    if _is_missing(value):
        return "\u2014"
    if isinstance(value, bool) or not _is_number(value):
        return str(value)
    percent = 100.0 * float(value)
    if math.isinf(percent):
        return "\u221e%" if percent > 0 else "-\u221e%"
    text = f"{percent:,.{decimals}f}"
    if trim and decimals > 0 and abs(percent - round(percent)) < 0.5 * 10 ** -decimals:
        text = f"{round(percent):,.0f}"
    return text + "%"


_FRACTION = re.compile(r"(?<![\w.])(0?\.\d+|1\.0+)(?![\w.%])")


def percent_numbers(text: Any) -> str:
    """A text with its fractions (numbers from 0 to 1 written with a point, e.g. ``>= 0.99``) as percentages.

    ``">= 0.99"`` -> ``">= 99%"``, ``"within +-0.05"`` -> ``"within +-5%"``;
    whole numbers and numbers above 1 are left alone.
    """
    def repl(match: re.Match) -> str:
        number = float(match.group(1))
        return format_percent(number, 2 if 0 < number < 0.01 else 1)

    return _FRACTION.sub(repl, str(text))


def percent_columns(frame: Any, *columns: str) -> Any:
    """A copy of the DataFrame ``frame`` whose ``columns`` (fractions) :func:`html_table` shows as percentages."""
    import pandas as pd

    _strict(frame)
    if frame is None or not isinstance(frame, pd.DataFrame):
        return frame
    out = frame.copy()
    out.attrs["percent"] = list(dict.fromkeys([*out.attrs.get("percent", []), *columns]))
    return out


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
            # an unnamed index beside an "index" column (rows picked with iloc) would come out as "level_0"
            unnamed = all(name is None for name in frame.index.names)
            frame = frame.reset_index(drop=index is None and unnamed and "index" in frame.columns)
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
    if isinstance(decimals, str) and decimals.startswith("pct"):
        return _MISSING if _is_missing(value) else escape(format_percent(value, int(decimals[3:]), trim=False))
    if isinstance(value, (list, tuple, dict)):
        from fitscope.runs.atomic import canonical_json

        try:
            text = canonical_json(value)
        except TypeError:
            text = str(value)
        # a line may break after any comma of a long list (a narrow screen), the text stays the same
        return Markup(",<wbr>").join(escape(part) for part in text.split(","))
    if _is_missing(value):
        return _MISSING
    if decimals == "auto":  # a mixed column (e.g. config values): show each value as it is
        import numpy as np

        if isinstance(value, (float, np.floating)) and math.isfinite(value):
            return escape(f"{float(value):.6g}")
        return escape(format_number(value))
    if decimals == "int":
        return escape(format_number(value))
    if decimals == "id":
        return escape(str(int(value)))
    return escape(format_number(value, decimals))


def html_table(data: Any, caption: str | None = None, max_rows: int = 200, index: bool | None = None,
               percent: Sequence[str] | None = None) -> Markup:
    """A styled HTML table of ``data`` (DataFrame, list of dicts, or dict as name/value rows).

    Numeric columns are right-aligned and share one number format per column
    (about 4 significant digits of the largest value); missing values show
    as a dash; booleans as yes/no. The columns named in ``percent`` or in a
    DataFrame's ``attrs["percent"]`` hold fractions and show as percentages
    (``0.973`` -> ``97.3%``). At most ``max_rows`` rows are shown, with a note
    on how many were left out. A DataFrame's index is shown when it is named
    or not a plain range (``index`` forces it either way).

    The table sits in its own box that scrolls sideways when the table is
    wider than the page (a phone); the caption is above the box, so it stays
    in view while the table scrolls.
    """
    import numpy as np
    import pandas as pd

    _strict(data)
    percent_names = set(percent or ())
    attrs = getattr(data, "attrs", None)
    if isinstance(attrs, Mapping):
        percent_names |= set(attrs.get("percent", ()))
    frame = _to_frame(data, index)
    n_rows = len(frame)
    shown = frame.iloc[:max_rows] if max_rows and n_rows > max_rows else frame
    columns = list(frame.columns)
    kinds: list[tuple[bool, Any]] = []  # (numeric?, decimals)
    for column in columns:
        series = frame[column]
        if column in percent_names and not pd.api.types.is_bool_dtype(series):
            values = np.array([float(v) for v in series if _is_number(v) and not _is_missing(v)], dtype=float)
            values = np.abs(values[np.isfinite(values)])
            numeric = bool(series.dropna().map(_is_number).all()) if series.notna().any() else True
            small = values.size and 0 < float(values.max()) < 0.01
            kinds.append((numeric, f"pct{2 if small else 1}"))
        elif pd.api.types.is_bool_dtype(series):
            kinds.append((False, "auto"))
        elif pd.api.types.is_integer_dtype(series):
            # row numbers (index, train_index, ...) read as labels: no thousands separators
            kinds.append((True, "id" if str(column).lower().endswith("index") else "int"))
        elif pd.api.types.is_float_dtype(series):
            finite = np.abs(series.to_numpy(dtype=float, na_value=np.nan))
            finite = finite[np.isfinite(finite)]
            kinds.append((True, _float_decimals(float(finite.max())) if finite.size else 0))
        else:
            numeric = series.dropna().map(_is_number)
            kinds.append((bool(len(numeric)) and bool(numeric.all()), "auto"))
    parts = ['<div class="table-box">']
    label = ""
    if caption:
        parts.append(f'<p class="table-caption">{escape(caption)}</p>')
        label = f' aria-label="{escape(caption)}"'
    parts.append(f'<div class="table-wrap" role="region" tabindex="0"{label}><table class="data">')
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
    parts.append("</tbody></table></div>")
    if len(shown) < n_rows:
        parts.append(f'<p class="note">showing {len(shown):,} of {n_rows:,} rows</p>')
    parts.append("</div>")
    return Markup("".join(parts))


def _panel_html(item: Any, alt: str) -> str:
    """One item of a panel row: an ``<img>`` for a URI, a captioned tile for a dict (``uri``, ``lines``, ``flag``)."""
    if isinstance(item, Mapping):
        lines = [str(line) for line in item.get("lines", ())]
        text = "<br>".join(str(escape(line)) for line in lines)
        cls = "tile flag" if item.get("flag") else "tile"
        img_alt = item.get("alt") or (", ".join(lines) if lines else alt)
        label = f'<span class="tile-label">{text}</span>' if text else ""
        return f'<div class="{cls}"><img src="{escape(item["uri"])}" alt="{escape(img_alt)}">{label}</div>'
    return f'<img class="panel" src="{escape(item)}" alt="{escape(alt)}">'


def figure(uri: Any, caption: str | None = None, alt: str | None = None) -> Markup:
    """A ``<figure>`` showing the image ``uri`` (a data URI) with ``caption``; empty when ``uri`` is None.

    ``uri`` may be a list: each item is drawn as its own image in a row that
    wraps (panels side by side on a wide page, stacked on a narrow one). An
    item that is a dict is a gallery tile: ``{"uri": ..., "lines": [...],
    "flag": bool}``, its lines of text under the image (a flagged tile in red).
    """
    _strict(uri)
    if not uri:
        return Markup("")
    text = caption or ""
    cap = f"<figcaption>{escape(text)}</figcaption>" if text else ""
    alt_text = alt or text or "figure"
    if isinstance(uri, str):
        return Markup(f'<figure><img src="{escape(uri)}" alt="{escape(alt_text)}">{cap}</figure>')
    items = [item for item in uri if item]
    if not items:
        return Markup("")
    tiles = any(isinstance(item, Mapping) for item in items)
    panels = "".join(_panel_html(item, alt_text) for item in items)
    cls = "panels gallery" if tiles else "panels"
    return Markup(f'<figure class="{cls}"><div class="panel-row">{panels}</div>{cap}</figure>')


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
        table=html_table, num=format_number, pct=format_percent, pct_numbers=percent_numbers,
        percent_columns=percent_columns, seconds=format_seconds, flatten=flatten, command=command_line,
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


# Templates whose verdict function is not ``verdict`` in ``fitscope/report/<template stem>.py``.
_VERDICTS = {
    "kernels_uci.html.j2": ("kernels", "uci_verdict"),
    "kernels_small_data.html.j2": ("kernels", "small_data_verdict"),
    "kernels_complexity.html.j2": ("kernels", "complexity_verdict"),
}


def study_verdict(template_name: str, context: dict) -> str | None:
    """The one-sentence verdict of a study's report, from its template context; None if there is none.

    The sentence comes from ``verdict(context)`` in the study's report module
    ``fitscope.report.<template stem>`` (e.g. ``randomization.html.j2`` ->
    :func:`fitscope.report.randomization.verdict`; the kernel studies use
    ``uci_verdict``, ``small_data_verdict`` and ``complexity_verdict`` of
    :mod:`fitscope.report.kernels`). A template without such a function has
    no verdict. A verdict that cannot be stated (a context without the
    numbers it needs) is None with a warning: the report is still written.
    """
    stem = template_name.split("/")[-1].split(".")[0]
    module, name = _VERDICTS.get(template_name, (stem.replace("-", "_"), "verdict"))
    try:
        fn = getattr(importlib.import_module(f"fitscope.report.{module}"), name, None)
    except ImportError:
        return None
    if fn is None:
        return None
    try:
        return fn(context)
    except Exception as err:  # noqa: BLE001 - a verdict must never cost the report
        warnings.warn(f"report {template_name}: no verdict ({type(err).__name__}: {err})", stacklevel=2)
        return None


def write_report(run, template_name: str, context: dict, *,
                 environment: jinja2.Environment | None = None, status: str | None = None) -> Path:
    """Render ``template_name`` for ``run`` and write ``<run>/report.html`` atomically; returns its path.

    The template sees ``context`` plus ``run`` (see :func:`run_context`);
    ``title`` defaults to "<kind> run <id>"; ``verdict`` (the sentence at the
    top) defaults to :func:`study_verdict`.

    Args:
        status: the status the page shows instead of the run's current one:
            a runner that writes the report as the last artifact before
            ``run.finish()`` passes ``"done"`` (the page would say "running").
    """
    from fitscope.runs.run import utc_now

    context = dict(context)
    if context.get("verdict") is None:
        context["verdict"] = study_verdict(template_name, context)
    meta = run_context(run)
    if status is not None:
        meta["status"] = status
    full = {"title": f"{run.kind} run {run.id}", "generated": utc_now(), **context, "run": meta}
    html = render(template_name, full, environment=environment)
    return atomic_write_text(Path(run.path) / REPORT_NAME, html)
