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
    assert '<p class="table-caption">Scores</p><div class="table-wrap"' in html  # above the scrolling box
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert '<th class="num">acc</th>' in html and '<td class="num">0.988</td>' in html
    assert '<td class="num">1,200</td>' in html and "<th>name</th>" in html
    assert 'class="na"' in html and "<td>yes</td>" in html
    many = html_table(pd.DataFrame({"i": range(500)}), max_rows=10)
    assert many.count("<tr>") == 11 and "showing 10 of 500 rows" in many
    named = html_table(pd.DataFrame({"v": [1.5]}, index=pd.Index(["a"], name="key")))
    assert "<th>key</th>" in named
    kv = html_table({"lr": 0.1, "noise": [0, 0.5]})
    assert "<td>0.1</td>" in kv and "[0,<wbr>0.5]" in kv  # long lists may break after a comma
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
    with pytest.raises(jinja2.UndefinedError, match="is undefined"):
        render("child.html.j2", {"curve": None, "rows": []}, environment=env)


def test_package_templates_are_found_by_default():
    assert "<!DOCTYPE html>" in render("base.html.j2", {})


def test_percentages_in_text_and_tables():
    from fitscope.report.html import format_percent, percent_columns, percent_numbers

    assert format_percent(0.973) == "97.3%" and format_percent(0.5) == "50%" and format_percent(1) == "100%"
    assert format_percent(0.973, trim=False) == "97.3%" and format_percent(1.0, trim=False) == "100.0%"
    assert format_percent(None) == "\u2014" and format_percent(float("nan")) == "\u2014"
    assert percent_numbers(">= 0.99") == ">= 99%" and percent_numbers("within +-0.05") == "within +-5%"
    assert percent_numbers("p = max, 12 epochs, 1.5x") == "p = max, 12 epochs, 1.5x"
    df = pd.DataFrame({"acc": [0.973, 1.0], "tpr": [0.004, 0.0012], "n": [3, 4]})
    html = str(html_table(df, percent=["acc"]))
    assert '<td class="num">97.3%</td>' in html and '<td class="num">100.0%</td>' in html
    assert '<td class="num">0.004000</td>' in html  # not named: a plain number
    marked = percent_columns(df, "tpr")
    assert marked.attrs["percent"] == ["tpr"] and "percent" not in df.attrs  # a copy
    html = str(html_table(marked))
    assert '<td class="num">0.40%</td>' in html and '<td class="num">0.12%</td>' in html  # small: 2 decimals
    env = make_environment()
    assert env.from_string("{{ 0.973 | pct }} {{ '>= 0.9' | pct_numbers }}").render() == "97.3% &gt;= 90%"


def test_index_columns_and_rows_picked_with_iloc():
    examples = pd.DataFrame({"index": [0, 1, 2, 1404], "label": [3, 1, 2, 5]})
    html = str(html_table(examples.iloc[[3, 1]]))
    assert "level_0" not in html
    # a row number: no thousands separator
    assert len(re.findall(r"<th[ >]", html)) == 2 and '<td class="num">1404</td>' in html
    pairs = pd.DataFrame({"train_index": [1404], "infl": [0.5]})
    assert '<td class="num">1404</td>' in str(html_table(pairs))


def test_figure_panels_and_gallery_tiles():
    from fitscope.report.html import figure

    one, two = _line_uri(), _line_uri()
    panels = str(figure([one, None, two], "Two panels"))
    assert panels.startswith('<figure class="panels"><div class="panel-row">')
    assert panels.count('<img class="panel"') == 2 and "<figcaption>Two panels</figcaption>" in panels
    tiles = str(figure([{"uri": one, "lines": ["#3 given <1>", "mem 0.93"], "flag": True},
                        {"uri": two, "lines": ["#4 given 2"]}], "Gallery"))
    assert 'class="panels gallery"' in tiles and tiles.count('<div class="tile') == 2
    assert '<div class="tile flag">' in tiles and "#3 given &lt;1&gt;<br>mem 0.93" in tiles
    assert str(figure([], "nothing")) == "" and str(figure(None)) == ""


class _Page(__import__("html.parser").parser.HTMLParser):
    """The parts of a rendered page that decide how it reads on a narrow screen."""

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.tables_outside_wrap = 0
        self.tables = 0
        self.imgs_outside_figure = 0
        self.styles: list[str] = []
        self.meta: list[dict] = []
        self.verdict_text = None
        self._in_verdict = False
        self.css = ""
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "meta":
            self.meta.append(attrs)
        if "style" in attrs:
            self.styles.append(attrs["style"])
        if tag == "table":
            self.tables += 1
            if not any("table-wrap" in (a.get("class") or "").split() for _, a in self.stack):
                self.tables_outside_wrap += 1
        if tag == "img" and not any(t == "figure" for t, _ in self.stack):
            self.imgs_outside_figure += 1
        if attrs.get("id") == "verdict":
            self._in_verdict, self.verdict_text = True, ""
        self._in_style = tag == "style"
        if tag not in ("meta", "img", "br", "wbr", "input", "link"):
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        while self.stack:
            open_tag, attrs = self.stack.pop()
            if attrs.get("id") == "verdict":
                self._in_verdict = False
            if open_tag == tag:
                break
        self._in_style = False

    def handle_data(self, data):
        if self._in_verdict:
            self.verdict_text += data
        if self._in_style:
            self.css += data


def _randomization_context() -> dict:
    """A small but complete context of the randomization report, with its real tables and figures."""
    from fitscope.report import randomization as figures

    rows, curves = [], []
    for corruption, test_acc in (("none", 0.97), ("random_labels", 0.11), ("gaussian", 0.09)):
        rows.append(dict(part="curves", corruption=corruption, regularizers="none", noise=0.0, seed=0,
                         train_acc=1.0, test_acc=test_acc, epochs_to_fit=12, epochs_to_90pct=5, epochs_run=12))
        for epoch in range(4):
            curves.append(dict(part="curves", corruption=corruption, seed=0, epoch=epoch,
                               train_loss=2.0 / (epoch + 1), train_acc=0.25 * (epoch + 1)))
    for p in (0.0, 0.5, 1.0):
        rows.append(dict(part="noise", corruption="random_labels", regularizers="none", noise=p, seed=0,
                         train_acc=1.0, test_acc=0.97 - 0.8 * p, epochs_to_fit=int(10 + 20 * p),
                         epochs_to_90pct=int(5 + 10 * p), epochs_run=40))
    results, curves = pd.DataFrame(rows), pd.DataFrame(curves)
    findings = [dict(check="random labels: train accuracy (min over seeds)", value=1.0, target=">= 0.99", holds=True),
                dict(check="random labels: test accuracy minus chance", value=0.01, target="within +-0.05",
                     holds=True)]
    return dict(
        title="Randomization study: mlp:64x1 on demo",
        data=dict(name="demo", source="test", n_train=120, n_test=40, n_classes=10, input_shape="1x8x8"),
        cfg=dict(model="mlp:64x1", epochs=40, weight_decay=5e-4, dropout=0.3, augment_flip=False),
        findings=findings,
        corruption_table=figures.corruption_table(results),
        regularizer_table=None,
        curves_png=figures.learning_curves_figure(curves),
        fit_png=figures.fit_time_figure(results, 40),
        error_png=figures.test_error_figure(results, 10),
        late_table=figures.late_example_table(pd.DataFrame([dict(
            noise=0.5, models=1, late_examples=3, late_conflict=1.0, all_conflict=0.4,
            late_nn_distance_median=0.7, all_nn_distance_median=1.0)])),
        late_at=0.8,
        trained_units=["curves-none"], reused_units=[], n_models=len(results),
    )


def test_a_real_report_reads_on_a_narrow_screen(tmp_path):
    run = _run(tmp_path)
    run.meta["config"]["corruptions"] = ["none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian"]
    html = write_report(run, "randomization.html.j2", _randomization_context()).read_text()
    page = _Page()
    page.feed(html)
    # the viewport follows the device width
    assert any(m.get("name") == "viewport" and "width=device-width" in m.get("content", "") for m in page.meta)
    # every table (the findings, the study's tables, config, seeds, timings, versions) scrolls in its own box
    assert page.tables >= 6 and page.tables_outside_wrap == 0
    assert re.search(r"\.table-wrap\s*\{[^}]*overflow-x:\s*auto", page.css)
    assert re.search(r"(^|\s)img\s*\{[^}]*max-width:\s*100%", page.css)
    # the verdict opens the page, from the study's own numbers
    assert page.verdict_text and "random labels" in page.verdict_text and "11%" in page.verdict_text
    assert html.index('id="verdict"') < html.index('id="findings"')
    # panels are separate images in a wrapping row, and every image is in a figure
    assert html.count('<img class="panel"') == 2 and 'class="figure-row"' in html
    assert page.imgs_outside_figure == 0
    # no inline style fixes a width wider than a phone
    widths = [int(w) for style in page.styles for w in re.findall(r"width:\s*(\d+)(?:\.\d+)?px", style)]
    assert all(w <= 420 for w in widths), widths
    # fractions read as percentages
    assert '<td class="num">97.0%</td>' in html and "&gt;= 99%" in html


def test_write_report_can_show_the_final_status(tmp_path):
    run = _run(tmp_path)
    html = write_report(run, "base.html.j2", {}, status="done").read_text()
    assert "badge status-done" in html and "badge status-running" not in html
