"""The kernel studies' headline figures (issue 5): NTK-SVM vs random forest on UCI, CNTK vs trained nets on few samples.

Runs ``fitscope kernels uci``, ``fitscope kernels small-data --data digits`` and
``fitscope kernels complexity --data digits`` with their defaults (or reuses
finished runs under ``--root`` with ``--resume``), then prints and records in
``bench/results/kernel_studies.json``:

- mean accuracy and mean rank per method over the UCI sets (target: NTK-SVM
  at least as accurate as random forest on average);
- test accuracy per method at each training-set size on digits, mean and std
  over seeds, and the best kernel's margin over the best trained network at
  the smallest sizes (target: > 0);
- the complexity measure and test error against label noise.

Each study runs on the study runner, so ``--executor ray`` (with ``--address``)
spreads its units (data sets, kernels, networks) over a Ray cluster, and
``--threads`` sets the torch threads per unit (results are bitwise identical
for the same value, whichever executor ran them).

A study resumed from a run made before this invocation is marked reused in
the result file's provenance (its finished units were not measured again);
delete ``--root`` to measure everything in one run.

Usage: python bench/kernel_studies.py [--root runs/bench-kernels] [--quick] [--executor ray] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from fitscope.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "kernel_studies.json"


def _run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    try:
        main(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise RuntimeError(f"fitscope {' '.join(argv)} exited {exit_.code}") from None
    return time.perf_counter() - t0


def main_bench() -> None:
    """Run (or resume) the three studies, print their headline numbers and record them in :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-kernels", help="where the study runs go (reused with --resume)")
    parser.add_argument("--quick", action="store_true", help="the studies' --quick settings")
    parser.add_argument("--executor", default="local", choices=["local", "ray"], help="where the units run")
    parser.add_argument("--address", default=None, help="HOST:PORT of a Ray cluster (with --executor ray)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per unit")
    args = parser.parse_args()
    run = start_run(__file__)
    root = Path(args.root)
    quick = ["--quick"] if args.quick else []
    placement = ["--executor", args.executor]
    placement += ["--address", args.address] if args.address else []
    placement += ["--threads", str(args.threads)] if args.threads else []
    seconds, resumed = {}, {}
    for name, argv in (("uci", ["kernels", "uci", *quick]),
                       ("small_data", ["kernels", "small-data", "--data", "digits", *quick]),
                       ("complexity", ["kernels", "complexity", "--data", "digits"])):  # complexity has no --quick
        out = root / name
        if (out / "run.json").exists():  # an earlier run: its finished units are reused, not measured again
            earlier = json.loads((out / "run.json").read_text())
            resumed[name] = (out / "run.json", f"study resumed from run {earlier.get('id')} created "
                             f"{earlier.get('created')} (status then: {earlier.get('status')}); units finished "
                             "before this invocation were not measured again")
        seconds[name] = _run([*argv, *placement, "--out", str(out), *(["--resume"] if name in resumed else [])])

    uci = pd.read_parquet(root / "uci" / "results.parquet")
    uci["rank"] = uci.groupby("dataset").accuracy.rank(ascending=False, method="average")
    uci_summary = uci.groupby("method").agg(mean_accuracy=("accuracy", "mean"), mean_rank=("rank", "mean"))
    per_set = uci.pivot(index="dataset", columns="method", values="accuracy")

    small = pd.read_parquet(root / "small_data" / "results.parquet")
    by_size = small.groupby(["method", "kind", "size"]).test_acc.agg(["mean", "std"]).reset_index()
    smallest = sorted(small["size"].unique())[:2]
    margins = {}
    for size in smallest:
        at = by_size[by_size["size"] == size]
        margins[int(size)] = float(at[at.kind == "kernel"]["mean"].max() - at[at.kind != "kernel"]["mean"].max())

    cx = pd.read_parquet(root / "complexity" / "results.parquet")
    cx_summary = cx.groupby("noise")[["measure", "test_error", "epochs_to_fit"]].mean()

    print("UCI (mean over data sets):\n" + uci_summary.round(4).to_string())
    print("\nper data set:\n" + per_set.round(4).to_string())
    print("\nsmall data, digits test accuracy (mean over seeds):")
    print(by_size.pivot(index="method", columns="size", values="mean").round(3).to_string())
    print(f"\nbest kernel minus best trained network at sizes {smallest}: {margins}")
    print("\ncomplexity vs noise:\n" + cx_summary.round(3).to_string())
    print(f"\nwall seconds: {({k: round(v, 1) for k, v in seconds.items()})}")

    record = {
        "benchmark": "kernel_studies",
        "executor": args.executor,
        "threads_per_unit": args.threads,
        "uci": {"summary": uci_summary.round(4).reset_index().to_dict("records"),
                "per_dataset": per_set.round(4).reset_index().to_dict("records"),
                "ntk_svm_at_least_random_forest": bool(uci_summary.loc["NTK-SVM", "mean_accuracy"]
                                                       >= uci_summary.loc["random forest", "mean_accuracy"])},
        "small_data": {"by_size": by_size.round(4).to_dict("records"),
                       "kernel_minus_network_at_smallest_sizes": margins,
                       "kernel_beats_networks_at_smallest_sizes": all(m > 0 for m in margins.values())},
        "complexity": cx_summary.round(4).reset_index().to_dict("records"),
        "wall_seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    for name, (source, note) in resumed.items():
        run.reuse(name, record[name], source=source, note=note)
        print(f"{name}: resumed an earlier run ({source}); marked reused in {RESULTS.name}")
    run.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_bench()
