"""Which examples decide the time to fit under label noise on digits?

Trains mlp:512x2 (the study's default optimizer) on digits with p = 0.2 and
p = 1 label noise, takes the examples still misclassified at 80% of each
model's time to fit, and compares their nearest training neighbour with the
whole set: how close it is, and whether its (noisy) label conflicts.

Usage: python bench/randomization_last_examples.py
Writes bench/results/randomization_last_examples.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

from fitscope.data import corrupt, load
from fitscope.experiments.randomization import make_config
from fitscope.runs.atomic import atomic_write_json
from fitscope.train import TrainConfig, train_ensemble

NOISE = (0.2, 1.0)


def main() -> None:
    cfg = make_config()
    data = load("digits", seed=0)
    x = data.x_train.reshape(len(data.x_train), -1)
    labels = np.stack([corrupt(data, "labels", noise=p, seed=3).dataset.y_train for p in NOISE])
    config = TrainConfig(epochs=cfg.epochs, optimizer=cfg.optimizer, lr=cfg.lr, batch_size=cfg.batch_size,
                         early_stop="fit")
    result = train_ensemble(cfg.model, data.x_train, labels, config=config, seeds=[0, 1])
    correct = result.records.correct_array()
    dist, idx = NearestNeighbors(n_neighbors=2).fit(x).kneighbors(x)
    near, neighbour = dist[:, 1], idx[:, 1]
    rows = []
    for k, p in enumerate(NOISE):
        y = labels[k]
        fit = int(result.epochs_to_fit[k])
        epoch = max(1, int(0.8 * (fit if fit > 0 else result.epochs_run)))
        late = ~correct[epoch - 1, k]
        conflict = y[neighbour] != y
        row = dict(noise=p, epochs_to_fit=fit, epoch=epoch, late_examples=int(late.sum()),
                   late_nn_distance_median=float(np.median(near[late])) if late.any() else float("nan"),
                   all_nn_distance_median=float(np.median(near)),
                   late_nn_label_conflict=float(conflict[late].mean()) if late.any() else float("nan"),
                   all_nn_label_conflict=float(conflict.mean()))
        rows.append(row)
        print(f"p={p}: fit at epoch {fit}; {row['late_examples']} examples still wrong at epoch {epoch}: "
              f"nearest-neighbour distance median {row['late_nn_distance_median']:.2f} (all {row['all_nn_distance_median']:.2f}), "
              f"neighbour label conflicts {row['late_nn_label_conflict']:.2f} (all {row['all_nn_label_conflict']:.2f})")
    out = Path(__file__).parent / "results" / "randomization_last_examples.json"
    atomic_write_json(out, dict(benchmark="randomization_last_examples", rows=rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
