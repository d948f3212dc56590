"""The audit report's intervals, influence FDR text and "left out" notes, from hand-made tables (no training)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import fitscope.report.audit as audit
from fitscope.report.figures import MIN_FONT_PT, PANEL_WIDTH, enforce_min_font

FDR_META = dict(fdr_target=0.1, n_candidates=597, n_kept=3, null_candidates=570.2, permutations=20,
                candidates_fdr=0.955, fdr=0.05, fdr_threshold=0.2669, models_for_target=659, infl_threshold=0.15,
                mem_threshold=0.25, n_models=48, seed=7)


def _examples(n: int = 40, truth: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    mem = rng.random(n) * 1.5 - 0.5
    frame = pd.DataFrame({"index": np.arange(n), "label": rng.integers(0, 3, n), "mem": mem,
                          "mem_lo": mem - 0.3, "mem_hi": np.minimum(mem + 0.2, 1.0), "label_issue": rng.random(n)})
    if truth:
        frame.insert(2, "true_label", rng.integers(0, 3, n))
        frame.insert(3, "corrupted", rng.random(n) < 0.2)
    return frame


def test_influence_text_names_the_chance_pairs_the_kept_list_and_the_projection():
    text = " ".join(audit.influence_text(FDR_META, 48))
    assert "The fixed thresholds pass 597 pairs; about 570 of them would pass by chance" in text
    assert "the same 48 models with their memberships shuffled, 20 times" in text
    assert "estimated false-discovery rate of 95.5%" in text
    assert "3 pairs are kept at FDR ≤ 10%" in text and "at least 0.27" in text
    assert "fewer than one of them is expected to be chance" in text
    assert "about 659 models would be needed" in text and "1/√K" in text
    many = " ".join(audit.influence_text(dict(FDR_META, n_kept=40, fdr=0.08), 48))
    assert "about 3 of them may still be chance" in many  # 40 x 8% = 3.2
    none = " ".join(audit.influence_text(dict(FDR_META, n_kept=0, fdr=None, models_for_target=None), 48))
    assert "None of them is kept: with 48 models no pair stands out from chance at FDR ≤ 10%" in none
    assert "No number of models can be projected" in none
    within = " ".join(audit.influence_text(dict(FDR_META, models_for_target=48), 48))
    assert "already within 10% FDR with these 48 models" in within
    assert audit.influence_text({}, 48) == [] and audit.influence_text(dict(FDR_META, fdr_target=None), 48) == []
    nothing = audit.influence_text(dict(FDR_META, n_candidates=0, n_kept=0), 48)
    assert nothing == ["No pair passes the fixed thresholds."]


def test_left_out_says_what_and_why():
    context = dict(summary={"subset train accuracy": 0.899}, mem_in_label_score=False, hidden_in_label_score=False,
                   influence_fdr=dict(FDR_META, n_kept=0), n_models=48, n_mem_undefined=2)
    lines = audit.left_out(context)
    assert len(lines) == 4
    assert lines[0].startswith("Memorization is not in the label-issue score: the subset models do not fit their own "
                               "subsets (mean subset accuracy 89.9%, below 99%)")
    assert "weight 0" in lines[1]
    assert "No influence pair is reported: all 597 pairs" in lines[2] and "48 models" in lines[2]
    assert lines[3] == "2 training examples have no memorization estimate: they were in every subset or in none."
    full_context = dict(context, mem_in_label_score=True, hidden_in_label_score=True, influence_fdr=FDR_META,
                        n_mem_undefined=0)
    full = audit.left_out(full_context)
    assert full == []
    # the scikit-learn families auto left out for size, none asked for, and the fast audit's C-score
    big = audit.left_out(dict(full_context, cfg=dict(oof_families="auto"), family_weights={"network": 0.4, "logistic": 0.6},
                              input_entries=47_040_000, input_features=784))
    assert big == ["Gradient boosting and scikit-learn's MLP were not fitted: --oof-families auto fits every family "
                   "only up to 256 input features and 500,000 input entries (rows x features), and these inputs have "
                   "784 features, 47,040,000 entries (gradient boosting takes minutes on wide inputs); pass "
                   "--oof-families logistic,boosting,mlp to fit them anyway."]
    assert "--oof-families none" in audit.left_out(dict(full_context, cfg=dict(oof_families=[])))[0]
    fast = audit.left_out(dict(full_context, cfg=dict(oof_families="auto", fast=True),
                               family_weights=dict.fromkeys(("network", "logistic", "boosting", "mlp"), 0.25)))
    assert len(fast) == 1 and fast[0].startswith("The C-score is not in the label-issue score: the fast audit")


def test_label_score_text_names_signals_by_weight_and_the_families():
    text = audit.label_score_text({"self_confidence": 1.0, "learning_speed": 4.0, "cscore": 0.25},
                                  {"network": 0.625, "boosting": 0.375}, 5)
    assert text.startswith("The label-issue score is a weighted average of each example's rank in learning speed "
                           "(weight 4), out-of-fold self-confidence (weight 1) and holdout C-score (weight 0.25).")
    assert text.endswith("5-fold cross-validated scikit-learn models, weighted by how well each predicts the given "
                         "labels: the audit's networks 0.62, gradient boosting 0.38.")
    alone = audit.label_score_text({"learning_speed": 4.0}, {}, 5)
    assert alone.endswith("are the networks' alone (models whose subset left the example out).")


def test_memorization_and_pairs_tables_show_intervals():
    examples = _examples()
    table = audit.memorization_table(examples, [3, 1], ["a", "b", "c"])
    assert list(table.columns) == ["example", "given", "true", "mem", "95% interval", "label issue"]
    row = examples.iloc[3]
    assert table.iloc[0]["example"] == "#3"
    assert table.iloc[0]["95% interval"] == f"[{row.mem_lo:.2f}, {row.mem_hi:.2f}]"
    assert audit.memorization_table(examples.drop(columns=["mem_lo", "mem_hi"]), [3], ["a", "b", "c"]) is None
    pairs = pd.DataFrame({"train_index": [5, 6], "test_index": [1, 2], "infl": [0.61, 0.52], "infl_lo": [0.29, 0.27],
                          "infl_hi": [0.79, np.nan], "infl_se": [0.1, 0.1], "mem": [0.44, 0.81], "fdr": [0.05, 0.05]})
    shown = audit.pairs_table(pairs)
    assert list(shown.columns) == ["train", "test", "infl", "95% interval", "mem of train", "FDR"]
    assert shown["95% interval"].tolist() == ["[0.29, 0.79]", "\u2014"] and shown.attrs["percent"] == ["FDR"]
    old = audit.pairs_table(pairs[["train_index", "test_index", "infl"]])  # an older run's table
    assert list(old.columns) == ["train", "test", "infl"]


def test_pair_tiles_carry_the_interval_and_fdr(monkeypatch):
    monkeypatch.setattr(audit, "figure_to_data_uri", lambda fig: "data:image/png;base64,")
    n = 8
    rng = np.random.default_rng(1)
    data = SimpleNamespace(kind="image", input_shape=(1, 8, 8), x_train=rng.random((n, 1, 8, 8)),
                           x_test=rng.random((n, 1, 8, 8)), y_test=np.zeros(n, np.int64), classes=list("abc"))
    pairs = pd.DataFrame({"train_index": [1], "test_index": [2], "infl": [0.61], "infl_lo": [0.29],
                          "infl_hi": [0.79], "fdr": [0.05]})
    tiles = audit.pairs_figure(data, pairs, np.zeros(n, np.int64))
    assert tiles[0]["lines"][1] == "infl 0.61 [0.29, 0.79], FDR 5%"
    bare = audit.pairs_figure(data, pairs[["train_index", "test_index", "infl"]], np.zeros(n, np.int64))
    assert bare[0]["lines"][1] == "infl 0.61"


@pytest.mark.parametrize("truth", [True, False])
def test_memorization_interval_figure_is_two_readable_panels(monkeypatch, truth):
    drawn = []

    def capture(fig):
        enforce_min_font(fig)
        fig.canvas.draw()
        drawn.append((float(fig.get_size_inches()[0]), fig.axes[0]))
        return "data:image/png;base64,"

    monkeypatch.setattr(audit, "figure_to_data_uri", capture)
    examples = _examples(truth=truth)
    panels = audit.memorization_interval_figure(examples)
    assert len(panels) == 2 and all(w <= PANEL_WIDTH for w, _ in drawn)
    band, bars = drawn[0][1], drawn[1][1]
    assert band.get_title() == "Every example, by memorization"
    assert bars.get_title() == f"The {audit.MEM_BARS} most memorized"
    # the bars are the most memorized examples, highest first, each with its own interval
    top = examples.sort_values("mem", ascending=False).head(audit.MEM_BARS)
    points = np.concatenate([c.lines[0].get_ydata() for c in bars.containers])  # the errorbars' data points
    np.testing.assert_allclose(np.sort(points)[::-1], top.mem.to_numpy())
    low = np.concatenate([c.lines[2][0].get_segments() for c in bars.containers])[:, 0, 1]  # each bar's lower end
    np.testing.assert_allclose(np.sort(low), np.sort(top.mem_lo.to_numpy()))
    legend = bars.get_legend()
    assert (legend is not None) == truth
    assert min(t.get_fontsize() for t in bars.figure.findobj(lambda o: hasattr(o, "get_fontsize"))) >= MIN_FONT_PT
    assert audit.memorization_interval_figure(examples.drop(columns=["mem_lo"])) is None


def test_summary_shows_fdr_as_percent():
    rows = {r["quantity"]: r["value"] for r in audit.summary_rows(
        {"high-influence pairs FDR": 0.05, "fixed-threshold pairs FDR": 0.954, "models for 10% FDR (projected)": 659,
         "fixed-threshold pairs": 597, "high-influence pairs": 3})}
    assert rows["high-influence pairs FDR"] == "5.0%" and rows["fixed-threshold pairs FDR"] == "95.4%"
    assert rows["models for 10% FDR (projected)"] == "659" and rows["fixed-threshold pairs"] == "597"


def test_every_score_has_one_sentence():
    names = [name for name, _ in audit.SCORE_SENTENCES]
    for needed in ("memorization (mem)", "influence (infl)", "95% interval (lo, hi)", "FDR (q-value)",
                   "holdout C-score", "learning speed", "label-issue score"):
        assert needed in names
    for _, sentence in audit.SCORE_SENTENCES:
        assert sentence.endswith(".") and sentence.count(". ") <= 1  # one sentence (a colon may join two clauses)
