"""Each study's one-sentence verdict, stated from the numbers its report context already holds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fitscope.report import audit, federated, kernels, leak, privacy, randomization
from fitscope.report.html import study_verdict


def test_audit_verdict_counts_suspect_labels_and_names_the_top_rows():
    examples = pd.DataFrame({"cleanlab_issue": [True] * 143 + [False] * 1294})
    context = dict(data=dict(n_train=1437), n_suspect=audit.suspect_count(examples),
                   mislabeled_indices=[12, 80, 7, 3, 99, 100], has_truth=True, n_flipped=144,
                   summary={"label-issue AUROC": 0.9995})
    text = audit.verdict(context)
    assert text.startswith("About 143 of 1,437 training labels (10%) look wrong; the 5 most likely are rows "
                           "12, 80, 7, 3 and 99")
    assert "Most likely mislabeled" in text and "144 labels were flipped" in text and "AUROC 0.9995" in text
    # no cleanlab column: the out-of-fold confidence below one half counts
    assert audit.suspect_count(pd.DataFrame({"oof_confidence": [0.1, 0.9, 0.4]})) == 2
    clean = audit.verdict(dict(context, n_suspect=0, has_truth=False))
    assert clean.startswith("None of the 1,437 training labels looks clearly wrong")


def test_randomization_verdict_says_whether_random_labels_were_fit():
    table = pd.DataFrame({"corruption": ["true labels", "random labels"], "train_acc": [1.0, 1.0],
                          "test_acc": [0.973, 0.102]})
    text = randomization.verdict(dict(data=dict(n_classes=10), corruption_table=table, findings=[]))
    assert text == ("The network fit random labels (training accuracy 100%), and their test accuracy is 10.2%, "
                    "at chance (10%); with the true labels it reaches 97.3% test accuracy.")
    # the Findings table just under the verdict wins over the table's means
    findings = [dict(check="random labels: train accuracy (min over seeds)", value=0.995),
                dict(check="random labels: test accuracy minus chance", value=0.004),
                dict(check="true labels: test accuracy", value=0.975)]
    text = randomization.verdict(dict(data=dict(n_classes=10), corruption_table=table, findings=findings))
    assert "(training accuracy 99.5%)" in text and "is 10.4%" in text and "reaches 97.5%" in text
    table.loc[1, "train_acc"] = 0.6
    assert "did not fit random labels" in randomization.verdict(
        dict(data=dict(n_classes=10), corruption_table=table, findings=[]))
    regs = pd.DataFrame({"regularizers": ["none"], "true: test acc": [0.9], "random: train acc": [1.0],
                         "random: test acc": [0.5]})
    text = randomization.verdict(dict(data=dict(n_classes=10), corruption_table=None, regularizer_table=regs))
    assert "test accuracy is 50%, not at chance" in text


def test_leak_verdict_compares_with_chance():
    metrics = pd.DataFrame({"attack": ["LiRA online", "loss threshold"], "AUC": [0.654, 0.55],
                            "TPR at 1% FPR": [0.108, 0.01]})
    text = leak.verdict(dict(metrics_table=metrics, leak_attack="LiRA online"))
    assert text == ("LiRA online tells training members from non-members with AUC 0.654 (chance 0.5) and catches "
                    "10.8% of members at 1% false positives (chance 1%): 11x chance at that threshold.")
    metrics["TPR at 1% FPR"] = [0.011, 0.01]
    metrics["AUC"] = [0.51, 0.5]
    assert "no better than chance" in leak.verdict(dict(metrics_table=metrics, leak_attack="LiRA online"))


def test_privacy_verdict_picks_the_best_trade():
    table = pd.DataFrame({"defense": ["none", "label-dp eps=1", "dp-sgd eps=1"], "test acc": [0.95, 0.80, 0.93],
                          "LiRA TPR@1%": [0.10, 0.01, 0.02]})
    text = privacy.verdict(dict(results_table=table))
    # label DP: -9 points of TPR for -15 of accuracy; DP-SGD: -8 for -2
    assert text.startswith("dp-sgd eps=1 gave the best leakage/accuracy trade: LiRA's TPR at 1% FPR 2%")
    assert "against 10% and 95% with none" in text
    worse = table.assign(**{"test acc": [0.95, 0.5, 0.5]})
    assert privacy.verdict(dict(results_table=worse)).startswith("No defense lowered leakage")


def test_federated_verdict_gives_rounds_to_target():
    speedups = [{"partition": "iid", "fedavg rounds": 12, "fedsgd rounds": 80, "speedup": 80 / 12},
                {"partition": "noniid", "fedavg rounds": 30, "fedsgd rounds": np.nan, "speedup": np.nan}]
    text = federated.verdict(dict(cfg=dict(target=0.9, rounds=100), speedups=speedups))
    assert text == ("To reach 90% test accuracy, on IID clients FedAvg took 12 rounds and FedSGD 80 (6.7x as many); "
                    "on non-IID clients FedAvg took 30 rounds and FedSGD did not get there within 100 rounds.")
    assert federated.verdict(dict(cfg={}, speedups=[])) is None


def test_kernel_verdicts():
    summary = pd.DataFrame({"method": ["NTK-SVM", "random forest", "Gaussian SVM"],
                            "mean_accuracy": [0.976, 0.967, 0.975], "mean_rank": [1.875, 2.625, 1.5]})
    text = kernels.uci_verdict(dict(summary=summary, datasets=[{}] * 4))
    assert text.startswith("NTK-SVM has the best mean accuracy over 4 data sets (97.6%, against Gaussian SVM 97.5% "
                           "and random forest 96.7%)")
    assert "by mean rank Gaussian SVM is first (1.50 against 1.88)" in text
    findings = [dict(check="n = 10: best kernel (CNTK-GAP) minus best network (cnn), mean test accuracy over seeds",
                     value=0.052, target="> 0", holds=True)]
    assert kernels.small_data_verdict(dict(findings=findings)) == (
        "The best kernel (CNTK-GAP) is 5.2 points more accurate at n = 10 than the best trained network (cnn) "
        "(test accuracy, mean over seeds).")
    findings.append(dict(findings[0], check=findings[0]["check"].replace("n = 10", "n = 20").replace("cnn", "resnet"),
                         value=-0.01))
    assert kernels.small_data_verdict(dict(findings=findings)).startswith(
        "At n = 10 the best kernel (CNTK-GAP) is 5.2 points more accurate than the best network (cnn); at n = 20 "
        "the best kernel (CNTK-GAP) is 1.0 points less accurate than the best network (resnet)")
    table = pd.DataFrame({"noise": [0.0, 1.0], "complexity measure": [0.5, 1.3], "test error": [0.03, 0.48]})
    text = kernels.complexity_verdict(dict(noise_table=table))
    assert "from 0.5 to 1.3" in text and "from 3% to 48%" in text and "both grow" in text


def test_study_verdict_finds_each_study_and_never_costs_the_report():
    table = pd.DataFrame({"noise": [0.0, 1.0], "complexity measure": [0.5, 1.3], "test error": [0.03, 0.48]})
    assert "both grow" in study_verdict("kernels_complexity.html.j2", dict(noise_table=table))
    assert study_verdict("base.html.j2", {}) is None and study_verdict("nothing.html.j2", {}) is None
    with pytest.warns(UserWarning, match="no verdict"):
        assert study_verdict("randomization.html.j2", {"data": {}}) is None
