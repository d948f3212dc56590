"""Every study figure fits the page at its natural size, with text readable there, and multi-panel plots are panels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from fitscope.report import audit, federated, figures, kernels, leak, privacy, randomization
from fitscope.report.figures import (
    DPI, MAX_WIDTH, MIN_FONT_PT, PAGE_PX, enforce_min_font, figure_to_png, new_figure, plain_log_ticks,
)

rng = np.random.default_rng(0)


def test_small_text_is_raised_to_the_minimum():
    fig = new_figure(3, 2)
    ax = fig.subplots()
    ax.plot([0, 1], [1, 0], label="a line")
    ax.set_title("tiny", fontsize=5)
    ax.tick_params(labelsize=4)
    ax.legend(fontsize=5)
    figure_to_png(fig)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text()]
    assert sizes and min(sizes) >= MIN_FONT_PT
    assert MIN_FONT_PT * DPI / 72 >= 11  # px at the natural size of the image
    assert MAX_WIDTH * DPI <= PAGE_PX


@pytest.fixture()
def drawn(monkeypatch):
    """Every figure the report modules make: ``(module, width in inches, smallest text in points)``."""
    out = []

    def capture(module):
        def to_uri(fig, **_):
            enforce_min_font(fig)  # what figure_to_png does before it saves
            fig.canvas.draw()
            sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
            out.append((module, float(fig.get_size_inches()[0]), min(sizes) if sizes else MIN_FONT_PT))
            return f"data:image/png;base64,{len(out)}"
        return to_uri

    for module in (audit, federated, kernels, leak, privacy, randomization):
        monkeypatch.setattr(module, "figure_to_data_uri", capture(module.__name__))
    return out


def _roc():
    fpr = np.linspace(0, 1, 50)
    return {"attack a": (fpr, np.sqrt(fpr)), "attack b": (fpr, fpr ** 0.7)}


def _check(drawn, result, panels: int | None = None):
    """``result`` is one URI, or a list of ``panels`` panels; every figure fits and reads at its natural size."""
    if panels is None:
        assert isinstance(result, str)
    else:
        assert isinstance(result, list) and len(result) == panels
    for module, width, smallest in drawn:
        assert width <= MAX_WIDTH, (module, width)
        assert smallest >= MIN_FONT_PT, (module, smallest)
    if panels and panels > 1:  # panels meant to sit side by side fit one line of the page
        widths = [w for _, w, _ in drawn[-panels:]]
        assert all(w <= figures.PANEL_WIDTH for w in widths)
    drawn.clear()


def test_randomization_figures(drawn):
    curves = pd.DataFrame([dict(part="curves", corruption=c, seed=0, epoch=e, train_loss=1 / (e + 1),
                                train_acc=min(1, 0.3 * e)) for c in ("none", "random_labels") for e in range(5)])
    results = pd.DataFrame([dict(part="noise", noise=p, seed=s, test_acc=0.9 - 0.7 * p, epochs_to_fit=5 + int(10 * p),
                                 epochs_to_90pct=3, epochs_run=20) for p in (0, 0.5, 1) for s in (0, 1)])
    _check(drawn, randomization.learning_curves_figure(curves), panels=2)
    _check(drawn, randomization.fit_time_figure(results, 20))
    _check(drawn, randomization.test_error_figure(results, 10))


def test_audit_figures(drawn):
    n = 30
    examples = pd.DataFrame({"index": np.arange(n), "label": rng.integers(0, 3, n), "true_label": rng.integers(0, 3, n),
                             "corrupted": rng.random(n) < 0.2, "mem": rng.random(n), "cscore": rng.random(n)})
    _check(drawn, audit.histograms_figure(examples), panels=2)
    _check(drawn, audit.roc_figure(_roc()), panels=2)
    for kind, shape in (("image", (1, 8, 8)), ("features", (6,)), ("signal", (2, 20))):
        data = SimpleNamespace(kind=kind, input_shape=shape, x_train=rng.random((n, *shape)),
                               x_test=rng.random((n, *shape)), y_test=np.zeros(n, np.int64), classes=["a", "b", "c"])
        tiles = audit.gallery_figure(data, examples, range(5), "mem")
        assert len(tiles) == 5 and all(set(t) == {"uri", "lines", "flag"} for t in tiles)
        assert tiles[0]["lines"][0].startswith("#0 given ") and tiles[0]["lines"][-1].startswith("mem ")
        assert [t["flag"] for t in tiles] == examples["corrupted"].head(5).tolist()
        pairs = pd.DataFrame({"train_index": [1, 2], "test_index": [3, 4], "infl": [0.5, 0.4]})
        assert len(audit.pairs_figure(data, pairs, examples["label"].to_numpy())) == 2
        _check(drawn, "", panels=None)


def test_leak_figures(drawn):
    _check(drawn, leak.roc_loglog_figure(_roc()), panels=2)
    score_in = [(i, rng.normal(1, 1, 10), rng.normal(-1, 1, 12)) for i in range(4)]
    panels = leak.score_histograms_figure(score_in)
    assert len(panels) == 4
    widths = [w for _, w, _ in drawn]
    assert sum(widths) * DPI + 4 * 2 + 3 * 16 <= PAGE_PX  # four to a line of the page (borders, gaps)
    _check(drawn, panels, panels=4)
    examples = pd.DataFrame({"mem": rng.random(20), "leak_rate": rng.random(20), "corrupted": rng.random(20) < 0.3})
    _check(drawn, leak.scatter_figure(examples, "audit"))


def test_privacy_figures(drawn):
    results = pd.DataFrame({"label": ["none", "label-dp eps=1"], "test_acc": [0.95, 0.9], "test_acc_std": [0.01, 0.02],
                            "lira_tpr_at_1pct": [0.08, 0.02], "eps_lower_bound": [2.0, 0.5],
                            "claimed_eps": [np.inf, 1.0]})
    roc = pd.DataFrame([dict(label=lab, fpr=f, tpr=f ** 0.5) for lab in results.label for f in np.logspace(-4, 0, 20)])
    _check(drawn, privacy.tradeoff_figure(results))
    _check(drawn, privacy.roc_figure(roc))
    _check(drawn, privacy.canary_figure(results))


def test_federated_figure_is_one_panel_per_partition(drawn):
    results = pd.DataFrame([dict(partition=p, algorithm=a, round=r, accuracy=min(1, 0.1 * r))
                            for p in ("iid", "noniid") for a in ("fedavg", "fedsgd") for r in range(6)])
    settings = pd.DataFrame([dict(partition=p, algorithm=a, E=5, B=10, lr=0.1, rounds_to_target=4 if a == "fedavg"
                                  else np.nan) for p in ("iid", "noniid") for a in ("fedavg", "fedsgd")])
    _check(drawn, federated.accuracy_figure(results, settings, 0.4), panels=2)


def test_kernel_figures(drawn):
    uci = pd.DataFrame([dict(dataset=d, method=m, accuracy=0.8 + 0.05 * rng.random(), accuracy_std=0.02)
                        for d in ("iris", "wine") for m in ("NTK-SVM", "random forest")])
    _check(drawn, kernels.uci_accuracy_figure(uci))
    small = pd.DataFrame([dict(method=m, size=n, seed=s, test_acc=0.5 + 0.01 * n * rng.random())
                          for m in ("CNTK-GAP", "cnn") for n in (10, 20) for s in (0, 1)])
    _check(drawn, kernels.small_data_figure(small))
    complexity = pd.DataFrame([dict(noise=p, seed=s, measure=1 + p, test_error=0.1 + 0.5 * p,
                                    epochs_to_fit=10 + int(20 * p)) for p in (0, 0.5, 1) for s in (0, 1)])
    _check(drawn, kernels.complexity_figure(complexity, 40), panels=2)


def test_plain_log_ticks_print_numbers_without_exponents():
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [3, 20, 60])
    ax.set_yscale("log")
    ax.set_ylim(3, 60)  # within two decades: minors 5, 20, 30, 50 are labelled, 4 is not
    plain_log_ticks(ax.yaxis)
    major, minor = ax.yaxis.get_major_formatter(), ax.yaxis.get_minor_formatter()
    assert major(10, 0) == "10" and major(0.01, 0) == "0.01"
    assert [minor(v, 0) for v in (4, 5, 20, 30, 50)] == ["", "5", "20", "30", "50"]
    ax.set_ylim(0.01, 100)  # four decades: no minor labels
    plain_log_ticks(ax.yaxis)
    assert ax.yaxis.get_minor_formatter()(20, 0) == ""
