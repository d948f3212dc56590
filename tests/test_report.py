"""The report base: figures as data URIs, tables, the base template and write_report."""

from __future__ import annotations

import base64
import re

import jinja2
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fitscope.report import (
    figure_to_data_uri,
    format_number,
    format_seconds,
    html_table,
    make_environment,
    new_figure,
    render,
    write_report,
)
from fitscope.runs import Run
from fitscope.runs.atomic import TEMP_SUFFIX

CHILD = """{% extends "base.html.j2" %}
{% block content %}
<section><h2>Results</h2>
{{ figure(curve, "Training loss per epoch") }}
{{ results | table }}
{{ table(rows, caption="Checks") }}
</section>
{% endblock %}"""

MACROS_CHILD = """{% extends "base.html.j2" %}
{% from "macros.html.j2" import figure, table %}
{% block content %}{{ figure(curve, "via macros") }}{{ table(rows) }}{% endblock %}"""


@pytest.fixture()
def env():
    return make_environment(jinja2.DictLoader({"child.html.j2": CHILD, "macros_child.html.j2": MACROS_CHILD}))


def _line_uri() -> str:
    fig = new_figure(4, 3)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [2.0, 0.5, 0.1])
    return figure_to_data_uri(fig)


def _run(tmp_path) -> Run:
    run = Run.create(tmp_path / "r", kind="demo", config={"model": "mlp:64x1", "train": {"lr": 0.1}},
                     seeds={"data_seed": 0, "model_seeds": [0, 1]})
    with run.timer("train"):
        pass
    with run.timer("report"):
        pass
    return run


def test_new_figure_uses_the_object_api():
    fig = new_figure(5, 2)
    assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    assert tuple(fig.get_size_inches()) == (5, 2)
    with pytest.raises(ValueError, match="positive"):
        new_figure(0, 2)


def test_figure_to_data_uri_is_a_png_and_releases_the_figure():
    fig = new_figure(4, 3)
    fig.subplots().plot([1, 2, 3])
    uri = figure_to_data_uri(fig)
    assert uri.startswith("data:image/png;base64,")
    png = base64.b64decode(uri.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    assert abs(width - 4 * 110) <= 2  # dpi ~110
    assert fig.axes == []


def test_number_and_duration_formats():
    assert format_number(1234567) == "1,234,567"
    assert format_number(np.int64(3)) == "3"
    assert format_number(0.98765) == "0.9877"
    assert format_number(12.3456) == "12.35"
    assert format_number(2.5e-6) == "2.5e-06"
    assert format_number(float("nan")) == "\u2014" and format_number(None) == "\u2014"
    assert format_number(True) == "yes" and format_number("text") == "text"
    assert format_seconds(0.4213) == "0.42 s" and format_seconds(75) == "1 min 15 s"
    assert format_seconds(7322) == "2 h 02 min"


def test_table_formats_columns_and_escapes():
    df = pd.DataFrame({"name": ["<b>x</b>", "y"], "acc": [0.98765, 1.0], "n": [1200, 3],
                       "p": [np.nan, 0.5], "ok": [True, False]})
    html = str(html_table(df, caption="Scores"))
    assert "<caption>Scores</caption>" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert '<th class="num">acc</th>' in html and '<td class="num">0.988</td>' in html
    assert '<td class="num">1,200</td>' in html and "<th>name</th>" in html
    assert 'class="na"' in html and "<td>yes</td>" in html
    many = html_table(pd.DataFrame({"i": range(500)}), max_rows=10)
    assert many.count("<tr>") == 11 and "showing 10 of 500 rows" in many
    named = html_table(pd.DataFrame({"v": [1.5]}, index=pd.Index(["a"], name="key")))
    assert "<th>key</th>" in named
    kv = html_table({"lr": 0.1, "noise": [0, 0.5]})
    assert "<td>0.1</td>" in kv and "[0,0.5]" in kv
    assert "<td class=\"num\">2</td>" in html_table([{"a": 2, "b": "x"}])
    with pytest.raises(TypeError, match="DataFrame"):
        html_table(42)


def test_child_template_renders_on_the_base_with_a_figure(tmp_path, env):
    run = _run(tmp_path)
    results = pd.DataFrame({"corruption": ["none", "random labels"], "train_acc": [1.0, 0.99], "epochs": [12, 40]})
    path = write_report(run, "child.html.j2", {"curve": _line_uri(), "results": results,
                                               "rows": [{"check": "fits", "holds": True}],
                                               "title": "Demo <study>"}, environment=env)
    assert path == run.path / "report.html" and not list(run.path.glob(f"*{TEMP_SUFFIX}"))
    html = path.read_text()
    assert html.count("data:image/png;base64,") == 1
    assert "<figcaption>Training loss per epoch</figcaption>" in html
    assert "<h1>Demo &lt;study&gt;</h1>" in html and "<title>Demo &lt;study&gt;</title>" in html
    assert run.id in html and "status-running" in html and run.meta["created"] in html
    for section in ("Config and seeds", "Timings", "Versions", "Replay", "random labels", "Checks"):
        assert section in html
    assert "train.lr" in html and "model_seeds" in html and "total" in html
    assert "config hash" in html and run.meta["config_hash"] in html
    # self-contained: no network assets, no scripts
    assert not re.search(r"https?://", html) and "<script" not in html and "<link" not in html


def test_macros_file_and_defaults(tmp_path, env):
    run = _run(tmp_path)
    html = write_report(run, "macros_child.html.j2", {"curve": None, "rows": [{"a": 1}]},
                        environment=env).read_text()
    assert "<figure>" not in html  # no figure for a missing image
    assert f"<title>demo run {run.id}</title>" in html
    assert '<td class="num">1</td>' in html


def test_base_renders_without_a_run_and_undefined_is_an_error(env):
    html = render("base.html.j2", {"title": "Empty"})
    assert "<h1>Empty</h1>" in html and "Config and seeds" not in html
    with pytest.raises(jinja2.UndefinedError):
        render("child.html.j2", {"curve": None, "rows": []}, environment=env)


def test_package_templates_are_found_by_default():
    assert "<!DOCTYPE html>" in render("base.html.j2", {})
