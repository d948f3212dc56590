"""Audit throughput: many subset models (mlp:512x2, digits, ratio 0.7) through the whole audit job.

    python bench/audit_throughput.py [--models 1000] [--epochs 20] [--baseline-models 4]

Target (issue 4): 1000 subset models, 20 epochs, in at most 10 minutes on 2
cores, evaluation and estimators included. Measured in the same run:

- the audit job end to end (``fitscope.experiments.audit.audit``, local
  executor, threads = the machine's CPUs, only the 0.7 ratio so every model is
  a memorization model), and its training part alone;
- baseline: a plain PyTorch DataLoader loop training models one at a time on
  a 70% subset (``bench/train_throughput.run_baseline``, SGD, no eval pass),
  timed on ``--baseline-models`` models and scaled to the same model count
  (the scaling is stated in the output);
- the machine's fp32 matmul peak (best of 5), for the fraction achieved.

FLOPs counted: training steps, 6 x multiply-adds per model-example
(``fitscope.models.flops_per_example`` x 3), over the audit's training wall
time; the per-epoch evaluation pass is not counted.

Writes ``bench/results/audit_throughput.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import matmul_peak  # noqa: E402
from _results import start_run  # noqa: E402
from train_throughput import load_digits_split, run_baseline  # noqa: E402

from fitscope.experiments.audit import audit, make_config  # noqa: E402
from fitscope.models import flops_per_example  # noqa: E402
from fitscope.runs.executors import machine_cpus  # noqa: E402
from fitscope.train import configure_threads  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "audit_throughput.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--baseline-models", type=int, default=4)
    args = parser.parse_args()
    run_record = start_run(__file__)
    threads = configure_threads(machine_cpus())

    peak = matmul_peak()
    cfg = make_config(data="digits", model="mlp:512x2", ratio=0.7, cscore_ratios=[0.7], models=args.models,
                      epochs=args.epochs, chunk=args.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run, _ = audit(cfg, Path(tmp) / "audit", threads=threads)
        audit_seconds = time.perf_counter() - t0
        timings = dict(run.timings)
    train_seconds = sum(v for k, v in timings.items() if k.startswith("train"))

    x, y, x_te, y_te = load_digits_split()
    rng = np.random.default_rng(0)
    subset = rng.choice(len(y), size=round(0.7 * len(y)), replace=False)
    base = run_baseline(x[subset], y[subset], x_te, y_te, models=args.baseline_models, epochs=args.epochs, batch=128)
    baseline_seconds = base["wall"] / args.baseline_models * args.models

    n_sub = round(0.7 * len(y))
    train_flops = 3 * flops_per_example("mlp:512x2", (1, 8, 8), 10) * n_sub * args.epochs * args.models
    gflops = train_flops / train_seconds / 1e9
    record = dict(
        benchmark="audit_throughput",
        models=args.models, epochs=args.epochs, chunk=args.chunk, threads=threads,
        audit_seconds=round(audit_seconds, 1), train_seconds=round(train_seconds, 1), timings=timings,
        target_seconds=600, within_target=audit_seconds <= 600,
        baseline=dict(method="plain DataLoader loop, one model at a time, 70% subset, SGD, no eval pass",
                      models_timed=args.baseline_models, seconds_timed=round(base["wall"], 2),
                      seconds_scaled_to_models=round(baseline_seconds, 1)),
        speedup_vs_baseline_train=round(baseline_seconds / train_seconds, 2),
        train_gflops=round(gflops, 1), peak_gflops=round(peak["gflops"], 1),
        fraction_of_peak=round(gflops / peak["gflops"], 3),
    )
    print(f"{args.models} subset models x {args.epochs} epochs (mlp:512x2, digits, ratio 0.7), {threads} threads")
    print(f"  audit end to end      {audit_seconds:8.1f} s   (target <= 600 s: {'met' if audit_seconds <= 600 else 'MISSED'})")
    print(f"  training part         {train_seconds:8.1f} s   {gflops:.1f} GFLOP/s = {gflops / peak['gflops']:.0%} "
          f"of the fp32 peak {peak['gflops']:.1f} GFLOP/s")
    print(f"  plain loop, scaled    {baseline_seconds:8.1f} s   ({args.baseline_models} models timed: "
          f"{base['wall']:.1f} s) -> training part is {baseline_seconds / train_seconds:.2f}x faster")
    run_record.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
