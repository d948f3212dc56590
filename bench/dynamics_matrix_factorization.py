"""The matrix-factorization study's cost and finding on 2 cores, and the checks behind its choices.

Measures, in one run (``bench/results/dynamics_matrix_factorization.json``):

1. **The study.** ``fitscope dynamics matrix-factorization --quick`` and,
   unless ``--skip-default``, with its defaults (100 x 100, rank 5, 1000 to
   4000 observed entries, depths 1, 2, 3 from init 1e-3 at lr 0.5 for at most
   100,000 steps, nuclear norm by SCS), each in a fresh subprocess: wall seconds, CPU seconds of the
   child (user + system, ``resource.getrusage``), the load other processes
   put on the machine meanwhile (``CpuMonitor``), the headline numbers and
   the per-count table (error and effective rank of each method): the finding.
2. **The gradient step against autograd** (the baseline, measured in the same
   run): one gradient-descent step of a depth-3 factorization of a 100 x 100
   matrix by the closed-form gradient of
   :func:`fitscope.dynamics.deep_factorization_gradients` and by
   ``torch.autograd`` on the same product, one torch thread, best of 3 rounds
   of 200 steps: milliseconds per step and their ratio.
3. **The learning rate.** On the default study's truth and its mask of 2000
   entries, depth 2 and 3 at the study's lr 0.5 and at lr 0.1 (5x smaller,
   closer to the gradient flow the paper analyses): the relative distance
   between the two completions, their errors and steps. If the distance is
   small, lr 0.5 is a faithful and 5x cheaper stand-in for small steps.
4. **The initialisation scale of depth 2.** On the same truth and mask,
   depth 2 from init 1e-3 (the study's default), 1e-4, 1e-5 and 1e-6, against
   the nuclear norm on the same entries: the paper's theory is about the limit
   of a small initialisation, and depth 2's bias to low rank grows as the
   initialisation shrinks.

No FLOPs are counted: the figures are times, errors and effective ranks.
Every figure is measured in this run.

Usage: python bench/dynamics_matrix_factorization.py [--skip-default] [--root runs/bench-mf]
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

RESULTS = Path(__file__).parent / "results" / "dynamics_matrix_factorization.json"
#: the count of observed entries of the lr and init checks (one of the default study's)
CHECK_OBSERVED = 2000


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def study(argv: list[str], out: Path) -> dict:
    """Run ``fitscope dynamics matrix-factorization ARGV --out OUT`` in a fresh subprocess: times, load, finding."""
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMonitor() as mon:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fitscope", "dynamics", "matrix-factorization", *argv,
                               "--out", str(out)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fitscope dynamics matrix-factorization {' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    curves = pd.read_parquet(out / "curves.parquet")
    print(f"fitscope dynamics matrix-factorization {' '.join(argv)}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(others kept {100 * (mon.other_load or 0):.0f}% of the CPUs busy)")
    table = {}
    for m, part in curves.groupby("observed"):
        table[str(int(m))] = {row.method: {"error": float(row.error), "effective_rank": float(row.effective_rank),
                                           "steps": float(row.steps), "converged": float(row.converged)}
                              for row in part.itertuples()}
        print(f"  m = {int(m)}: " + "; ".join(f"{row.method} error {row.error:.3g} erank {row.effective_rank:.3g}"
                                             for row in part.itertuples()))
    return {"argv": argv, "wall_s": wall, "cpu_s": cpu, "other_load": mon.other_load,
            "timings": meta.get("timings"), "units": len(meta.get("units", {})), "summary": meta.get("summary"),
            "curves": table}


def _default_problem(observed: int):
    """The default study's truth and its mask of ``observed`` entries (trial 0), from the study's own seeds."""
    from fitscope.experiments.dynamics_matrix_factorization import make_config, plan_tasks, prepare

    cfg = make_config(observed=[observed], depths=[2])
    truth = prepare(cfg).shared["truth"]
    task = plan_tasks(cfg)[0]
    from fitscope.dynamics import observation_mask

    return cfg, truth, observation_mask(cfg.size, cfg.size, observed, seed=task.mask_seed), task


def gradient_step_cost() -> dict:
    """Milliseconds per GD step, depth 3 on 100 x 100: the closed form against autograd (best of 3 x 200)."""
    from fitscope.dynamics import deep_factorization_gradients, init_factors

    _, truth, mask, _ = _default_problem(CHECK_OBSERVED)
    target = torch.from_numpy(np.where(mask, truth, 0.0))
    weight = torch.from_numpy(mask.astype(np.float64))
    factors = init_factors(100, 100, 3, 1e-3, seed=0)

    def closed():
        for _ in range(200):
            _, grads, _ = deep_factorization_gradients(factors, target, weight)
            for w, g in zip(factors, grads):
                w.sub_(1e-9 * g)

    leaves = [f.clone().requires_grad_(True) for f in factors]

    def autograd():
        for _ in range(200):
            w = leaves[2] @ leaves[1] @ leaves[0]
            loss = 0.5 * torch.sum((weight * (w - target)) ** 2)
            grads = torch.autograd.grad(loss, leaves)
            with torch.no_grad():
                for p, g in zip(leaves, grads):
                    p.sub_(1e-9 * g)

    out = {}
    for name, fn in (("closed_form", closed), ("autograd", autograd)):
        fn()  # warm up
        best_cpu = best_wall = float("inf")
        for _ in range(3):
            _, cpu, wall = _timed(fn)
            best_cpu, best_wall = min(best_cpu, cpu / 200), min(best_wall, wall / 200)
        out[name] = {"cpu_ms": 1e3 * best_cpu, "wall_ms": 1e3 * best_wall}
    out["autograd_over_closed_cpu"] = out["autograd"]["cpu_ms"] / out["closed_form"]["cpu_ms"]
    print(f"GD step, depth 3, 100 x 100: closed form {out['closed_form']['cpu_ms']:.3f} ms CPU, autograd "
          f"{out['autograd']['cpu_ms']:.3f} ms CPU ({out['autograd_over_closed_cpu']:.2f}x)")
    return out


def lr_check() -> dict:
    """Depth 2 and 3 at lr 0.5 (the study's) and 0.1 on the default problem at m = CHECK_OBSERVED."""
    from fitscope.dynamics import complete_deep, effective_rank, relative_error
    from fitscope.seeding import derive_seed

    cfg, truth, mask, _ = _default_problem(CHECK_OBSERVED)
    out = {"observed": CHECK_OBSERVED}
    for depth in (2, 3):
        seed = derive_seed(cfg.seed, "init", depth, "0.001", 0)
        runs = {}
        for lr in (0.5, 0.1):
            (result, cpu, wall) = _timed(lambda: complete_deep(truth, mask, depth=depth, init_scale=1e-3, lr=lr,
                                                               max_steps=200_000, tol=cfg.tol, seed=seed))
            runs[lr] = result
            out[f"depth{depth}_lr{lr:g}"] = {"error": relative_error(result.matrix, truth),
                                             "effective_rank": effective_rank(result.matrix), "steps": result.steps,
                                             "converged": result.converged, "cpu_s": cpu, "wall_s": wall}
        distance = float(np.linalg.norm(runs[0.5].matrix - runs[0.1].matrix) / np.linalg.norm(runs[0.1].matrix))
        out[f"depth{depth}_distance"] = distance
        print(f"depth {depth}, m = {CHECK_OBSERVED}: lr 0.5 error {out[f'depth{depth}_lr0.5']['error']:.4g} "
              f"({runs[0.5].steps} steps), lr 0.1 error {out[f'depth{depth}_lr0.1']['error']:.4g} "
              f"({runs[0.1].steps} steps); completions differ by {distance:.2e} (relative)")
    return out


def init_check() -> dict:
    """Depth 2 from init 1e-3 ... 1e-6 against the nuclear norm on the default problem at m = CHECK_OBSERVED."""
    from fitscope.dynamics import complete_deep, complete_nuclear, effective_rank, relative_error
    from fitscope.seeding import derive_seed

    cfg, truth, mask, _ = _default_problem(CHECK_OBSERVED)
    nuclear, cpu, wall = _timed(lambda: complete_nuclear(truth, mask, solver="scs", eps=cfg.solver_eps))
    out = {"observed": CHECK_OBSERVED,
           "nuclear": {"error": relative_error(nuclear, truth), "effective_rank": effective_rank(nuclear),
                       "cpu_s": cpu, "wall_s": wall}}
    print(f"m = {CHECK_OBSERVED}: nuclear norm error {out['nuclear']['error']:.4g}, "
          f"effective rank {out['nuclear']['effective_rank']:.3g} ({cpu:.1f} s CPU)")
    for scale in (1e-3, 1e-4, 1e-5, 1e-6):
        seed = derive_seed(cfg.seed, "init", 2, f"{scale:g}", 0)
        result, cpu, wall = _timed(lambda: complete_deep(truth, mask, depth=2, init_scale=scale, lr=cfg.lr,
                                                         max_steps=200_000, tol=cfg.tol, seed=seed))
        row = {"init_scale": scale, "error": relative_error(result.matrix, truth),
               "effective_rank": effective_rank(result.matrix), "steps": result.steps,
               "converged": result.converged, "cpu_s": cpu, "wall_s": wall}
        out[f"depth2_init{scale:g}"] = row
        print(f"  depth 2, init {scale:g}: error {row['error']:.4g}, effective rank {row['effective_rank']:.3g}, "
              f"{result.steps} steps ({cpu:.1f} s CPU); "
              f"{'below' if row['error'] < out['nuclear']['error'] else 'above'} the nuclear norm's error")
    return out


def main_bench() -> None:
    """Measure everything of the module docstring and write :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-mf", help="where the study runs go (replaced)")
    parser.add_argument("--skip-default", action="store_true", help="time --quick only, not the defaults")
    args = parser.parse_args()
    run = start_run(__file__)
    torch.set_num_threads(1)
    record: dict = {"benchmark": "dynamics_matrix_factorization", "gradient_step": gradient_step_cost()}
    root = Path(args.root)
    record["study"] = {"quick": study(["--quick"], root / "quick")}
    if not args.skip_default:
        record["study"]["default"] = study([], root / "default")
    record["lr_check"] = lr_check()
    record["init_check"] = init_check()
    run.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_bench()
