"""Label-issue detection: our score against cleanlab fed each model family's out-of-fold probabilities.

Cases (data set, injected noise): digits 10% and 40% uniform, mnist1d 20%
uniform and pair, breast_cancer 20% uniform, wine 30% pair, iris 20%
uniform, and a CSV made here with scikit-learn's ``make_classification``
and class-dependent flips (each class its own flip rate, mostly into the
next class). For each case, in one process and one code version:

1. the audit's networks: the units of ``fitscope audit`` for this case
   (:func:`fitscope.experiments.audit.plan_units`, run by its pure task
   :func:`~fitscope.experiments.audit.train_unit_task`: the same models,
   subsets, seeds and label flips as the audit), with the network setting
   below; its memorization models give the networks' out-of-fold
   probabilities, learning speed, training margin and memorization, its
   C-score models the holdout C-score, computed as the audit computes them.
   The rest of the audit (influence, input-space densities, the report) is
   not run: it costs time and gives no label-issue signal;
2. the ``--fast`` networks: 16 memorization models, no C-score models;
3. scikit-learn's out-of-fold probabilities (:func:`fitscope.train.sklearn_oof_probs`,
   5 folds) of a logistic regression, gradient boosting and an MLP, on the
   training rows with the labels as given.

Detectors, scored against the injected flips (AUROC; precision at k = the
true number of flips):

- ``ours``: :func:`fitscope.estimators.label_issue_scores` with its defaults
  (the rule of ``bench/results/label_issue_rule.json``) on every family and signal;
- ``ours --fast``: the same rule on the families (the fast networks and
  scikit-learn's) with the fast networks' learning speed: no C-score;
- for each family (``network``, ``logistic``, ``boosting``, ``mlp``):
  ``cleanlab quality`` (``1 - get_label_quality_scores``, self-confidence)
  and ``cleanlab find_label_issues`` (the flagged rows first, each group by
  cleanlab's quality), on that family's out-of-fold probabilities;
- for reference: the families' mixture's self-confidence, learning speed
  alone, C-score alone.

The target: ours at least as high as the best cleanlab variant on every
case, and above it on at least half (AUROC; P@k reported beside it). Nothing
here is tuned on these cases: the rule is the library default, chosen on
other data sets by ``bench/label_issue_rule.py``.

Runtime: per case, the training seconds of the memorization models, the
C-score models, the fast networks and each scikit-learn family; what each
detector's inputs cost (``cost_seconds``: ours = all of them, ours --fast =
the fast networks and the scikit-learn families, cleanlab / family = that
family alone).

Usage: python bench/label_issues.py [--cases digits-10,iris-20]
Writes bench/results/label_issues.json (all cases; with --cases a subset it
writes bench/results/label_issues_partial.json instead, never mixing runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fitscope.data import load
from fitscope.data.split import split_train_test
from fitscope.estimators import (
    DEFAULT_FAMILY_WEIGHTING,
    DEFAULT_WEIGHTS,
    cleanlab_issues,
    combine_oof_probs,
    cscore_holdout,
    detection_metrics,
    label_issue_scores,
    learning_speed,
    memorization_scores,
    out_of_fold_probs,
)
from fitscope.experiments.audit import FIT_THRESHOLD, QUICK, make_config, noisy_labels, plan_units, train_unit_task
from fitscope.seeding import derive_seed
from fitscope.train import sklearn_oof_probs, unpack_correct

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RULE_RESULTS = RESULTS / "label_issue_rule.json"

#: The audit's network setting: its --quick setting (48 memorization models at ratio 0.7, 16 models at each
#: of the C-score ratios 0.3 and 0.5, 12 epochs) so that 8 cases fit in 40 minutes on 2 cores.
NETWORK = dict(QUICK)
#: Small tables (fewer than SMALL_ROWS training rows): batches of 32 and 30 epochs, so that every model takes
#: a few hundred steps (at batch 128 a 0.7-subset of wine is one step per epoch).
SMALL_ROWS = 1000
SMALL = dict(batch_size=32, epochs=30)
#: ``--fast``: the memorization models only (learning speed and out-of-fold probabilities), no C-score models.
FAST_MODELS = 16
#: Folds of the scikit-learn families.
FOLDS = 5


@dataclass(frozen=True)
class Synthetic:
    """A CSV made with ``make_classification`` whose labels are flipped class by class.

    ``rates[c]``: probability that a row of class c is flipped; a flipped row goes to class
    ``(c + 1) mod C`` with probability ``to_next``, else to one of the other classes uniformly.
    ``rates=None`` with ``mode``/``noise``: exactly ``round(noise * N)`` rows flipped, uniformly or to the next class.
    """

    n_samples: int
    n_features: int
    n_informative: int
    n_classes: int
    class_sep: float
    seed: int
    rates: tuple[float, ...] | None = None
    to_next: float = 0.75
    noise: float = 0.0
    mode: str = "uniform"
    blobs: bool = False  # make_blobs (n_informative unused; class_sep is the clusters' std)

    def make(self):
        """``(x, clean labels, given labels)``."""
        from sklearn.datasets import make_blobs, make_classification

        if self.blobs:
            x, y = make_blobs(n_samples=self.n_samples, n_features=self.n_features, centers=self.n_classes,
                              cluster_std=self.class_sep, random_state=self.seed)
        else:
            x, y = make_classification(n_samples=self.n_samples, n_features=self.n_features,
                                       n_informative=self.n_informative, n_redundant=0,
                                       n_classes=self.n_classes, n_clusters_per_class=2,
                                       class_sep=self.class_sep, random_state=self.seed)
        rng = np.random.default_rng(derive_seed(self.seed, "flips"))
        c = self.n_classes
        given = y.copy()
        if self.rates is not None:
            flip = rng.random(len(y)) < np.asarray(self.rates)[y]
            shift = np.where(rng.random(len(y)) < self.to_next, 1, rng.integers(1, c, len(y)))
            given[flip] = (y[flip] + shift[flip]) % c
        else:
            rows = rng.choice(len(y), int(round(self.noise * len(y))), replace=False)
            shift = np.ones(len(rows), np.int64) if self.mode == "pair" else rng.integers(1, c, len(rows))
            given[rows] = (y[rows] + shift) % c
        return x, y, given

    def write(self, path: Path) -> tuple[Path, np.ndarray]:
        """Write the CSV (features, then ``label`` as given); return it and the flipped mask of its train split."""
        x, y, given = self.make()
        header = ",".join([f"x{j}" for j in range(x.shape[1])] + ["label"])
        np.savetxt(path, np.column_stack([x, given]), delimiter=",", header=header, comments="",
                   fmt=["%.17g"] * x.shape[1] + ["%d"])
        rows = np.arange(len(y))[:, None].astype(np.float32)  # the loader's split, applied to row numbers
        train_rows = split_train_test(rows, given.astype(np.int64), test_fraction=0.2, seed=0, where="rows")[0]
        train_rows = train_rows[:, 0].astype(np.int64)
        return path, (given != y)[train_rows]


@dataclass(frozen=True)
class Case:
    """One benchmark case: a built-in set with the audit's noise, or a :class:`Synthetic` CSV."""

    data: str | Synthetic
    noise: float = 0.0
    mode: str = "uniform"
    model: str = "mlp:512x2"
    seed: int = 0  # the audit's seed (flips, subsets, models)

    def describe(self) -> str:
        if isinstance(self.data, Synthetic):
            s = self.data
            kind = "make_blobs" if s.blobs else "make_classification"
            noise = (f"class-dependent flips, rates {list(s.rates)}, {s.to_next:.0%} to the next class"
                     if s.rates is not None else f"{s.noise:.0%} {s.mode}")
            return f"{kind}(n={s.n_samples}, d={s.n_features}, C={s.n_classes}, seed={s.seed}), {noise}"
        return f"{self.data}, {self.noise:.0%} {self.mode}"


CASES = {
    "digits-10": Case("digits", 0.1, "uniform"),
    "digits-40": Case("digits", 0.4, "uniform"),
    "mnist1d-20": Case("mnist1d", 0.2, "uniform", "cnn1d:16x3"),
    "mnist1d-20-pair": Case("mnist1d", 0.2, "pair", "cnn1d:16x3"),
    "breast_cancer-20": Case("breast_cancer", 0.2, "uniform"),
    "wine-30-pair": Case("wine", 0.3, "pair"),
    "iris-20": Case("iris", 0.2, "uniform"),
    "make_classification-classdep": Case(Synthetic(n_samples=1500, n_features=20, n_informative=10, n_classes=4,
                                                   class_sep=1.0, seed=2024, rates=(0.05, 0.15, 0.25, 0.35))),
}


def network_setting(n_train: int) -> dict:
    """The audit's network setting for a training set of ``n_train`` rows (:data:`NETWORK`, :data:`SMALL`)."""
    return {**NETWORK, **(SMALL if n_train < SMALL_ROWS else {})}


@dataclass
class Signals:
    """Everything the detectors of one case are computed from, with what each part cost."""

    labels: np.ndarray
    noisy: np.ndarray
    families: dict  # family -> (n, C) out-of-fold probabilities (network = the audit's memorization models)
    extras: dict  # mem / cscore / learning_speed / margin / hidden_density (the audit's, as it passes them)
    fast_families: dict
    fast_extras: dict
    seconds: dict  # what each part took
    facts: dict = field(default_factory=dict)  # network setting, accuracies


def train_networks(cfg, data, labels) -> tuple[dict, dict]:
    """Train the audit's units for ``cfg`` (its models, subsets and seeds) and compute its label signals.

    The units are :func:`fitscope.experiments.audit.plan_units` run by its pure task
    :func:`~fitscope.experiments.audit.train_unit_task`, exactly what ``fitscope audit`` trains; the signals
    are computed from them as the audit computes them (memorization only when the subset models fit their
    subsets, :data:`~fitscope.experiments.audit.FIT_THRESHOLD`). The rest of the audit (influence, densities
    in input space, the report) is not run. Returns ``(signals, facts)``: ``signals`` holds ``pred_probs``
    (the memorization models' out-of-fold probabilities), ``learning_speed``, ``margin``, ``mem`` (or None)
    and, with C-score ratios other than ``cfg.ratio``, ``cscore``; ``facts`` the training seconds per part
    and the models' accuracies.
    """
    n, c = len(labels), data.n_classes
    units = plan_units(cfg, n)
    done = {}
    seconds = {"memorization models": 0.0, "C-score models": 0.0}
    for unit in units:
        t0 = time.perf_counter()
        done[unit.key] = train_unit_task((unit, cfg, c), x_train=data.x_train, labels=labels,
                                         x_test=data.x_test, y_test=data.y_test)
        seconds["memorization models" if unit.part == "mem" else "C-score models"] += time.perf_counter() - t0
    mem_units = [done[u.key] for u in units if u.part == "mem"]
    masks = np.concatenate([u["masks"] for u in mem_units])
    correct = np.concatenate([u["correct"] for u in mem_units])
    counts = np.concatenate([u["correct_epochs"] for u in mem_units])
    epochs = int(mem_units[0]["records_epochs"])
    margin_mean = np.concatenate([u["margin_mean"] for u in mem_units])
    subset_fit = float(np.concatenate([u["subset_acc"] for u in mem_units]).mean())
    t0 = time.perf_counter()
    signals = dict(
        pred_probs=out_of_fold_probs(np.concatenate([u["train_logits"] for u in mem_units]), masks),
        learning_speed=learning_speed(correct_counts=counts, epochs=epochs, in_subset=masks).scores,
        margin=np.where(masks, margin_mean, 0.0).sum(axis=0) / np.maximum(masks.sum(axis=0), 1),
        mem=memorization_scores(correct, masks).mem if subset_fit >= FIT_THRESHOLD else None,
    )
    by_ratio: dict[float, tuple[list, list]] = {}
    for u in units:
        pair = by_ratio.setdefault(u.ratio, ([], []))
        pair[0].append(done[u.key]["correct"])
        pair[1].append(done[u.key]["masks"])
    if len(by_ratio) > 1:
        signals["cscore"] = cscore_holdout({r: (np.concatenate(a), np.concatenate(b))
                                            for r, (a, b) in by_ratio.items()}).cscore
    seconds["signals from the models"] = time.perf_counter() - t0
    facts = dict(subset_train_accuracy=subset_fit,
                 test_accuracy=float(np.concatenate([u["test_acc"] for u in mem_units]).mean()),
                 models=int(sum(len(u.seeds) for u in units)))
    return signals, dict(seconds=seconds, **facts)


def collect(name: str, case: Case, tmp: Path) -> Signals:
    """The networks of the audit and of the fast audit, and the scikit-learn families, on one case."""
    truth = None
    if isinstance(case.data, Synthetic):
        path, truth = case.data.write(tmp / f"{name}.csv")
        data_arg, noise = str(path), 0.0
    else:
        data_arg, noise = case.data, case.noise
    data = load(data_arg, seed=0)
    n = len(data.y_train)
    setting = network_setting(n)
    base = dict(data=data_arg, noise=noise, noise_mode=case.mode, model=case.model, seed=case.seed)
    cfg = make_config(**base, **setting)
    labels, flipped, _ = noisy_labels(cfg, data)
    if truth is None:
        truth = np.zeros(n, bool)
        truth[flipped] = True

    net, full = train_networks(cfg, data, labels)
    fast_setting = {**setting, "models": FAST_MODELS, "chunk": FAST_MODELS, "cscore_ratios": [cfg.ratio]}
    fast_net, fast = train_networks(make_config(**base, **fast_setting), data, labels)
    oof = sklearn_oof_probs(data.x_train, labels, folds=FOLDS, n_classes=data.n_classes,
                            seed=derive_seed(case.seed, "sklearn-oof"))
    seconds = {**full["seconds"], "fast memorization models": fast["seconds"]["memorization models"],
               **{f"sklearn {f}": s for f, s in oof.seconds.items()}}
    families = {"network": net.pop("pred_probs"), **oof.probs}
    fast_families = {"network": fast_net["pred_probs"], **oof.probs}
    extras = {k: v for k, v in net.items() if v is not None}
    facts = dict(n_train=n, n_classes=data.n_classes, flipped=int(truth.sum()), network_setting=setting,
                 fast_setting=fast_setting, models=full["models"], fast_models=fast["models"],
                 subset_train_accuracy=full["subset_train_accuracy"], test_accuracy=full["test_accuracy"],
                 mem_in_label_score="mem" in extras, sklearn_settings=oof.settings,
                 oof_accuracy_on_given_labels={f: _accuracy(p, labels) for f, p in families.items()})
    return Signals(labels=labels, noisy=truth, families=families, extras=extras, fast_families=fast_families,
                   fast_extras={"learning_speed": fast_net["learning_speed"]}, seconds=seconds, facts=facts)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the out-of-fold arg-max against the given labels, over the rows with a prediction."""
    ok = ~np.isnan(probs).any(axis=1)
    return float(np.mean(probs[ok].argmax(axis=1) == labels[ok]))


def detectors(s: Signals) -> dict[str, np.ndarray]:
    """Every detector's scores on one case (higher = more likely flipped)."""
    out: dict[str, np.ndarray] = {}
    ours = label_issue_scores(s.labels, s.families, **s.extras)
    out["ours"] = ours.scores
    fast_ls = s.fast_extras["learning_speed"]
    out["ours --fast"] = label_issue_scores(s.labels, s.fast_families, learning_speed=fast_ls).scores
    for family, probs in s.families.items():
        clean = cleanlab_issues(s.labels, probs)
        out[f"cleanlab quality / {family}"] = clean.scores
        out[f"cleanlab find_label_issues / {family}"] = clean.ranking
    ens = combine_oof_probs(s.families, s.labels)
    out["family ensemble self-confidence"] = 1.0 - ens.probs[np.arange(len(s.labels)), s.labels]
    out["learning speed alone"] = -s.extras["learning_speed"]
    if "cscore" in s.extras:
        out["C-score alone"] = -s.extras["cscore"]
    return out


def metrics_of(scores: dict[str, np.ndarray], noisy: np.ndarray) -> dict[str, dict]:
    return {name: detection_metrics(s, noisy) for name, s in scores.items()}


def verdict(detection: dict[str, dict], key: str = "ours") -> dict:
    """Ours (or ``key``) against the best cleanlab variant, by AUROC and by precision at k."""
    variants = {k: v for k, v in detection.items() if k.startswith("cleanlab ")}
    best_a = max(variants, key=lambda k: variants[k]["auroc"])
    best_p = max(variants, key=lambda k: variants[k]["precision_at_k"])
    ours = detection[key]
    return dict(best_cleanlab_auroc=variants[best_a]["auroc"], best_cleanlab_auroc_variant=best_a,
                best_cleanlab_precision_at_k=variants[best_p]["precision_at_k"], best_cleanlab_precision_variant=best_p,
                auroc_margin=ours["auroc"] - variants[best_a]["auroc"],
                precision_margin=ours["precision_at_k"] - variants[best_p]["precision_at_k"],
                at_least_best=ours["auroc"] >= variants[best_a]["auroc"],
                above_best=ours["auroc"] > variants[best_a]["auroc"])


def costs(seconds: dict) -> dict:
    """Seconds of each variant: what the full score, the --fast score and each cleanlab input cost."""
    sk = {f: seconds[f"sklearn {f}"] for f in ("logistic", "boosting", "mlp")}
    full = seconds["memorization models"] + seconds["C-score models"] + sum(sk.values())
    fast = seconds["fast memorization models"] + sum(sk.values())
    return {"ours": full, "ours --fast": fast, "cleanlab / network": seconds["memorization models"],
            **{f"cleanlab / {f}": s for f, s in sk.items()}}


def run_case(name: str, case: Case, tmp: Path) -> dict:
    t0 = time.perf_counter()
    s = collect(name, case, tmp)
    det = metrics_of(detectors(s), s.noisy)
    mixture = combine_oof_probs(s.families, s.labels)
    fast_mixture = combine_oof_probs(s.fast_families, s.labels)
    return dict(case=name, description=case.describe(), model=case.model, audit_seed=case.seed, facts=s.facts,
                detection=det, target=verdict(det), target_fast=verdict(det, "ours --fast"),
                family_weights=mixture.weight_of(), fast_family_weights=fast_mixture.weight_of(),
                seconds={k: round(v, 2) for k, v in s.seconds.items()},
                cost_seconds={k: round(v, 2) for k, v in costs(s.seconds).items()},
                case_seconds=round(time.perf_counter() - t0, 1))


def print_case(r: dict) -> None:
    f = r["facts"]
    print(f"\n{r['case']}: {r['description']}; {r['model']}, {f['models']} models "
          f"({f['network_setting']['epochs']} epochs, batch {f['network_setting'].get('batch_size', 128)}), "
          f"subset train acc {f['subset_train_accuracy']:.3f}, test acc {f['test_accuracy']:.3f}; "
          f"families {', '.join(f'{k} {v:.2f}' for k, v in r['family_weights'].items())}")
    print(f"  {'detector':<42} {'AUROC':>7} {'P@k':>6}  seconds")
    cost = r["cost_seconds"]
    for name, m in r["detection"].items():
        key = f"cleanlab / {name.split(' / ')[1]}" if name.startswith("cleanlab ") else name
        sec = f"{cost[key]:.1f}" if key in cost else ""
        print(f"  {name:<42} {m['auroc']:7.4f} {m['precision_at_k']:6.3f}  {sec}")
    t = r["target"]
    print(f"  ours vs best cleanlab ({t['best_cleanlab_auroc_variant']}): AUROC {t['auroc_margin']:+.4f} "
          f"({'at least as high' if t['at_least_best'] else 'BELOW'}), P@k {t['precision_margin']:+.3f}; "
          f"--fast AUROC {r['target_fast']['auroc_margin']:+.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, among {', '.join(CASES)}")
    args = parser.parse_args(argv)
    run = start_run(__file__, argv)
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; expected among {', '.join(CASES)}")
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(run_case(name, CASES[name], Path(tmp)))
            print_case(results[-1])
            sys.stdout.flush()
    held = [r["case"] for r in results if r["target"]["at_least_best"]]
    above = [r["case"] for r in results if r["target"]["above_best"]]
    summary = dict(
        cases=len(results), at_least_best=len(held), above_best=len(above),
        target_met=len(held) == len(results) and 2 * len(above) >= len(results),
        below_best=[r["case"] for r in results if not r["target"]["at_least_best"]],
        fast_at_least_best=sum(r["target_fast"]["at_least_best"] for r in results),
        mean_cost_ratio_fast_to_full=float(np.mean([r["cost_seconds"]["ours --fast"] / r["cost_seconds"]["ours"]
                                                    for r in results])),
    )
    rule = json.loads(RULE_RESULTS.read_text()).get("chosen") if RULE_RESULTS.exists() else None
    library = dict(family_weighting=DEFAULT_FAMILY_WEIGHTING, weights=dict(DEFAULT_WEIGHTS))
    record = dict(
        benchmark="label_issues",
        rule=dict(library, chosen_in=str(RULE_RESULTS.relative_to(Path(__file__).parent.parent)),
                  equals_recorded_choice=bool(rule) and rule["family_weighting"] == library["family_weighting"]
                  and rule["weights"] == library["weights"]),
        network_setting=dict(default=NETWORK, small_tables=dict(rows_below=SMALL_ROWS, **SMALL),
                             fast=dict(models=FAST_MODELS, cscore_ratios="the memorization ratio only"),
                             note="the audit's --quick setting, to fit 8 cases in 40 minutes on 2 cores"),
        folds=FOLDS, summary=summary, cases=results, total_seconds=round(time.perf_counter() - t0, 1),
    )
    out = RESULTS / ("label_issues.json" if names == list(CASES) else "label_issues_partial.json")
    run.write(out, record)
    print(f"\nours >= best cleanlab variant (AUROC) on {len(held)}/{len(results)} cases, above it on {len(above)}; "
          f"target {'met' if summary['target_met'] else 'NOT met'}"
          + (f" (below on {', '.join(summary['below_best'])})" if summary["below_best"] else ""))
    print(f"total {record['total_seconds']:.0f} s; wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
