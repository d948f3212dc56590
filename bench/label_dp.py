"""Label DP on digits: LP-1ST and LP-2ST test accuracy at several eps, with a canary audit beside each row.

Model and training (the same for every row, chosen once, not per eps):
``mlp:512x2``, adam lr 1e-3, batch 64, ``--epochs`` epochs, weight decay
``--weight-decay``, and ``--models`` models per stage trained at once on the
same noisy labels, whose mean probabilities give the next stage's prior and
the predictions (post-processing: no privacy cost). The non-private row
trains the same models on the true labels.

Canary audit per row (a separate training run): ``--canaries`` training
labels are replaced by random other labels, the same procedure trains, and
each canary's label is guessed as the argmax of the final model's
probabilities over the 9 labels it can have; the 95% one-sided
Clopper-Pearson lower bound on the attack's accuracy gives the eps lower
bound ``log(8 a / (1 - a))`` (see ``fitscope/privacy/canary.py``), printed
next to the claimed eps. The non-private row shows what the audit finds when
nothing protects the labels.

Statistics of the private labels (the share of labels randomized response
kept, per stage) read the true training labels, so they are outside the eps
claim: they are not computed, printed or written unless
``--reveal-private-stats`` asks for them.

*paper* (Ghazi et al. 2021, MNIST, LP-1ST): eps 1, 2, 3, 4 -> 95.3, 98.2,
98.8, 99.1; non-private 99.3.

Usage: python bench/label_dp.py [--eps 1,2,4] [--stages 1,2] [--canaries 200] [--reveal-private-stats]
Writes bench/results/label_dp.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from fitscope.data import load
from fitscope.privacy.canary import canary_audit
from fitscope.privacy.label_dp import lp_mst
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

SPEC = "mlp:512x2"
PAPER_LP1ST = {1.0: 0.953, 2.0: 0.982, 3.0: 0.988, 4.0: 0.991, math.inf: 0.993}


def _mean_probs(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return (z / z.sum(-1, keepdims=True)).mean(0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", default="1,2,4")
    parser.add_argument("--stages", default="1,2")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--overfit-epochs", type=int, default=40,
                        help="an extra non-private row trained this long, to show the audit's power (0: none)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--canaries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reveal-private-stats", action="store_true",
                        help="also report the share of labels randomized response kept (reads the true labels, "
                             "outside the eps claim)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "label_dp.json"))
    args = parser.parse_args(argv)
    bench_run = start_run(__file__, argv)
    eps_list = [float(e) for e in args.eps.split(",")]
    stage_list = [int(s) for s in args.stages.split(",")]

    data = load("digits", seed=0)
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    k = data.n_classes
    cfg = TrainConfig(epochs=args.epochs, optimizer="adam", lr=1e-3, batch_size=64, weight_decay=args.weight_decay,
                      record=False)
    seeds = [derive_seed(args.seed, "model", m) for m in range(args.models)]

    def non_private(x_, y_, config=cfg):
        return train_ensemble(SPEC, x_, y_, config=config, seeds=seeds, x_test=xt, y_test=yt, n_classes=k)

    reveal = args.reveal_private_stats

    def private(eps, stages, y_, seed):
        return lp_mst(x, y_, eps=eps, stages=stages, spec=SPEC, train_config=cfg, seed=seed, x_test=xt, y_test=yt,
                      n_classes=k, models=args.models, reveal_private_stats=reveal)

    rows = []
    t_all = time.perf_counter()
    print(f"digits ({len(y)} train / {len(yt)} test), {SPEC} x {args.models} per stage, {args.epochs} epochs, "
          f"{args.canaries} canaries per audit (95% one-sided Clopper-Pearson)")
    if not reveal:
        print("statistics of the private labels are not shown; --reveal-private-stats shows the keep rate "
              "(it reads the true labels, outside the eps claim)")
    keep_head = f" {'keep rate':>16s}" if reveal else ""
    print(f"{'method':22s} {'eps':>5s} {'test acc':>9s} {'paper LP-1ST':>13s}{keep_head} "
          f"{'canary acc':>11s} {'eps lower':>10s} {'seconds':>8s}")

    def audit_of(procedure, claimed):
        return canary_audit(procedure, x, y, m=args.canaries, n_classes=k, seed=derive_seed(args.seed, "canary"),
                            claimed_eps=claimed)

    # non-private
    t0 = time.perf_counter()
    res = non_private(x, y)
    acc = float((_mean_probs(res.test_logits).argmax(1) == yt).mean())
    audit = audit_of(lambda x_, y_: _mean_probs(non_private(x_, y_).train_logits), math.inf)
    rows.append({"method": "non-private", "stages": None, "eps": math.inf, "test_acc": acc,
                 "paper_lp1st": PAPER_LP1ST[math.inf], **audit.row(),
                 "seconds": time.perf_counter() - t0})
    if args.overfit_epochs:  # what the audit finds in a model that memorizes its labels
        t0 = time.perf_counter()
        over = cfg.model_copy(update={"epochs": args.overfit_epochs})
        res = non_private(x, y, over)
        acc = float((_mean_probs(res.test_logits).argmax(1) == yt).mean())
        audit = audit_of(lambda x_, y_: _mean_probs(non_private(x_, y_, over).train_logits), math.inf)
        rows.append({"method": f"non-private, {args.overfit_epochs} epochs", "stages": None, "eps": math.inf,
                     "test_acc": acc, "paper_lp1st": None, **audit.row(),
                     "seconds": time.perf_counter() - t0})
    for eps in eps_list:
        for stages in stage_list:
            t0 = time.perf_counter()
            r = private(eps, stages, y, args.seed)
            audit = audit_of(lambda x_, y_, eps=eps, stages=stages: private(eps, stages, y_, args.seed + 1).train_probs,
                             eps)
            rows.append({"method": f"LP-{stages}ST", "stages": stages, "eps": eps, "test_acc": r.test_acc,
                         "paper_lp1st": PAPER_LP1ST.get(eps) if stages == 1 else None,
                         **({"keep_rate": [round(float(v), 4) for v in r.keep_rate]} if reveal else {}),
                         "mean_top_k": [round(float(v), 3) for v in r.mean_k],
                         "stage_test_acc": [round(float(v), 4) for v in r.stage_test_acc], **audit.row(),
                         "seconds": time.perf_counter() - t0})
    for row in rows:
        paper = f"{row['paper_lp1st']:.3f}" if row["paper_lp1st"] is not None else "-"
        keep = ""
        if reveal:
            rates = "/".join(f"{v:.2f}" for v in row["keep_rate"]) if row.get("keep_rate") else "-"
            keep = f" {rates:>16s}"
        print(f"{row['method']:22s} {row['eps']:5.1f} {row['test_acc']:9.4f} {paper:>13s}{keep} "
              f"{row['attack_accuracy']:11.3f} {row['eps_lower_bound']:10.3f} {row['seconds']:8.1f}")
    below = all(r["eps_lower_bound"] <= r["eps"] for r in rows if math.isfinite(r["eps"]))
    print(f"canary lower bound below the claimed eps in every private row: {below}")
    result = {
        "benchmark": "label_dp",
        "data": "digits", "spec": SPEC, "train_config": cfg.model_dump(), "models_per_stage": args.models,
        "private_stats_shown": reveal,
        "canaries": args.canaries,
        # the paper's accuracies are quoted (bench_run.quote below), never stored beside the measurements
        "rows": [{**{k: v for k, v in r.items() if k != "paper_lp1st"},
                  "eps": r["eps"] if math.isfinite(r["eps"]) else "inf",
                  "claimed_eps": r["eps"] if math.isfinite(r["eps"]) else "inf"} for r in rows],
        "canary_bound_below_claimed_eps_in_every_row": below,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    bench_run.quote("lp1st_test_accuracy_mnist", {("inf" if not math.isfinite(k) else f"{k:g}"): v
                                                   for k, v in PAPER_LP1ST.items()},
                    source="Ghazi et al. 2021 (label DP, LP-1ST on MNIST), as listed in METHODS.md")
    result = bench_run.write(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
