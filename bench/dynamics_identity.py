"""The identity-or-constant study's cost on one core, and its finding, with exact identity and constant baselines.

Measures, in one run (``bench/results/dynamics_identity.json``):

1. **The study.** ``fitscope dynamics identity --quick`` and, unless
   ``--skip-default``, with its defaults (FC and CNN at depths 1, 2, 3, 5, 10,
   20 on one digit upsampled to 28x28, He initialisation), each in a fresh
   subprocess on one torch thread (``FITSCOPE_NUM_THREADS=1``, ``--threads 1``):
   wall seconds, CPU seconds of the child (user + system,
   ``resource.getrusage``), the load other processes put on the machine
   meanwhile (``CpuMonitor``), the runner's phase timings and the study's
   headline numbers; the default's wall and CPU times over the quick one's.
2. **The finding.** From each run's ``nets.parquet``: per architecture and
   depth, the mean correlation of the outputs with the new inputs and with
   the training example on test digits and on noise, and the form
   (identity, constant, neither); whether every CNN of depth <= 3 computes
   the identity, and the deepest CNN and the deepest FC net the constant.
3. **Baselines, in the same run.** The two exact solutions, evaluated on the
   default run's inputs by :func:`fitscope.dynamics.output_correlations`: the
   identity ``f(z) = z`` and the constant ``f(z) = x0``; a net at the identity
   scores (1, baseline), at the constant (baseline, 1).
4. **Initialisation** (unless ``--skip-init``): the default setting again with
   ``--init torch`` (PyTorch's default, a third of He's weight variance),
   its wall time and forms, to show how much the finding depends on it.
5. **A smaller resolution** (unless ``--skip-16``): the default setting with
   ``--size 16`` (the 8x8 digits upsampled twice, as ``--quick`` uses):
   whether the finding holds there too, and its cost against 28x28's.

Usage: python bench/dynamics_identity.py [--skip-default] [--skip-init] [--skip-16]
       [--root runs/bench-dynamics-identity]
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

RESULTS = Path(__file__).parent / "results" / "dynamics_identity.json"


def study(argv: list[str], out: Path) -> dict:
    """Run ``fitscope dynamics identity ARGV --out OUT`` in a fresh one-thread subprocess: wall, CPU, load, nets."""
    if out.exists():
        shutil.rmtree(out)
    env = dict(os.environ, FITSCOPE_NUM_THREADS="1", OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMonitor() as mon:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fitscope", "dynamics", "identity", *argv, "--threads", "1",
                               "--out", str(out)], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fitscope dynamics identity {' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    nets = pd.read_parquet(out / "nets.parquet")
    print(f"fitscope dynamics identity {' '.join(argv)}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(others kept {100 * (mon.other_load or 0):.0f}% of the CPUs busy)")
    return {"argv": argv, "wall_s": wall, "cpu_s": cpu, "other_load": mon.other_load,
            "timings": meta.get("timings"), "units": len(meta.get("units", {})), "summary": meta.get("summary"),
            "nets": finding_table(nets), "finding": finding(nets)}


def finding_table(nets: pd.DataFrame) -> dict:
    """``{arch: {depth: {inputs: {identity, constant, baseline, form}, steps, final_loss}}}`` from ``nets``."""
    out: dict = {}
    for row in nets.itertuples():
        cell = out.setdefault(row.arch, {}).setdefault(str(int(row.depth)), {
            "steps": int(row.steps), "final_loss": float(row.final_loss), "converged": bool(row.converged),
            "parameters": int(row.parameters)})
        cell[row.inputs] = {"identity": float(row.identity), "constant": float(row.constant),
                            "baseline": float(row.baseline), "form": row.form}
    return out


def finding(nets: pd.DataFrame) -> dict:
    """The finding on test digits: shallow CNNs at the identity, the deepest CNN and FC net at the constant."""
    test = nets[nets.inputs == "test"]
    cnn, fc = test[test.arch == "cnn"].sort_values("depth"), test[test.arch == "fc"].sort_values("depth")
    shallow = cnn[cnn.depth <= 3]
    out = {
        "cnn_identity_depths": [int(d) for d in cnn.depth[cnn.form == "identity"]],
        "cnn_constant_depths": [int(d) for d in cnn.depth[cnn.form == "constant"]],
        "fc_identity_depths": [int(d) for d in fc.depth[fc.form == "identity"]],
        "fc_constant_depths": [int(d) for d in fc.depth[fc.form == "constant"]],
        "shallow_cnns_identity": bool(len(shallow) and (shallow.form == "identity").all()),
        "deepest_cnn_constant": bool(len(cnn) and cnn.form.iloc[-1] == "constant"),
        "deepest_fc_constant": bool(len(fc) and fc.form.iloc[-1] == "constant"),
    }
    out["shown"] = out["shallow_cnns_identity"] and out["deepest_cnn_constant"] and out["deepest_fc_constant"]
    return out


def baselines(cfg_argv: list[str]) -> dict:
    """The exact identity and constant functions on the study's own inputs (its prepare step, no training)."""
    from fitscope.dynamics import output_correlations
    from fitscope.experiments.dynamics_identity import STUDY, prepare

    cfg = STUDY.make_config({}, quick="--quick" in cfg_argv)
    shared = prepare(cfg).shared
    x0, out = shared["train_x"], {}
    for inputs in ("test", "noise"):
        z = shared[f"{inputs}_x"]
        ident = output_correlations(z, z, x0)
        const = output_correlations(np.broadcast_to(x0, z.shape), z, x0)
        out[inputs] = {"identity_function": {"identity": ident.mean_identity, "constant": ident.mean_constant},
                       "constant_function": {"identity": const.mean_identity, "constant": const.mean_constant}}
        print(f"exact functions on {inputs}: identity ({ident.mean_identity:.3f}, {ident.mean_constant:.3f}), "
              f"constant ({const.mean_identity:.3f}, {const.mean_constant:.3f})")
    return out


def show(name: str, result: dict) -> None:
    """Print the forms and correlations of one run, and the finding."""
    for arch, depths in result["nets"].items():
        for depth, cell in depths.items():
            test = cell["test"]
            noise = cell.get("noise", {})
            print(f"  {name} {arch:3s} depth {depth:>2}: digits corr with input {test['identity']:.3f}, with example "
                  f"{test['constant']:.3f} -> {test['form']}; noise {noise.get('identity', float('nan')):.3f} / "
                  f"{noise.get('constant', float('nan')):.3f}; {cell['steps']} steps")
    print(f"  finding shown: {result['finding']['shown']} ({result['finding']})")


def main_bench() -> None:
    """Measure everything of the module docstring and write :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-dynamics-identity", help="where the study runs go (replaced)")
    parser.add_argument("--skip-default", action="store_true", help="time --quick only, not the defaults")
    parser.add_argument("--skip-init", action="store_true", help="no second default run with --init torch")
    parser.add_argument("--skip-16", action="store_true", help="no default run at 16x16 (--size 16)")
    args = parser.parse_args()
    run = start_run(__file__)
    torch.set_num_threads(1)
    root = Path(args.root)
    record: dict = {"benchmark": "dynamics_identity", "study": {}}
    record["study"]["quick"] = study(["--quick"], root / "quick")
    show("quick", record["study"]["quick"])
    if not args.skip_default:
        record["study"]["default"] = study([], root / "default")
        show("default", record["study"]["default"])
        record["default_over_quick_wall"] = record["study"]["default"]["wall_s"] / record["study"]["quick"]["wall_s"]
        record["default_over_quick_cpu"] = record["study"]["default"]["cpu_s"] / record["study"]["quick"]["cpu_s"]
        print(f"default / quick: {record['default_over_quick_wall']:.1f}x the wall time, "
              f"{record['default_over_quick_cpu']:.1f}x the CPU time")
        if not args.skip_init:
            record["study"]["default_init_torch"] = study(["--init", "torch"], root / "init-torch")
            show("init torch", record["study"]["default_init_torch"])
        if not args.skip_16:
            record["study"]["default_size16"] = study(["--size", "16"], root / "size16")
            show("size 16", record["study"]["default_size16"])
            record["default_over_size16_cpu"] = (record["study"]["default"]["cpu_s"]
                                                 / record["study"]["default_size16"]["cpu_s"])
            print(f"28x28 / 16x16 CPU time: {record['default_over_size16_cpu']:.1f}x")
    record["baselines"] = baselines([] if not args.skip_default else ["--quick"])
    run.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_bench()
