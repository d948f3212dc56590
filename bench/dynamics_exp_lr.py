"""The exp-lr study's cost on 2 cores and its finding: weight decay and the exponential learning rate agree.

Measures, in one run (``bench/results/dynamics_exp_lr.json``):

1. **The study.** ``fitscope dynamics exp-lr --quick`` and, unless
   ``--skip-default``, with its defaults (mlp:64x2 and cnn:16-32 on digits,
   float64 and float32, 2000 steps), each in a fresh subprocess: wall seconds,
   CPU seconds of the child (user + system), the load other processes put on
   the machine meanwhile (``CpuMonitor``), and the study's headline numbers
   (the largest difference of predictions per precision against the
   control's, the weight-decay run against its copy rescaled by 3, which
   computes the same function in exact arithmetic; the weight growth; the
   difference with running-average statistics) and per-unit rows.
2. **The baseline.** One plain weight-decay run of the quick setting (the
   same network, 600 steps, the same minibatches, no twin and no
   measurements) against one unit of the study (both runs, the control and a
   measurement every 5 steps), one torch thread: CPU seconds of each and their ratio,
   i.e. what the equivalence check costs over training alone.
3. **Why batch norm's eps is 1e-12.** The float64 unit of the quick setting
   with torch's default eps (1e-5) instead of the study's: the largest
   difference of predictions, against the study's value.

Every figure is measured in this run.

Usage: python bench/dynamics_exp_lr.py [--skip-default] [--root runs/bench-dynamics-exp-lr]
"""

from __future__ import annotations

import argparse
import json
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

RESULTS = Path(__file__).parent / "results" / "dynamics_exp_lr.json"


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def study(argv: list[str], out: Path) -> dict:
    """Run ``fitscope dynamics exp-lr ARGV --out OUT`` in a fresh subprocess: wall, child CPU, load, summary."""
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMonitor() as mon:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fitscope", "dynamics", "exp-lr", *argv, "--out", str(out)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fitscope dynamics exp-lr {' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    import pandas as pd

    runs = pd.read_parquet(out / "runs.parquet")
    runs["max_diff"] = np.maximum(runs.max_diff_train, runs.max_diff_test)
    runs["diff_over_control"] = runs.max_diff / runs.max_diff_control
    keep = ["unit", "max_diff", "max_diff_train", "max_diff_test", "max_diff_control", "diff_over_control",
            "within_float_error", "max_disagree_test",
            "max_diff_running", "final_scale",
            "max_scale_error", "final_lr_exp", "final_loss_wd", "test_acc_wd", "test_acc_exp"]
    print(f"fitscope dynamics exp-lr {' '.join(argv)}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(others kept {100 * (mon.other_load or 0):.0f}% of the CPUs busy)")
    for row in runs[keep].to_dict("records"):
        print(f"  {row['unit']}: largest |p_wd - p_exp| {row['max_diff']:.2g} "
              f"(control {row['max_diff_control']:.2g}, ratio {row['diff_over_control']:.2g}), test rows classified differently {100 * row['max_disagree_test']:.1f}%, running-average BN "
              f"{row['max_diff_running']:.2g}, weights grew {row['final_scale']:.4g}-fold, test acc "
              f"{100 * row['test_acc_wd']:.1f}% / {100 * row['test_acc_exp']:.1f}%")
    return {"argv": argv, "wall_s": wall, "cpu_s": cpu, "other_load": mon.other_load,
            "timings": meta.get("timings"), "units": len(meta.get("units", {})), "summary": meta.get("summary"),
            "runs": runs[keep].to_dict("records")}


def baseline() -> dict:
    """One plain weight-decay run of the quick setting against one unit of the study (CPU seconds, one thread)."""
    import fitscope.experiments.dynamics_exp_lr as m

    cfg = m.STUDY.make_config({}, quick=True)
    prepared = m.prepare(cfg)
    task = m.plan_pairs(cfg, prepared.state.data.input_shape, prepared.state.data.n_classes)[0]  # float64
    shared = prepared.shared

    def plain():
        net = m.scale_invariant_net(task.model, task.input_shape, task.n_classes, seed=task.model_seed).double()
        opt = torch.optim.SGD(m.trained_parameters(net), lr=task.lrs[0], momentum=task.momentum,
                              weight_decay=task.weight_decay)
        x, y = torch.from_numpy(shared["x_train"]).double(), torch.from_numpy(shared["y_train"])
        gen, order = torch.Generator().manual_seed(task.batch_seed), torch.empty(0, dtype=torch.long)
        for lr in task.lrs:
            if len(order) < task.batch_size:
                order = torch.randperm(len(x), generator=gen)
            rows, order = order[:task.batch_size], order[task.batch_size:]
            opt.param_groups[0]["lr"] = lr
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[rows]), y[rows]).backward()
            opt.step()

    plain()  # warm up
    _, plain_cpu, plain_wall = _timed(plain)
    out, unit_cpu, unit_wall = _timed(lambda: m.train_pair(task, **shared))
    record = {"unit": task.key, "steps": len(task.lrs), "every": task.every, "plain_cpu_s": plain_cpu,
              "plain_wall_s": plain_wall, "unit_cpu_s": unit_cpu, "unit_wall_s": unit_wall,
              "unit_over_plain_cpu": unit_cpu / plain_cpu,
              "max_diff": float(max(out["diff_train"].max(), out["diff_test"].max()))}
    print(f"baseline: one weight-decay run of {task.model}, {len(task.lrs)} steps: {plain_cpu:.2f} s CPU; the study's "
          f"unit (both runs and the control, measured every {task.every} steps): {unit_cpu:.2f} s CPU "
          f"({record['unit_over_plain_cpu']:.1f}x)")
    return record


def default_eps() -> dict:
    """The quick float64 unit with torch's batch-norm eps 1e-5 against the study's 1e-12."""
    import fitscope.experiments.dynamics_exp_lr as m

    cfg = m.STUDY.make_config({"precisions": ["float64"]}, quick=True)
    prepared = m.prepare(cfg)
    task = m.plan_pairs(cfg, prepared.state.data.input_shape, prepared.state.data.n_classes)[0]
    study_eps = m.BN_EPS
    out = {}
    try:
        for name, eps in (("study_eps", study_eps), ("torch_default_eps", 1e-5)):
            m.BN_EPS = eps
            pair = m.train_pair(task, **prepared.shared)
            out[name] = {"eps": eps, "max_diff": float(max(pair["diff_train"].max(), pair["diff_test"].max())),
                         "max_disagree_test": float(pair["disagree_test"].max())}
    finally:
        m.BN_EPS = study_eps
    out["ratio"] = out["torch_default_eps"]["max_diff"] / out["study_eps"]["max_diff"]
    print(f"batch-norm eps: largest |p_wd - p_exp| {out['study_eps']['max_diff']:.2g} with eps 1e-12, "
          f"{out['torch_default_eps']['max_diff']:.2g} with torch's 1e-5 ({out['ratio']:.2g}x)")
    return out


def main_bench() -> None:
    """Measure everything of the module docstring and write :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-dynamics-exp-lr", help="where the study runs go (replaced)")
    parser.add_argument("--skip-default", action="store_true", help="time --quick only, not the defaults")
    args = parser.parse_args()
    run = start_run(__file__)
    torch.set_num_threads(1)
    record: dict = {"benchmark": "dynamics_exp_lr", "baseline": baseline(), "eps": default_eps()}
    root = Path(args.root)
    record["study"] = {"quick": study(["--quick", "--threads", "1"], root / "quick")}
    if not args.skip_default:
        record["study"]["default"] = study(["--threads", "1"], root / "default")
    float64 = [r for s in record["study"].values() for r in s["runs"] if r["unit"].endswith("float64")]
    record["float64_max_diff"] = float(max(r["max_diff"] for r in float64))
    record["float64_max_diff_over_control"] = float(max(r["diff_over_control"] for r in float64))
    run.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_bench()
