"""Intervals that do not collapse, and high-influence pairs with a known false-discovery rate (issue 12).

Three measurements, one results file (bench/results/influence_fdr.json):

1. **Coverage** of the 95% intervals of :func:`fitscope.estimators.memorization_scores`
   on simulated correctness with known rates: K models, each holding an
   example with probability 0.7 (n_in about 0.7 K), correct with probability
   p_in when it holds it and p_out otherwise; every one of ``--repeats``
   examples is one repeat. Per rate (Wilson) and for the difference mem =
   p_in - p_out (Newcombe's hybrid score interval), against the plug-in
   interval of the old standard error, ``estimate +- 1.96 sqrt(p (1 - p) / n)``,
   on the same draws (the baseline). Also the exact Wilson coverage (a
   binomial sum, no simulation) at fixed n.
2. **Random memberships**: the correctness of real trained models (the digits
   run of part 3) with memberships drawn afresh at random (the models never
   trained on those subsets, so no influence is real): how many pairs pass
   the fixed thresholds (infl >= 0.15, mem >= 0.25 with the real memorization
   of the run, and with no memorization filter) and how many the FDR list
   keeps (target 10%), over ``--null-repeats`` draws.
3. **Digits with 10% flipped labels**: the audit study (``run_study(get_study("audit"), ...)``),
   ``--models`` memorization models (mlp:512x2, ratio 0.7, ``--epochs`` epochs; the C-score
   at ratio 0.7 only, from the same models). For the first K of them (K in
   ``--ks``): candidates at the fixed thresholds, kept pairs at FDR <= 10%,
   the estimated FDR of both lists, the projected models for the fixed
   thresholds to reach 10% (also with 5 other permutation seeds: how much the
   cut-off moves), and for the kept pairs, the fraction whose
   training example is the test example's nearest training neighbour
   (Euclidean, pixels), among its 5 nearest, and of the same given label;
   against chance (1/n, 5/n, the label frequencies) and against the
   candidates and random (train, test) pairs measured the same way.

No timing is compared (the estimator's cost is ``permutations + 1`` passes of
the influence computation; its seconds are recorded). Runs in about 5-8 minutes
on 2 cores with the defaults.

Usage: python bench/influence_fdr.py [--models 200] [--epochs 20] [--ks 48,100,200] [--repeats 20000]
       [--null-repeats 10] [--out RUN_DIR]
Writes bench/results/influence_fdr.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import binom

from fitscope.estimators import high_influence_pairs_streamed, memorization_scores, subset_masks
from fitscope.estimators.intervals import wilson_interval, z_value
from fitscope.experiments import get_study
from fitscope.experiments.study import run_study
from fitscope.seeding import derive_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "influence_fdr.json"
RATES = [(0.0, 0.0), (0.02, 0.02), (0.5, 0.5), (1.0, 1.0), (1.0, 0.02), (0.98, 0.02), (0.5, 0.02), (1.0, 0.0),
         (0.02, 0.0)]
FDR = 0.10
TOP = 10  # "top pairs": the most influential kept pairs
SEEDS = 5  # other permutation seeds per K


def _covers(lo, hi, truth) -> float:
    return float(np.mean((lo <= truth + 1e-12) & (truth - 1e-12 <= hi)))


def coverage(k: int, p_in: float, p_out: float, repeats: int, seed: int) -> dict:
    """Coverage of the new and the plug-in 95% intervals on ``repeats`` simulated examples."""
    z = z_value(0.95)
    rng = np.random.default_rng(seed)
    in_subset = rng.random((k, repeats)) < 0.7
    u = rng.random((k, repeats))
    r = memorization_scores(np.where(in_subset, u < p_in, u < p_out), in_subset)
    with np.errstate(invalid="ignore", divide="ignore"):
        w_in = z * np.sqrt(r.p_in * (1 - r.p_in) / r.n_in)
        w_out = z * np.sqrt(r.p_out * (1 - r.p_out) / r.n_out)
        w_mem = np.sqrt(w_in ** 2 + w_out ** 2)
    return {
        "p_in": {"new": _covers(r.p_in_lo, r.p_in_hi, p_in), "plug_in": _covers(r.p_in - w_in, r.p_in + w_in, p_in)},
        "p_out": {"new": _covers(r.p_out_lo, r.p_out_hi, p_out),
                  "plug_in": _covers(r.p_out - w_out, r.p_out + w_out, p_out)},
        "mem": {"new": _covers(r.mem_lo, r.mem_hi, p_in - p_out),
                "plug_in": _covers(r.mem - w_mem, r.mem + w_mem, p_in - p_out)},
        "mean_n_in": float(r.n_in.mean()), "mean_n_out": float(r.n_out.mean()),
        "zero_width_plug_in_mem": float(np.mean(w_mem == 0)),
    }


def exact_wilson_coverage(p: float, n: int) -> float:
    """The probability that the 95% Wilson interval of k ~ Binomial(n, p) holds p (a sum over k)."""
    k = np.arange(n + 1)
    lo, hi = wilson_interval(k, np.full(n + 1, n))
    return float((binom.pmf(k, n, p) * ((lo <= p + 1e-12) & (p - 1e-12 <= hi))).sum())


def load_arrays(run) -> dict[str, np.ndarray]:
    """The memorization models' arrays of an audit run, in plan order."""
    keys = sorted(k for k in run.unit_keys() if k.startswith("mem-"))
    units = [run.load_unit(k) for k in keys]
    return {name: np.concatenate([u[name] for u in units]) for name in ("masks", "correct", "test_correct")}


def neighbour_ranks(x_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """``(m, n)`` rank (1 = nearest) of every training example among each test example's neighbours (pixels)."""
    a = x_train.reshape(len(x_train), -1).astype(np.float64)
    b = x_test.reshape(len(x_test), -1).astype(np.float64)
    d = (b ** 2).sum(1)[:, None] - 2 * b @ a.T + (a ** 2).sum(1)[None, :]
    order = np.argsort(d, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(len(b))[:, None]
    ranks[rows, order] = np.arange(1, a.shape[0] + 1)[None, :]
    return ranks


def pair_facts(train_idx, test_idx, ranks, labels, y_test) -> dict:
    """Nearest-neighbour and same-label fractions of a list of pairs."""
    train_idx, test_idx = np.asarray(train_idx, np.int64), np.asarray(test_idx, np.int64)
    if not len(train_idx):
        return {"pairs": 0, "nearest": None, "within_5": None, "same_label": None, "median_rank": None}
    r = ranks[test_idx, train_idx]
    return {"pairs": int(len(r)), "nearest": float(np.mean(r == 1)), "within_5": float(np.mean(r <= 5)),
            "same_label": float(np.mean(labels[train_idx] == y_test[test_idx])), "median_rank": float(np.median(r))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ks", default="48,100,200", help="first K models to estimate from (comma list)")
    parser.add_argument("--repeats", type=int, default=20000, help="simulated examples per coverage case")
    parser.add_argument("--null-repeats", type=int, default=10, help="random membership draws")
    parser.add_argument("--out", default=None, help="audit run directory (default: a temporary one)")
    args = parser.parse_args(argv)
    run_record = start_run(__file__, argv)
    ks = [int(k) for k in args.ks.split(",")]
    record: dict = {"fdr_target": FDR}

    # 1. coverage
    t0 = time.perf_counter()
    cov = {}
    for k in (50, 200):
        for p_in, p_out in RATES:
            cov[f"K={k} p_in={p_in:g} p_out={p_out:g}"] = c = coverage(k, p_in, p_out, args.repeats, seed=k)
            print(f"coverage K={k:3d} p_in={p_in:<4g} p_out={p_out:<4g}  "
                  + "  ".join(f"{name} {c[name]['new']:.3f} (plug-in {c[name]['plug_in']:.3f})"
                              for name in ("p_in", "p_out", "mem")), flush=True)
    exact = {f"p={p:g} n={n}": exact_wilson_coverage(p, n) for p in (0.02, 0.5) for n in (14, 35, 60, 140)}
    for name, value in exact.items():
        print(f"exact Wilson coverage {name}: {value:.4f}")
    record["coverage"] = dict(repeats=args.repeats, confidence=0.95, ratio=0.7, cases=cov, exact_wilson=exact,
                              seconds=round(time.perf_counter() - t0, 1))

    # 3. digits with 10% noise (trained first: part 2 reuses its models' correctness)
    values = dict(data="digits", noise=0.1, model="mlp:512x2", ratio=0.7, models=args.models,
                  cscore_ratios=[0.7], epochs=args.epochs, chunk=60, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "audit"
        t0 = time.perf_counter()
        result = run_study(get_study("audit"), values, out, resume=out.exists())
        train_seconds = time.perf_counter() - t0
        run, outcome = result.run, result.outcome.detail
        arrays = load_arrays(run)
        print(f"audit: {train_seconds:.0f} s, subset accuracy {outcome.summary['subset train accuracy']:.3f}, "
              f"test accuracy {outcome.summary['test accuracy']:.3f}", flush=True)
    from fitscope.data import load

    data = load("digits", seed=0)
    labels = outcome.examples["label"].to_numpy()
    ranks = neighbour_ranks(data.x_train, data.x_test)
    n, m = len(labels), len(data.y_test)
    freq = np.bincount(labels, minlength=data.n_classes) / n
    test_freq = np.bincount(data.y_test, minlength=data.n_classes) / m
    rng = np.random.default_rng(derive_seed(0, "random-pairs"))
    random_pairs = pair_facts(rng.integers(0, n, 20000), rng.integers(0, m, 20000), ranks, labels, data.y_test)
    chance = {"nearest": 1 / n, "within_5": 5 / n, "same_label": float(freq @ test_freq), "random_pairs": random_pairs}
    print(f"chance: nearest {1 / n:.5f}, within 5 {5 / n:.4f}, same label {chance['same_label']:.3f}; random pairs "
          f"{random_pairs}")
    by_k = []
    for k in ks:
        if k > len(arrays["masks"]):
            continue
        masks, correct, test_correct = arrays["masks"][:k], arrays["correct"][:k], arrays["test_correct"][:k]
        mem = memorization_scores(correct, masks)
        t0 = time.perf_counter()
        pairs = high_influence_pairs_streamed(test_correct, masks, mem, fdr=FDR, seed=derive_seed(0, "bench", k))
        seconds = time.perf_counter() - t0
        kept, cand = pairs.pairs, pairs.candidates
        row = dict(models=k, seconds=round(seconds, 2), **{key: pairs.metadata()[key] for key in (
            "n_candidates", "n_kept", "candidates_fdr", "fdr", "fdr_threshold", "null_candidates",
            "models_for_target", "permutations")},
            kept=pair_facts(kept.train_index, kept.test_index, ranks, labels, data.y_test),
            top=pair_facts(kept.train_index[:TOP], kept.test_index[:TOP], ranks, labels, data.y_test),
            candidates=pair_facts(cand.train_index, cand.test_index, ranks, labels, data.y_test),
            top_pairs=[dict(train=int(a), test=int(b), infl=round(float(c), 4), infl_lo=round(float(d), 4),
                            fdr=round(float(e), 4), rank=int(ranks[b, a]))
                       for a, b, c, d, e in zip(kept.train_index[:TOP], kept.test_index[:TOP], kept.infl[:TOP],
                                                kept.infl_lo[:TOP], kept.fdr[:TOP])])
        # the same estimate with other permutation seeds: how much the kept list's cut-off moves
        row["other_seeds"] = []
        for other in range(1, SEEDS + 1):
            again = high_influence_pairs_streamed(test_correct, masks, mem, fdr=FDR,
                                                  seed=derive_seed(0, "bench", k, other))
            row["other_seeds"].append(dict(n_kept=len(again.pairs), fdr=again.metadata()["fdr"],
                                           models_for_target=again.models_for_target))
        by_k.append(row)
        print(f"K={k:4d}: fixed thresholds {row['n_candidates']:6d} pairs (FDR {row['candidates_fdr']:.3f}), kept "
              f"{row['n_kept']:4d} (FDR {row['fdr']}), projected models {row['models_for_target']}; kept nearest "
              f"{row['kept']['nearest']}, within 5 {row['kept']['within_5']}, same label {row['kept']['same_label']}; "
              f"candidates nearest {row['candidates']['nearest']}; {seconds:.1f} s; other seeds kept "
              f"{[r['n_kept'] for r in row['other_seeds']]}", flush=True)
    record["digits"] = dict(config=values, train_seconds=round(train_seconds, 1), n_train=n, n_test=m,
                            subset_train_accuracy=outcome.summary["subset train accuracy"],
                            test_accuracy=outcome.summary["test accuracy"], chance=chance, by_models=by_k,
                            audit_influence_metadata=outcome.influence_fdr, top=TOP)

    # 2. random memberships on the same models' correctness: no influence is real
    null_rows = []
    k = len(arrays["masks"])
    real_mem = memorization_scores(arrays["correct"], arrays["masks"])  # the audit's filter: the real memorization
    filters = (("real mem filter", real_mem), ("no mem filter", np.full(n, 0.5)))  # 0.5: every row passes
    for draw in range(args.null_repeats):
        masks = subset_masks(n, 0.7, k, seed=derive_seed(0, "random-memberships", draw))
        for name, m_arr in filters:
            pairs = high_influence_pairs_streamed(arrays["test_correct"], masks, m_arr, fdr=FDR,
                                                  seed=derive_seed(0, "null-bench", draw))
            null_rows.append(dict(draw=draw, mem=name, n_candidates=pairs.n_candidates, n_kept=len(pairs.pairs),
                                  candidates_fdr=pairs.candidates_fdr, fdr=pairs.metadata()["fdr"]))
    for name, _ in filters:
        rows = [r for r in null_rows if r["mem"] == name]
        print(f"random memberships ({name}), K={k}: fixed-threshold pairs "
              f"{[r['n_candidates'] for r in rows]}, kept {[r['n_kept'] for r in rows]}")
    record["random_memberships"] = dict(models=k, draws=args.null_repeats, rows=null_rows, summary={
        name: dict(mean_candidates=float(np.mean([r["n_candidates"] for r in null_rows if r["mem"] == name])),
                   nonempty_kept=int(sum(1 for r in null_rows if r["mem"] == name and r["n_kept"])),
                   total_kept=int(sum(r["n_kept"] for r in null_rows if r["mem"] == name)))
        for name, _ in filters})
    written = run_record.write(RESULTS, record)
    print(f"wrote {RESULTS.relative_to(Path(__file__).resolve().parents[1])}")
    return written


if __name__ == "__main__":
    main()
