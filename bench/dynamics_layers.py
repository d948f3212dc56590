"""The layers study's cost on 2 cores, what probing costs beside training, and the finding it shows.

Measures, in one run (``bench/results/dynamics_layers.json``):

1. **Training against probing, per network.** One network of each default
   spec (``mlp:256x3`` and ``resnet:16x3,blocks=2`` on digits), as one unit of
   ``--quick`` trains it (10 epochs, checkpoints at 0, 1, 2, 5, 10), in this
   process with one torch thread: the CPU and wall seconds of training
   (:func:`fitscope.train.plain_models.train_plain`, the baseline) and of
   probing every layer (:func:`fitscope.dynamics.layer_robustness`: every
   layer x every checkpoint, one re-randomisation each), and their ratio.
2. **The study.** ``fitscope dynamics layers --quick --threads 1`` and, unless
   ``--skip-default``, with its defaults (3 networks of each spec, 30 epochs,
   8 checkpoints), each in a fresh subprocess: wall seconds, CPU seconds of
   the child (user + system, ``resource.getrusage``), the load other processes
   put on the machine meanwhile (``CpuMonitor``), the headline numbers, and
   the finding per network from ``layers.parquet``: each layer's test error
   when reset to its initial weights, re-randomised, its rise over the trained
   error, and whether it is critical; the first layer's rise over the largest
   rise of a later layer.

Every figure is measured in this run.

Usage: python bench/dynamics_layers.py [--skip-default] [--root runs/bench-dynamics-layers]
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
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import CpuMonitor  # noqa: E402
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "dynamics_layers.json"


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def train_vs_probe() -> dict:
    """Per default spec: one quick unit's training (the baseline) and its probing, CPU and wall seconds."""
    from fitscope.dynamics import layer_robustness, snapshot
    from fitscope.experiments.dynamics_layers import STUDY, build_net, plan_tasks, prepare
    from fitscope.train.plain_models import eval_logits, train_plain

    cfg = STUDY.make_config({}, quick=True)
    prepared = prepare(cfg)
    s = prepared.shared
    data = prepared.state.data
    xt = torch.from_numpy(s["x_test"])
    out = {}
    for task in plan_tasks(cfg, data.input_shape, data.n_classes):
        model = build_net(task.spec, task.input_shape, task.n_classes, seed=task.model_seed)
        states = {0: snapshot(model)}

        def keep(info):
            if info["epoch"] in task.checkpoints:
                states[int(info["epoch"])] = snapshot(model)

        _, train_cpu, train_wall = _timed(lambda: train_plain(
            model, s["x_train"], s["y_train"], epochs=task.epochs, batch_size=task.batch_size, lr=task.lr,
            momentum=task.momentum, seed=task.order_seed, progress=keep))

        def error(net):
            return float((eval_logits(net, xt).argmax(1).numpy() != s["y_test"]).mean())

        result, probe_cpu, probe_wall = _timed(lambda: layer_robustness(
            model, states, error, seed=task.rerandom_seed,
            fresh=lambda seed: build_net(task.spec, task.input_shape, task.n_classes, seed=seed)))
        evaluations = 1 + len(result.layers) * (len(result.epochs) + 1)
        out[task.spec] = {"layers": len(result.layers), "checkpoints": len(result.epochs),
                          "evaluations": evaluations, "epochs": task.epochs,
                          "train_cpu_s": train_cpu, "train_wall_s": train_wall,
                          "probe_cpu_s": probe_cpu, "probe_wall_s": probe_wall,
                          "probe_over_train_cpu": probe_cpu / train_cpu}
        print(f"{task.spec}: training {task.epochs} epochs {train_cpu:.2f} s CPU ({train_wall:.1f} s wall); probing "
              f"{len(result.layers)} layers x {len(result.epochs)} checkpoints + 1 draw ({evaluations} test "
              f"evaluations) {probe_cpu:.2f} s CPU: {100 * probe_cpu / train_cpu:.0f}% of training")
    return out


def finding(out: Path) -> dict:
    """Per spec, from ``layers.parquet``: each layer's reset / re-randomised error, rise, criticality."""
    layers = pd.read_parquet(out / "layers.parquet")
    result = {}
    for net, part in layers.groupby("net", sort=False):
        part = part.sort_values("index")
        later = part.rise.iloc[1:]
        result[net] = {
            "trained_error": float(part.trained.iloc[0]),
            "layers": part.layer.tolist(),
            "reset_error": part.reinit_first.tolist(),
            "rise": part.rise.tolist(),
            "rerandom_error": part.rerandom.tolist(),
            "distance": part.distance.tolist(),
            "critical": part.layer[part.critical].tolist(),
            "robust": part.layer[~part.critical].tolist(),
            "first_rise": float(part.rise.iloc[0]),
            "largest_later_rise": float(later.max()) if len(later) else None,
            "first_over_largest_later_rise": (float(part.rise.iloc[0] / later.max())
                                              if len(later) and later.max() > 0 else None),
        }
        r = result[net]
        print(f"  {net}: trained {100 * r['trained_error']:.1f}%; reset to init: "
              + ", ".join(f"{n} {100 * e:.1f}%" for n, e in zip(r["layers"], r["reset_error"]))
              + f"; critical: {', '.join(r['critical']) or 'none'}")
    return result


def study(argv: list[str], out: Path) -> dict:
    """Run ``fitscope dynamics layers ARGV --out OUT`` in a fresh subprocess: wall, child CPU, load, summary."""
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMonitor() as mon:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fitscope", "dynamics", "layers", *argv, "--out", str(out)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fitscope dynamics layers {' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    print(f"fitscope dynamics layers {' '.join(argv)}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(others kept {100 * (mon.other_load or 0):.0f}% of the CPUs busy)")
    return {"argv": argv, "wall_s": wall, "cpu_s": cpu, "other_load": mon.other_load,
            "timings": meta.get("timings"), "units": len(meta.get("units", {})), "summary": meta.get("summary"),
            "finding": finding(out)}


def main(argv: list[str] | None = None) -> None:
    """Measure and write ``bench/results/dynamics_layers.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-default", action="store_true", help="only the quick setting of the study")
    parser.add_argument("--root", default="runs/bench-dynamics-layers", help="where the study runs go")
    args = parser.parse_args(argv)
    run = start_run(__file__, argv)
    torch.set_num_threads(1)
    root = Path(args.root)
    record: dict = {"threads": 1}
    record["train_vs_probe"] = train_vs_probe()
    record["study_quick"] = study(["--quick", "--threads", "1"], root / "quick")
    if not args.skip_default:
        record["study_default"] = study(["--threads", "1"], root / "default")
        record["default_over_quick_wall"] = record["study_default"]["wall_s"] / record["study_quick"]["wall_s"]
        print(f"default / quick wall: {record['default_over_quick_wall']:.1f}x")
    run.write(RESULTS, json.loads(json.dumps(record, default=_plain)))
    print(f"wrote {RESULTS}")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


if __name__ == "__main__":
    main(sys.argv[1:])
