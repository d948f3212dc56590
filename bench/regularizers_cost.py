"""What each regularizer part costs: training throughput relative to plain cross-entropy, K models at once.

    python bench/regularizers_cost.py [--models 16] [--epochs 3] [--repeats 2] [--parts ls,mixup,...]

For every part of :data:`fitscope.train.regularizers.REGULARIZERS` (its default hyperparameters) and for
plain cross-entropy (``ce``), ``train_ensemble`` trains K = 16 models at once for E epochs, on two workloads:

- ``mlp``: ``mlp:256x2`` on scikit-learn's digits as 64-vectors (plain cross-entropy then uses the
  hand-written MLP step; most parts go through autograd, which is part of their cost);
- ``cnn``: ``cnn:16-32`` on digits as 1x8x8 images (everything through autograd; BatchNorm, so the
  parts that need it -- polarize, l1bn -- run here; on the mlp they are marked not applicable).

Measured in one process, methods interleaved (the order rotates from repeat to repeat), best of R
repeats: the engine's own training seconds (``result.train_seconds``: the steps, not the per-epoch
evaluation pass, which no part changes) and the process CPU seconds of the whole call. Reported per part:
model-examples per second and the ratio to ``ce`` on the same workload (a ratio of 0.5 means the part
halves the throughput; SAM's two gradient computations make it about 0.5 by construction).

Writes bench/results/regularizers_cost.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "regularizers_cost.json"
WORKLOADS = {"mlp": ("mlp:256x2", (64,)), "cnn": ("cnn:16-32", (1, 8, 8))}


def digits(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (x / 16, float32) in ``shape``; all 1,797 rows."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32).reshape(-1, *shape), d.target.astype(np.int64)


def measure(spec: str, x, y, parts: str, *, models: int, epochs: int) -> dict:
    """One training run: train seconds, CPU seconds, model-examples per second, final train accuracy."""
    from fitscope.train import TrainConfig, train_ensemble

    cfg = TrainConfig(epochs=epochs, batch_size=128, optimizer="sgd", lr=0.05, record="none", regularizers=parts)
    cpu0 = time.process_time()
    r = train_ensemble(spec, x, y, config=cfg, seeds=range(models))
    cpu = time.process_time() - cpu0
    return dict(train_seconds=r.train_seconds, cpu_seconds=cpu,
                examples_per_second=r.examples_seen / r.train_seconds,
                train_acc=float(r.train_acc[:, -1].mean()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--parts", default=None, help="comma list of parts (default: every registered part)")
    args = parser.parse_args(argv)
    from fitscope.errors import ConfigError
    from fitscope.train.objective import check_regularizers
    from fitscope.train.regularizers import REGULARIZERS

    run = start_run(__file__, argv)
    names = ["ce", *(args.parts.split(",") if args.parts else REGULARIZERS)]
    out: dict = dict(benchmark="regularizers_cost", models=args.models, epochs=args.epochs, repeats=args.repeats,
                     batch_size=128, workloads={})
    for workload, (spec, shape) in WORKLOADS.items():
        x, y = digits(shape)
        applicable, skipped = [], {}
        for name in names:
            try:
                check_regularizers(spec, shape, 10, name)
                applicable.append(name)
            except ConfigError as err:
                skipped[name] = str(err)
        runs: dict[str, list[dict]] = {name: [] for name in applicable}
        for rep in range(args.repeats):
            order = applicable[rep % len(applicable):] + applicable[:rep % len(applicable)]
            for name in order:
                runs[name].append(measure(spec, x, y, name, models=args.models, epochs=args.epochs))
        best = {name: min(rs, key=lambda r: r["train_seconds"]) for name, rs in runs.items()}
        base = best["ce"]
        rows = {}
        for name, r in best.items():
            rows[name] = dict(
                examples_per_second=round(r["examples_per_second"], 1),
                train_seconds=round(r["train_seconds"], 3),
                cpu_seconds=round(min(x["cpu_seconds"] for x in runs[name]), 3),
                throughput_vs_ce=round(r["examples_per_second"] / base["examples_per_second"], 3),
                cpu_vs_ce=round(base["cpu_seconds"] / min(x["cpu_seconds"] for x in runs[name]), 3),
                train_acc=round(r["train_acc"], 4),
            )
            print(f"{workload:4s} {name:10s} {rows[name]['examples_per_second']:>10.0f} ex/s  "
                  f"x{rows[name]['throughput_vs_ce']:.2f} of ce (CPU x{rows[name]['cpu_vs_ce']:.2f})  "
                  f"train acc {rows[name]['train_acc']:.3f}", flush=True)
        out["workloads"][workload] = dict(spec=spec, input_shape=list(shape), parts=rows, not_applicable=skipped)
    result = run.write(RESULTS, out)
    print(f"wrote {RESULTS}")
    return result


if __name__ == "__main__":
    main()
