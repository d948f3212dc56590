"""The sharpness study's cost on 2 cores, and its Hessian eigenvalues against a dense Hessian (and PyHessian).

Measures, in one run (``bench/results/dynamics.json``):

1. **Accuracy against the dense Hessian.** :func:`fitscope.dynamics.hessian_top_eigenvalues`
   (top 1 and top 3, Lanczos, tol 1e-3) and :func:`fitscope.dynamics.hessian_trace`
   (100 probes) on ``mlp:16x1`` (826 parameters) and 200 rows of MNIST-1D with
   the square loss, at initialisation and after 200 steps of full-batch GD at
   lr 0.5 (at the edge of stability), against the dense Hessian
   (``torch.func.hessian`` in float64, ``torch.linalg.eigvalsh``): the
   relative error of each eigenvalue, the trace's error in standard errors,
   and the time of each against the dense Hessian's (the baseline, measured in
   the same run).
2. **PyHessian** (optional; ``pip install pyhessian``, GPL-3, not a
   dependency of fitscope): its power-iteration top-3 eigenvalues (its default
   tol 1e-3, 100 iterations) on the same models and data, their relative
   error against the dense Hessian and its time. Its trace is not compared:
   its stopping rule (relative change of the running mean below tol) ends
   after a few probes when the trace is small.
3. **The study.** ``fitscope dynamics sharpness --quick`` and, unless
   ``--skip-default``, with its defaults, each in a fresh subprocess: wall
   seconds, CPU seconds of the child (user + system, ``resource.getrusage``),
   the load other processes put on the machine meanwhile (``CpuMonitor``),
   and the study's headline numbers.
4. **Hessian-vector products.** The time of one ``H v`` by double backward
   (fitscope's default) and by forward-over-reverse (``torch.func.jvp`` of
   ``torch.func.grad``) on the quick setting's network and rows (mlp:64x3,
   500 rows of MNIST-1D, 11,594 parameters), one torch thread, best of 3
   rounds of 20 products; their ratio.
5. **The thread rule.** One GD unit of the quick setting (mlp:64x3, 500 rows,
   400 steps, 21 Lanczos estimates) with the study's one torch thread for a
   small network and with the 2 threads the runner gives a local unit by
   default: CPU and wall seconds of each, and their ratio.

No FLOPs are counted: the figures are times and errors. Every figure is
measured in this run.

Usage: python bench/dynamics.py [--skip-default] [--root runs/bench-dynamics]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import CpuMonitor  # noqa: E402
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "dynamics.json"


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def dense_hessian(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The dense Hessian of the square loss (half the squared error to one-hot, mean over rows), float64."""
    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    xd, target = torch.from_numpy(x).double(), F.one_hot(torch.from_numpy(y).long(), 10).double()

    def loss(theta):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return 0.5 * ((torch.func.functional_call(model, params, (xd,)) - target) ** 2).sum(1).mean()

    h = torch.func.hessian(loss)(flat).numpy()
    model.float()
    return (h + h.T) / 2


def accuracy_case(name: str, model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> dict:
    """fitscope's (and PyHessian's) eigenvalues and trace against the dense Hessian of ``model`` on ``(x, y)``."""
    from fitscope.dynamics import hessian_top_eigenvalues, hessian_trace

    h, dense_cpu, dense_wall = _timed(lambda: dense_hessian(model, x, y))
    eig = torch.linalg.eigvalsh(torch.from_numpy(h)).numpy()[::-1]
    top1, c1, w1 = _timed(lambda: hessian_top_eigenvalues(model, x, y, k=1, loss="mse"))
    top3, c3, w3 = _timed(lambda: hessian_top_eigenvalues(model, x, y, k=3, loss="mse"))
    tr, ct, wt = _timed(lambda: hessian_trace(model, x, y, samples=100, loss="mse"))
    exact_trace, exact_fro = float(np.trace(h)), float(np.linalg.norm(h))
    case = {
        "parameters": int(len(h)), "rows": int(len(x)),
        "dense": {"top3": eig[:3], "trace": exact_trace, "frobenius": exact_fro, "cpu_s": dense_cpu,
                  "wall_s": dense_wall},
        "top1": {"value": top1.eigenvalues, "rel_error": np.abs(top1.eigenvalues / eig[:1] - 1),
                 "hvps": top1.iterations, "converged": top1.converged, "cpu_s": c1, "wall_s": w1,
                 "dense_over_lanczos_cpu": dense_cpu / c1},
        "top3": {"value": top3.eigenvalues, "rel_error": np.abs(top3.eigenvalues / eig[:3] - 1),
                 "hvps": top3.iterations, "converged": top3.converged, "cpu_s": c3, "wall_s": w3,
                 "dense_over_lanczos_cpu": dense_cpu / c3},
        "trace": {"value": tr.trace, "se": tr.trace_se, "error_in_se": (tr.trace - exact_trace) / tr.trace_se,
                  "frobenius": tr.frobenius, "frobenius_se": tr.frobenius_se,
                  "frobenius_error_in_se": (tr.frobenius - exact_fro) / tr.frobenius_se,
                  "samples": tr.samples, "cpu_s": ct, "wall_s": wt},
    }
    print(f"{name}: P = {len(h)}; dense top-3 {np.round(eig[:3], 4).tolist()} in {dense_cpu:.2f} s CPU")
    print(f"  fitscope top-1 {top1.eigenvalues.round(4).tolist()} rel. error {case['top1']['rel_error'].max():.1e}, "
          f"{top1.iterations} HVPs, {c1:.3f} s CPU ({dense_cpu / c1:.0f}x faster than dense)")
    print(f"  fitscope top-3 {top3.eigenvalues.round(4).tolist()} rel. error {case['top3']['rel_error'].max():.1e}, "
          f"{top3.iterations} HVPs, {c3:.3f} s CPU ({dense_cpu / c3:.0f}x faster than dense)")
    print(f"  trace {tr.trace:.2f} +- {tr.trace_se:.2f} (dense {exact_trace:.2f}: {case['trace']['error_in_se']:+.2f} SE)"
          f"; Frobenius {tr.frobenius:.2f} +- {tr.frobenius_se:.2f} (dense {exact_fro:.2f})")
    if importlib.util.find_spec("pyhessian") is not None:
        from pyhessian import hessian as PyHessian

        target = F.one_hot(torch.from_numpy(y).long(), 10).float()

        def criterion(out, t):
            return 0.5 * ((out - t) ** 2).sum(1).mean()

        torch.manual_seed(0)  # PyHessian draws its start vectors from torch's global generator
        was = model.training
        (values, _), cp, wp = _timed(lambda: PyHessian(model, criterion, data=(torch.from_numpy(x), target),
                                                       cuda=False).eigenvalues(top_n=3))
        model.train(was)
        values = np.asarray(values, float)
        case["pyhessian"] = {"top3": values, "rel_error": np.abs(values / eig[:3] - 1), "cpu_s": cp, "wall_s": wp,
                             "fitscope_top3_speedup_cpu": cp / c3}
        print(f"  PyHessian top-3 {values.round(4).tolist()} rel. error {case['pyhessian']['rel_error'].max():.1e}, "
              f"{cp:.3f} s CPU (fitscope's Lanczos {cp / c3:.1f}x faster)")
    return case


def accuracy() -> dict:
    """The accuracy cases: mlp:16x1 on 200 MNIST-1D rows at initialisation and at the edge of stability."""
    from fitscope.dynamics import hessian_top_eigenvalues, hessian_trace
    from fitscope.experiments.dynamics_sharpness import make_config, prepare
    from fitscope.models import build_plain

    cfg = make_config(data="mnist1d", rows=200, model="mlp:16x1", gd_lrs=[0.5], sgd_lrs=[])
    shared = prepare(cfg).shared
    x, y = shared["x_train"], shared["y_train"]
    warm = build_plain("mlp:8x1", (1, 40), 10, seed=1, norm="group")  # first calls load code: not timed
    dense_hessian(warm, x[:20], y[:20])
    hessian_top_eigenvalues(warm, x[:20], y[:20], loss="mse")
    hessian_trace(warm, x[:20], y[:20], samples=2, loss="mse")
    model = build_plain("mlp:16x1", (1, 40), 10, seed=0, norm="group")
    out = {"init": accuracy_case("mlp:16x1 at initialisation", model, x, y)}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    target = F.one_hot(torch.from_numpy(y).long(), 10).float()
    for _ in range(200):
        opt.zero_grad()
        (0.5 * ((model(torch.from_numpy(x)) - target) ** 2).sum(1).mean()).backward()
        opt.step()
    out["edge"] = accuracy_case("mlp:16x1 after 200 GD steps at lr 0.5 (2/lr = 4)", model, x, y)
    out["pyhessian_installed"] = importlib.util.find_spec("pyhessian") is not None
    if not out["pyhessian_installed"]:
        print("  PyHessian: not installed (pip install pyhessian to add the cross-check)")
    return out


def study(argv: list[str], out: Path) -> dict:
    """Run ``fitscope dynamics sharpness ARGV --out OUT`` in a fresh subprocess: wall, child CPU, load, summary."""
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMonitor() as mon:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fitscope", "dynamics", "sharpness", *argv, "--out", str(out)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fitscope dynamics sharpness {' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    print(f"fitscope dynamics sharpness {' '.join(argv)}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(others kept {100 * (mon.other_load or 0):.0f}% of the CPUs busy)")
    return {"argv": argv, "wall_s": wall, "cpu_s": cpu, "other_load": mon.other_load,
            "timings": meta.get("timings"), "units": len(meta.get("units", {})), "summary": meta.get("summary")}


def hvp_methods() -> dict:
    """Seconds per Hessian-vector product by double backward and by forward-over-reverse (best of 3 x 20)."""
    from fitscope.dynamics import LossHessian
    from fitscope.experiments.dynamics_sharpness import STUDY, prepare
    from fitscope.models import build_plain

    cfg = STUDY.make_config({}, quick=True)
    shared = prepare(cfg).shared
    model = build_plain(cfg.model, (1, 40), 10, seed=0, norm="group")
    target = F.one_hot(torch.from_numpy(shared["y_train"]).long(), 10).float()
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    out = {"parameters": int(len(v)), "rows": int(len(target))}
    for method in ("double-backward", "forward-over-reverse"):
        problem = LossHessian(model, shared["x_train"], target, loss="mse", method=method)
        problem.hvp(v)  # warm up
        best_cpu = best_wall = float("inf")
        for _ in range(3):
            _, cpu, wall = _timed(lambda: [problem.hvp(v) for _ in range(20)])
            best_cpu, best_wall = min(best_cpu, cpu / 20), min(best_wall, wall / 20)
        out[method] = {"cpu_ms": 1e3 * best_cpu, "wall_ms": 1e3 * best_wall}
    out["forward_over_double_cpu"] = out["forward-over-reverse"]["cpu_ms"] / out["double-backward"]["cpu_ms"]
    print(f"H v on mlp:64x3, 500 rows: double backward {out['double-backward']['cpu_ms']:.2f} ms CPU, "
          f"forward-over-reverse {out['forward-over-reverse']['cpu_ms']:.2f} ms CPU "
          f"({out['forward_over_double_cpu']:.1f}x)")
    return out


def thread_rule() -> dict:
    """One quick GD unit with the study's one thread and with the runner's 2 (the small-work rule switched off)."""
    import fitscope.experiments.dynamics_sharpness as study_module

    cfg = study_module.STUDY.make_config({}, quick=True)
    prepared = study_module.prepare(cfg)
    task = [t for t in study_module.plan_runs(cfg, prepared.state.data.input_shape, prepared.state.data.n_classes)
            if t.key == "gd-lr0.3"][0]
    before, rule = torch.get_num_threads(), study_module.SMALL_WORK
    out = {}
    try:
        torch.set_num_threads(2)
        _, out["one_thread_cpu_s"], out["one_thread_wall_s"] = _timed(lambda: study_module.train_run(
            task, **prepared.shared))
        study_module.SMALL_WORK = 0  # the rule off: the unit keeps the 2 threads
        _, out["two_threads_cpu_s"], out["two_threads_wall_s"] = _timed(lambda: study_module.train_run(
            task, **prepared.shared))
    finally:
        study_module.SMALL_WORK = rule
        torch.set_num_threads(before)
    out["cpu_ratio"] = out["two_threads_cpu_s"] / out["one_thread_cpu_s"]
    out["wall_ratio"] = out["two_threads_wall_s"] / out["one_thread_wall_s"]
    print(f"thread rule, unit {task.key} of --quick: 1 thread {out['one_thread_cpu_s']:.2f} s CPU / "
          f"{out['one_thread_wall_s']:.2f} s wall; 2 threads {out['two_threads_cpu_s']:.2f} s CPU / "
          f"{out['two_threads_wall_s']:.2f} s wall ({out['cpu_ratio']:.1f}x the CPU, {out['wall_ratio']:.1f}x the wall)")
    return out


def main_bench() -> None:
    """Measure everything of the module docstring and write :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-dynamics", help="where the study runs go (replaced)")
    parser.add_argument("--skip-default", action="store_true", help="time --quick only, not the defaults")
    args = parser.parse_args()
    run = start_run(__file__)
    torch.set_num_threads(1)  # the accuracy checks: tiny models, one thread (see the thread rule below)
    record: dict = {"benchmark": "dynamics", "accuracy": accuracy(), "hvp_methods": hvp_methods()}
    torch.set_num_threads(2)
    root = Path(args.root)
    record["study"] = {"quick": study(["--quick"], root / "quick")}
    if not args.skip_default:
        record["study"]["default"] = study([], root / "default")
    record["thread_rule"] = thread_rule()
    run.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_bench()
