"""The saliency study's finding and cost: CGI against gradient x input under randomization, and the time per map.

Measures, in one run (``bench/results/saliency.json``):

1. **The study.** ``fitscope saliency --quick`` and, unless ``--skip-default``,
   with its defaults (digits with ``cnn:32-64`` and MNIST-1D with
   ``cnn1d:32x3``, 32 explained test rows, all five methods, cascading and
   random-label randomization), each in a fresh subprocess with one torch
   thread: wall seconds, CPU seconds of the child (user + system,
   ``resource.getrusage``), the load other processes put on the machine
   meanwhile (``CpuMonitor``), the study's timings and headline numbers.
2. **The finding.** From each run's ``similarity.parquet``: every method's
   mean (and standard deviation over rows) similarity to the trained model's
   maps once every layer is re-drawn, for the four metrics (Spearman of the
   absolute maps, the finding's metric, fixed before the study ran; signed
   Spearman; SSIM; top-k overlap), and after retraining on random labels; and
   whether CGI's mean Spearman (absolute) is at most 0.2 and below gradient x
   input's, on both data sets.
3. **Cost per map.** Each method on 32 rows of each data set with the study's
   model (untrained: the cost does not depend on the weights), one torch
   thread, best of 3: milliseconds of CPU and wall per map (per row). The
   baseline for CGI, measured in the same run: the same C-class gradient x
   input computed as C calls of Captum's ``InputXGradient`` (one per class,
   the brute-force loop), and Captum's single-class ``InputXGradient``;
   ratios CGI / Captum loop and CGI / single-class gradient x input.

No FLOPs are counted: the figures are times and similarities. Every figure is
measured in this run.

Usage: python bench/saliency.py [--skip-default] [--root runs/bench-saliency]
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
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import CpuMonitor  # noqa: E402
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "saliency.json"
METRICS = ("spearman_abs", "spearman", "ssim", "top_k")


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def finding(run_dir: Path) -> dict:
    """Every method's similarity after full randomization and after random labels, per data set and metric."""
    table = pd.read_parquet(run_dir / "similarity.parquet")
    out: dict = {}
    for data, part in table.groupby("data", sort=False):
        cascade = part[part.test == "cascade"]
        last = cascade[cascade.depth == cascade.depth.max()]
        entry: dict = {"depths": int(cascade.depth.max()), "full_randomization": {}, "random_labels": {}}
        for (method, metric), row in last.set_index(["method", "metric"]).iterrows():
            entry["full_randomization"].setdefault(method, {})[metric] = {"mean": row["mean"], "std": row["std"]}
        random = part[part.test == "random labels"]
        for (method, metric), row in random.set_index(["method", "metric"]).iterrows():
            entry["random_labels"].setdefault(method, {})[metric] = {"mean": row["mean"], "std": row["std"]}
        full = entry["full_randomization"]
        if "cgi" in full and "gradient_x_input" in full:
            cgi, gxi = full["cgi"]["spearman_abs"]["mean"], full["gradient_x_input"]["spearman_abs"]["mean"]
            entry["cgi_spearman_abs"] = cgi
            entry["gradient_x_input_spearman_abs"] = gxi
            entry["finding_holds"] = bool(cgi <= 0.2 and cgi < gxi)
        out[str(data)] = entry
        print(f"  {data}: mean Spearman (|map|) after all {entry['depths']} layers re-drawn: "
              + ", ".join(f"{m} {v['spearman_abs']['mean']:.3f}" for m, v in full.items())
              + (f"; finding holds: {entry.get('finding_holds')}" if "finding_holds" in entry else ""))
    return out


def study(argv: list[str], out: Path) -> dict:
    """Run ``fitscope saliency ARGV --out OUT`` in a fresh subprocess: wall, child CPU, load, summary, finding."""
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "FITSCOPE_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMonitor() as mon:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fitscope", "saliency", *argv, "--threads", "1",
                               "--out", str(out)], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fitscope saliency {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    print(f"fitscope saliency {' '.join(argv)}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(others kept {100 * (mon.other_load or 0):.0f}% of the CPUs busy)")
    return {"argv": argv, "wall_s": wall, "cpu_s": cpu, "other_load": mon.other_load,
            "timings": meta.get("timings"), "units": len(meta.get("units", {})), "summary": meta.get("summary"),
            "finding": finding(out)}


def _best(fn, rounds: int = 3) -> tuple[float, float]:
    """Best CPU and wall seconds of ``fn()`` over ``rounds`` (after one warm-up call)."""
    fn()
    cpu = wall = float("inf")
    for _ in range(rounds):
        _, c, w = _timed(fn)
        cpu, wall = min(cpu, c), min(wall, w)
    return cpu, wall


def method_costs(rows: int = 32) -> dict:
    """Milliseconds per map of each method, and CGI against Captum's per-class loop, on both data sets."""
    from captum.attr import InputXGradient

    from fitscope.data import load
    from fitscope.explain import METHODS, saliency_maps
    from fitscope.explain.saliency import competition
    from fitscope.models import build_plain

    out = {}
    for name, spec in (("digits", "cnn:32-64"), ("mnist1d", "cnn1d:32x3")):
        data = load(name, seed=0)
        model = build_plain(spec, data.input_shape, data.n_classes, seed=0).eval()
        x, y = data.x_test[:rows], data.y_test[:rows]
        span = float(data.x_train.max() - data.x_train.min())
        entry: dict = {"model": spec, "rows": rows, "classes": int(data.n_classes), "methods": {}}
        for method in METHODS:
            cpu, wall = _best(lambda: saliency_maps(model, x, y, method=method, steps=32, samples=16,
                                                    sigma=0.15 * span, seed=0))
            entry["methods"][method] = {"cpu_ms_per_map": 1e3 * cpu / rows, "wall_ms_per_map": 1e3 * wall / rows}
        xt = torch.from_numpy(x)

        def captum_loop():
            scores = np.stack([InputXGradient(model).attribute(xt.clone().requires_grad_(True), target=c)
                               .detach().numpy() for c in range(data.n_classes)])
            return competition(scores, y)

        cpu, wall = _best(captum_loop)
        entry["cgi_by_captum_loop"] = {"cpu_ms_per_map": 1e3 * cpu / rows, "wall_ms_per_map": 1e3 * wall / rows}
        np.testing.assert_allclose(captum_loop(), saliency_maps(model, x, y, method="cgi"), rtol=1e-4, atol=1e-6)
        cgi = entry["methods"]["cgi"]["cpu_ms_per_map"]
        entry["cgi_over_captum_loop_cpu"] = cgi / entry["cgi_by_captum_loop"]["cpu_ms_per_map"]
        entry["cgi_over_gradient_x_input_cpu"] = cgi / entry["methods"]["gradient_x_input"]["cpu_ms_per_map"]
        print(f"{name} ({spec}, {rows} rows): CPU ms per map "
              + ", ".join(f"{m} {v['cpu_ms_per_map']:.2f}" for m, v in entry["methods"].items())
              + f"; CGI by Captum's per-class loop {entry['cgi_by_captum_loop']['cpu_ms_per_map']:.2f} "
              f"(ours {entry['cgi_over_captum_loop_cpu']:.2f}x its CPU; "
              f"{entry['cgi_over_gradient_x_input_cpu']:.1f}x single-class gradient x input)")
        out[name] = entry
    return out


def main_bench() -> None:
    """Measure everything of the module docstring and write :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-saliency", help="where the study runs go (replaced)")
    parser.add_argument("--skip-default", action="store_true", help="time --quick only, not the defaults")
    args = parser.parse_args()
    run = start_run(__file__)
    torch.set_num_threads(1)
    record: dict = {"benchmark": "saliency", "costs": method_costs()}
    root = Path(args.root)
    record["study"] = {"quick": study(["--quick"], root / "quick")}
    if not args.skip_default:
        record["study"]["default"] = study([], root / "default")
    run.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_bench()
