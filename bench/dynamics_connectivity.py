"""The connectivity study's cost on this machine, and its finding (the curve's barrier against the line's) per seed.

Measures, in one run (``bench/results/dynamics_connectivity.json``):

1. **The study.** ``fitscope dynamics connectivity --quick`` and, unless
   ``--skip-default``, with its defaults (mlp:1024x2) at each seed of
   ``--seeds`` (default 0, 1, 2), and at seed 0 with the narrower
   ``--model`` of each width of ``--widths`` (default 256, 512: dropout
   stability and the dropout path's barrier against the width), each in a
   fresh subprocess with ``FITSCOPE_NUM_THREADS=1`` and ``--threads 1``: wall
   seconds, CPU seconds of the child (user + system, ``resource.getrusage``),
   the load other processes put on the machine meanwhile (``CpuMonitor``),
   the units' own timings from ``run.json``, and the study's headline
   numbers: the barriers of the line, the trained Bezier curve and the
   dropout path, the curve's barrier as a share of the line's (the finding:
   at most a tenth), and the test errors after dropping half of a layer.
2. **The curve's training cost against plain training (baseline, same
   run).** One epoch of :func:`fitscope.dynamics.train_bezier` (the default
   mlp:1024x2 on digits, batch 64) against one epoch of
   :func:`fitscope.train.plain_models.train_plain` of one network of the
   same spec on the same rows, one torch thread, best of 3: the ratio says
   what a point of the curve costs over training a network (Garipov et al.
   train the curve for about as many epochs as a network).
3. **The end points trained twice.** The study's units are independent, so
   the ``paths`` unit trains both networks again. Its cost is estimated as
   2 x epochs x the plain epoch CPU time of item 2 (scaled from the 2-epoch
   timing, not timed inside the study), as a share of the default runs'
   mean child CPU time.

No FLOPs are counted: the figures are times, losses and errors. Every figure
is measured in this run.

Usage: python bench/dynamics_connectivity.py [--skip-default] [--seeds 0,1,2] [--widths 256,512]
       [--root runs/bench-connectivity]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import CpuMonitor  # noqa: E402
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "dynamics_connectivity.json"
#: the headline numbers kept from each run's summary
KEYS = ("line barrier (train loss)", "curve barrier (train loss)", "dropout-path barrier (train loss)",
        "curve barrier / line barrier", "curve barrier at most a tenth of the line's", "line barrier (test loss)",
        "curve barrier (test loss)", "test error of A", "test error of B",
        "test error, half of one layer dropped: lowest mean", "test error, half of one layer dropped: highest mean",
        "test error, half of every layer dropped: mean", "largest test error on the line",
        "largest test error on the curve", "largest test error on the dropout path")


def study(argv: list[str], out: Path) -> dict:
    """Run ``fitscope dynamics connectivity ARGV --out OUT`` in a fresh subprocess: wall, child CPU, load, summary."""
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "FITSCOPE_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMonitor() as mon:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fitscope", "dynamics", "connectivity", *argv, "--threads", "1",
                               "--out", str(out)],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fitscope dynamics connectivity {' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    summary = meta.get("summary", {})
    print(f"fitscope dynamics connectivity {' '.join(argv)}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(others kept {100 * (mon.other_load or 0):.0f}% of the CPUs busy); line barrier "
          f"{summary['line barrier (train loss)']:.4g}, curve {summary['curve barrier (train loss)']:.4g} "
          f"({100 * summary['curve barrier / line barrier']:.1f}% of the line's), dropout path "
          f"{summary['dropout-path barrier (train loss)']:.4g}")
    return {"argv": argv, "wall_s": wall, "cpu_s": cpu, "other_load": mon.other_load, "timings": meta.get("timings"),
            "summary": {k: summary.get(k) for k in KEYS}}


def curve_epoch_cost() -> dict:
    """Seconds per epoch of the Bezier curve's training against plain training of one network (best of 3)."""
    from fitscope.dynamics import train_bezier
    from fitscope.experiments.dynamics_connectivity import STUDY, prepare
    from fitscope.models import build_plain
    from fitscope.train.plain_models import train_plain

    cfg = STUDY.make_config({})
    prepared = prepare(cfg)
    x, y = prepared.shared["x_train"], prepared.shared["y_train"]
    shape, classes = prepared.state.data.input_shape, prepared.state.data.n_classes
    a, b = build_plain(cfg.model, shape, classes, seed=1), build_plain(cfg.model, shape, classes, seed=2)
    out: dict = {"model": cfg.model, "rows": int(len(y)), "batch_size": cfg.batch_size}
    best = {"plain": [np.inf, np.inf], "curve": [np.inf, np.inf]}
    for _ in range(3):
        net = build_plain(cfg.model, shape, classes, seed=3)
        c0, w0 = time.process_time(), time.perf_counter()
        train_plain(net, x, y, epochs=2, batch_size=cfg.batch_size, lr=cfg.lr, seed=0)
        best["plain"] = [min(best["plain"][0], (time.process_time() - c0) / 2),
                         min(best["plain"][1], (time.perf_counter() - w0) / 2)]
        c0, w0 = time.process_time(), time.perf_counter()
        train_bezier(a, b, x, y, epochs=2, seed=0, batch_size=cfg.batch_size, lr=cfg.curve_lr)
        best["curve"] = [min(best["curve"][0], (time.process_time() - c0) / 2),
                         min(best["curve"][1], (time.perf_counter() - w0) / 2)]
    for name, (cpu, wall) in best.items():
        out[name] = {"cpu_s_per_epoch": cpu, "wall_s_per_epoch": wall}
    out["curve_over_plain_cpu"] = best["curve"][0] / best["plain"][0]
    print(f"one epoch on {len(y)} rows of digits, {cfg.model}: plain training {best['plain'][0]:.3f} s CPU, "
          f"Bezier curve {best['curve'][0]:.3f} s CPU ({out['curve_over_plain_cpu']:.2f}x)")
    return out


def main_bench() -> None:
    """Measure everything of the module docstring and write :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-connectivity", help="where the study runs go (replaced)")
    parser.add_argument("--skip-default", action="store_true", help="time --quick only, not the defaults")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the default runs (comma-separated)")
    parser.add_argument("--widths", default="256,512", help="narrower widths run at seed 0 (comma-separated)")
    args = parser.parse_args()
    run = start_run(__file__)
    torch.set_num_threads(1)
    root = Path(args.root)
    record: dict = {"benchmark": "dynamics_connectivity", "curve_epoch_cost": curve_epoch_cost()}
    record["study"] = {"quick": study(["--quick"], root / "quick")}
    if not args.skip_default:
        seeds = [int(s) for s in args.seeds.split(",")]
        runs = {str(s): study(["--seed", str(s)], root / f"default-seed{s}") for s in seeds}
        record["study"]["default"] = runs
        ratios = [r["summary"]["curve barrier / line barrier"] for r in runs.values()]
        record["finding"] = {
            "seeds": seeds,
            "curve_over_line_max": float(max(ratios)),
            "curve_over_line_mean": float(np.mean(ratios)),
            "held_in_runs": int(sum(bool(r["summary"]["curve barrier at most a tenth of the line's"])
                                    for r in runs.values())),
            "default_wall_s_mean": float(np.mean([r["wall_s"] for r in runs.values()])),
        }
        from fitscope.experiments.dynamics_connectivity import STUDY

        default_model = STUDY.make_config({}).model
        widths = {}
        for width in [int(w) for w in args.widths.split(",") if w.strip()]:
            spec = f"mlp:{width}x2"
            widths[spec] = study(["--model", spec], root / f"width{width}")
        widths[default_model] = runs[str(seeds[0])] if seeds[0] == 0 else study([], root / "default-seed0")
        record["widths"] = {spec: {"wall_s": r["wall_s"], **{k: r["summary"][k] for k in (
            "line barrier (train loss)", "curve barrier (train loss)", "dropout-path barrier (train loss)",
            "test error of A", "test error, half of one layer dropped: highest mean",
            "test error, half of every layer dropped: mean")}} for spec, r in widths.items()}
        for spec, row in record["widths"].items():
            print(f"  {spec}: half of one layer dropped -> test error up to "
                  f"{100 * row['test error, half of one layer dropped: highest mean']:.1f}% (undropped "
                  f"{100 * row['test error of A']:.1f}%); dropout-path barrier "
                  f"{row['dropout-path barrier (train loss)']:.3g} against the line's "
                  f"{row['line barrier (train loss)']:.3g}")

        retrain = 2 * STUDY.make_config({}).epochs * record["curve_epoch_cost"]["plain"]["cpu_s_per_epoch"]
        record["retraining"] = {"estimated_cpu_s": retrain,
                                "share_of_default_cpu": retrain / float(np.mean([r["cpu_s"] for r in runs.values()])),
                                "note": "2 x epochs x the plain epoch CPU time (scaled, not timed in the study)"}
        print(f"the paths unit's second training of the end points: about {retrain:.1f} s CPU, "
              f"{100 * record['retraining']['share_of_default_cpu']:.0f}% of a default run's CPU time")
        print(f"finding: the curve's barrier was at most {100 * max(ratios):.1f}% of the line's over seeds {seeds} "
              f"(mean {100 * np.mean(ratios):.1f}%); held in {record['finding']['held_in_runs']} of {len(seeds)} runs")
    run.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_bench()
