"""Label-issue detection: our score against cleanlab on the same out-of-fold probabilities.

For each case (data set, injected noise) the audit runs in-process in a
temporary run directory; every detector is scored on the same out-of-fold
probabilities of the audit's memorization models against the injected flips:

- ``label_issue (ours)``: :func:`fitscope.estimators.label_issue_scores` with the audit's signals;
- ``out-of-fold self-confidence``: ``1 - p[given label]`` alone;
- ``cleanlab label quality``: ``1 - cleanlab.rank.get_label_quality_scores`` (default method,
  ``self_confidence``; it ranks exactly like the row above);
- ``cleanlab find_label_issues``: the flagged examples first, each group ordered by cleanlab's quality
  (a ranking, for AUROC and precision at k), and the mask itself (precision, recall, number flagged).

k = the true number of flipped labels (precision at k = recall at k). Also
printed: the learning-speed proxy vs holdout C-score Spearman rho.

Ablation of the hidden-space kernel density (off by default, weight 0), on
the same signals: ``label_issue with hidden density`` (weight 0.25, the other
weights as default) and ``hidden density alone`` (``-hidden_density``).

Nothing is tuned here on the injected flips: the audit's default weights are used as they are.
mnist1d uses a 1-D CNN (``cnn1d:16x3``: about 0.95 test accuracy with the
audit's training settings, against about 0.6 for ``mlp:256x2``).

Usage: python bench/label_issues.py [--quick] [--cases digits-10,mnist1d-20]
Writes bench/results/label_issues.json (or label_issues_quick.json with --quick);
with --cases, the other cases already in that file are kept (each case records
when it was measured, and the file's provenance marks them reused from it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from fitscope.estimators import detection_metrics, label_issue_scores
from fitscope.experiments.audit import audit, make_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

# name -> (data, noise, mode, model)
CASES = {
    "digits-10": ("digits", 0.1, "uniform", "mlp:512x2"),
    "mnist1d-20": ("mnist1d", 0.2, "uniform", "cnn1d:16x3"),
    "mnist1d-20-pair": ("mnist1d", 0.2, "pair", "cnn1d:16x3"),
    "digits-40": ("digits", 0.4, "uniform", "mlp:512x2"),
}
# full: the default C-score ratios; quick: fewer models, ratios and epochs
SETTINGS = {
    "default": dict(models=100, cscore_ratios=[0.1, 0.3, 0.5, 0.7, 0.9], cscore_models=20, epochs=20, chunk=50),
    "quick": dict(models=40, cscore_ratios=[0.3, 0.5, 0.7], cscore_models=8, epochs=12, chunk=40),
}


def run_case(name: str, setting: str, tmp: Path) -> dict:
    data, noise, mode, model = CASES[name]
    cfg = make_config(data=data, noise=noise, noise_mode=mode, model=model, seed=0, **SETTINGS[setting])
    t0 = time.perf_counter()
    _, outcome = audit(cfg, tmp / name)
    seconds = time.perf_counter() - t0
    det = {row["score"]: {k: row[k] for k in ("auroc", "precision_at_k", "recall_at_k", "k")}
           for row in outcome.detection.to_dict("records")}
    corrupted = outcome.examples["corrupted"].to_numpy()
    with_hidden = label_issue_scores(**outcome.label_signals, weights={"hidden_density": 0.25})
    det["label_issue with hidden density"] = detection_metrics(with_hidden.scores, corrupted)
    det["hidden density alone"] = detection_metrics(-outcome.examples["hidden_density"].to_numpy(), corrupted)
    return dict(
        case=name, data=data, noise=noise, noise_mode=mode, model=model, config=cfg.model_dump(),
        seconds=round(seconds, 1), detection=det, cleanlab_mask=outcome.cleanlab,
        mem_in_label_score=outcome.mem_in_label_score,
        subset_train_accuracy=outcome.summary["subset train accuracy"],
        test_accuracy=outcome.summary["test accuracy"],
        spearman={r["proxy"]: r["spearman_rho"] for r in outcome.spearman.to_dict("records")},
        measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def print_case(r: dict) -> None:
    print(f"\n{r['case']}: {r['model']}, {r['config']['models']} mem models, {r['config']['epochs']} epochs, "
          f"{r['seconds']:.0f} s; subset train acc {r['subset_train_accuracy']:.3f}, "
          f"test acc {r['test_accuracy']:.3f}, mem in score: {r['mem_in_label_score']}")
    print(f"  {'detector':<40} {'AUROC':>7} {'P@k':>7} {'R@k':>7}")
    for name, m in r["detection"].items():
        print(f"  {name:<40} {m['auroc']:7.4f} {m['precision_at_k']:7.4f} {m['recall_at_k']:7.4f}")
    c = r["cleanlab_mask"]
    print(f"  {'cleanlab find_label_issues mask':<40} {'':>7} precision {c['precision']:.4f} recall "
          f"{c['recall']:.4f} flagged {c['flagged']} (k = {c['k']})")
    print(f"  learning speed vs holdout C-score Spearman rho: {r['spearman']['learning speed']:.3f}; "
          f"hidden-space density: {r['spearman']['hidden-space kernel density']:.3f}, "
          f"input-space density: {r['spearman']['input-space kernel density']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer models, C-score ratios and epochs")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, among {', '.join(CASES)}")
    args = parser.parse_args()
    run = start_run(__file__)
    setting = "quick" if args.quick else "default"
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; expected among {', '.join(CASES)}")
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(run_case(name, setting, Path(tmp)))
            print_case(results[-1])
    out = Path(__file__).parent / "results" / ("label_issues_quick.json" if args.quick else "label_issues.json")
    if out.exists():  # keep the cases not run this time (same setting only)
        old = json.loads(out.read_text())
        if old.get("setting") == setting:
            kept = [c for c in old.get("cases", []) if c["case"] not in names and c["case"] in CASES
                    and c.get("model") == CASES[c["case"]][3] and "measured" in c]  # same bench version only
            for c in kept:
                run.reuse(f"cases/{c['case']}", c, source=out, note=f"case measured {c['measured']}, not in this run")
                print(f"kept {c['case']} from {out.name} (measured {c['measured']}): marked reused")
            results = sorted(kept + results, key=lambda c: list(CASES).index(c["case"]))
    record = dict(
        benchmark="label_issues", setting=setting, settings=SETTINGS[setting], cases=results,
        total_seconds=round(time.perf_counter() - t0, 1),
    )
    run.write(out, record)
    print(f"\ntotal {record['total_seconds']:.0f} s; wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
