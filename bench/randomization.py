"""Wall time of the full default randomization study on digits.

Baseline measured in the same run: the study's largest unit (every noise
level x seed as one batched ensemble) trained again one model at a time with
the same engine (K = 1 per call), so the ratio shows what batching buys on a
real study rather than on a synthetic loop.

Usage: python bench/randomization.py [--quick]
Writes bench/results/randomization.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from fitscope.data import load
from fitscope.experiments.randomization import (
    RandomizationConfig, findings, make_config, model_seeds, plan_units, randomization_study,
)
from fitscope.train import train_ensemble

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo setting instead of the full default")
    args = parser.parse_args()
    bench_run = start_run(__file__)
    cfg = RandomizationConfig.quick() if args.quick else make_config()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run, outcome = randomization_study(cfg, Path(tmp) / "rand")
        study_seconds = time.perf_counter() - t0
        timings = dict(run.timings)
        noise_arrays = run.load_unit("noise")  # the stored EnsembleResult of the noise ensemble

    data = load(cfg.data, seed=cfg.data_seed)
    noise_unit = next(u for u in plan_units(cfg, data) if u.key == "noise")
    batched_seconds = round(float(noise_arrays["seconds"]), 2)
    # The batched unit stops once every model fits; give each single model the same epoch budget.
    epochs = int(noise_arrays["epochs_run"])
    single_cfg = noise_unit.train.model_copy(update=dict(epochs=epochs, early_stop="none"))
    t0 = time.perf_counter()
    for i, seed in enumerate(model_seeds(noise_unit)):
        train_ensemble(cfg.model, data.x_train, noise_unit.labels[i], config=single_cfg, seeds=[seed],
                       x_test=data.x_test, y_test=data.y_test)
    sequential_seconds = time.perf_counter() - t0

    checks = findings(outcome.results, data.n_classes, outcome.late_examples)
    record = dict(
        benchmark="randomization",
        setting="quick" if args.quick else "default",
        config=cfg.model_dump(),
        study_seconds=round(study_seconds, 2),
        part_seconds=timings,
        noise_unit=dict(models=len(noise_unit.rows), epochs=epochs, batched_seconds=batched_seconds,
                        one_at_a_time_seconds=round(sequential_seconds, 2),
                        speedup=round(sequential_seconds / batched_seconds, 2)),
        findings=checks,
        late_examples=outcome.late_examples.to_dict("records") if outcome.late_examples is not None else None,
        machine=dict(cpus=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version()),
        measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    print(f"full study ({record['setting']}): {study_seconds:.1f} s wall")
    for part, seconds in timings.items():
        print(f"  {part:<24} {seconds:8.1f} s")
    print(f"noise unit, {len(noise_unit.rows)} models x {epochs} epochs: batched {batched_seconds:.1f} s, "
          f"one at a time {sequential_seconds:.1f} s, ratio {sequential_seconds / batched_seconds:.2f}x")
    for c in checks:
        print(f"  {'ok  ' if c['holds'] else 'MISS'} {c['check']}: {c['value']:.3f} (target {c['target']})")
    out = Path(__file__).parent / "results" / ("randomization_quick.json" if args.quick else "randomization.json")
    bench_run.write(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
