"""LiRA against the loss-threshold baseline on an overfit digits MLP (Carlini et al. 2022, METHODS section 6).

Trains K ``mlp:512x2`` models on random halves of digits' 1437 training
examples (adam, lr 0.003, a fixed budget of ``--epochs`` epochs so that they
fit their halves), through ``fitscope.experiments.leak`` in a temporary run
directory, then attacks every (model, example) pair with each model in turn as
the target and the others as shadow models. The baseline (a global threshold
on the target's loss) is measured on the same pairs in the same run; the
table prints each attack's AUC and TPR at 0.1% / 1% FPR, and the ratio of
TPR at 1% FPR to the baseline's.

Usage: python bench/lira.py [--models 32] [--epochs 40]   (64 models: about twice the time)
Writes bench/results/lira.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from fitscope.experiments.leak import leak, make_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--model", default="mlp:512x2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "lira.json"))
    args = parser.parse_args(argv)
    run_record = start_run(__file__, argv)

    cfg = make_config(data="digits", model=args.model, models=args.models, epochs=args.epochs, seed=args.seed,
                      ratio=0.5)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run, outcome = leak(cfg, Path(tmp) / "leak")
        timings = dict(run.timings)
    seconds = time.perf_counter() - t0
    metrics = outcome.metrics.set_index("attack")
    base = metrics.loc["loss threshold"]
    print(f"digits, {args.models} x {args.model}, {args.epochs} epochs, ratio 0.5: "
          f"subset train acc {outcome.summary['subset train accuracy']:.4f}, "
          f"test acc {outcome.summary['test accuracy']:.4f}; {seconds:.0f} s")
    print(f"{'attack':32s} {'AUC':>7s} {'TPR@0.1%':>9s} {'TPR@1%':>8s} {'vs loss @1%':>12s}")
    rows = {}
    for name, row in metrics.iterrows():
        ratio = row["tpr_at_1%_fpr"] / base["tpr_at_1%_fpr"] if base["tpr_at_1%_fpr"] > 0 else float("inf")
        print(f"{name:32s} {row['auc']:7.4f} {row['tpr_at_0.1%_fpr']:9.4f} {row['tpr_at_1%_fpr']:8.4f} {ratio:11.2f}x")
        rows[name] = {"auc": float(row["auc"]), "tpr_at_0.1%_fpr": float(row["tpr_at_0.1%_fpr"]),
                      "tpr_at_1%_fpr": float(row["tpr_at_1%_fpr"]), "tpr_at_1%_vs_loss_threshold": float(ratio)}
    best = outcome.summary["best LiRA attack"]
    beats = rows[best]["tpr_at_1%_fpr"] > rows["loss threshold"]["tpr_at_1%_fpr"]
    print(f"best LiRA ({best}) beats the loss threshold at 1% FPR: {beats}")
    result = {
        "benchmark": "lira",
        "config": cfg.model_dump(),
        "attacks": rows,
        "best_lira": best,
        "lira_beats_loss_threshold_at_1pct_fpr": bool(beats),
        "subset_train_accuracy": outcome.summary["subset train accuracy"],
        "test_accuracy": outcome.summary["test accuracy"],
        "leak_rate_vs_mem_spearman": outcome.summary.get("leak_rate vs mem Spearman rho"),
        "seconds": round(seconds, 1),
        "timings": timings,
    }
    result = run_record.write(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
