"""Which examples decide the time to fit under label noise on digits?

Trains mlp:512x2 (the study's default optimizer) on digits with label
corruption probability p = 0.2 and p = 1 (each label redrawn uniformly with
probability p), takes the examples still misclassified at 80% of each model's
time to fit, and compares their nearest training neighbour with the whole
set: how close it is, and whether its (corrupted) label conflicts. The
computation is the study's (:func:`fitscope.estimators.neighbours.late_examples`,
:func:`fitscope.estimators.neighbours.neighbour_conflicts`), per model here.

Usage: python bench/randomization_last_examples.py
Writes bench/results/randomization_last_examples.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fitscope.data import corrupt, load
from fitscope.estimators.neighbours import late_examples, neighbour_conflicts
from fitscope.experiments.randomization import LATE_AT, make_config
from fitscope.train import TrainConfig, train_ensemble

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

NOISE = (0.2, 1.0)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    bench_run = start_run(__file__, argv)
    cfg = make_config()
    data = load("digits", seed=0)
    labels = np.stack([corrupt(data, "labels", noise=p, seed=3).dataset.y_train for p in NOISE])
    config = TrainConfig(epochs=cfg.epochs, optimizer=cfg.optimizer, lr=cfg.lr, batch_size=cfg.batch_size,
                         early_stop="fit", record="full")
    result = train_ensemble(cfg.model, data.x_train, labels, config=config, seeds=[0, 1])
    late = late_examples(result.records.correct_array(), result.epochs_to_fit, at=LATE_AT)
    conflicts = neighbour_conflicts(data.x_train, labels)
    rows = []
    for k, p in enumerate(NOISE):
        fit = int(result.epochs_to_fit[k])
        epoch = max(1, int(LATE_AT * (fit if fit > 0 else result.epochs_run)))
        model = np.zeros(late.shape, bool)
        model[k] = True
        row = dict(noise=p, epochs_to_fit=fit, epoch=epoch, late_examples=conflicts.count(late & model),
                   late_nn_distance_median=conflicts.distance_median(late & model),
                   all_nn_distance_median=conflicts.distance_median(model),
                   late_nn_label_conflict=conflicts.rate(late & model),
                   all_nn_label_conflict=conflicts.rate(model))
        rows.append(row)
        print(f"p={p}: fit at epoch {fit}; {row['late_examples']} examples still wrong at epoch {epoch}: "
              f"nearest-neighbour distance median {row['late_nn_distance_median']:.2f} (all {row['all_nn_distance_median']:.2f}), "
              f"neighbour label conflicts {row['late_nn_label_conflict']:.2f} (all {row['all_nn_label_conflict']:.2f})")
    out = Path(__file__).parent / "results" / "randomization_last_examples.json"
    bench_run.write(out, dict(benchmark="randomization_last_examples", rows=rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
