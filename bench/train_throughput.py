"""Training throughput of the ensemble engine against a plain PyTorch loop and the matmul peak.

    python bench/train_throughput.py [--quick] [--epochs E] [--models K] [--repeats R]

Workload: K = 16 models ``mlp:512x2`` (64 -> 512 -> 512 -> 10) on scikit-learn's
digits (x / 16, float32, 80% stratified train split with seed 0: 1437 rows),
batch 128, SGD (lr 0.05, momentum 0.9), E = 20 epochs.

Measured in the same process, interleaved, best of R repeats for every method:

- engine: ``fitscope.train.train_ensemble`` training all K models at once,
  WITH its per-epoch eval pass over all train + test rows for all K models
  and per-example records (loss, correctness, margin). Its wall time includes
  that pass; the time of the training steps alone is reported too.
- (a) baseline: a plain PyTorch loop, ``nn.Sequential`` MLP, ``DataLoader(
  TensorDataset, shuffle=True, batch_size=128)``, the K models trained one
  after another for the same epochs; training steps only (no eval pass).
  The "vs (a)" column compares every row with this one.
- (a') the same loop plus the engine's per-epoch work: eval-mode logits on
  all train + test rows and per-row loss / correctness / margin (for
  comparing wall times like for like; skip with --skip-eval-baseline).
- (b) peak: best fp32 GFLOP/s of square 1024 and 2048 ``torch.mm`` (best of
  5 runs each), same thread count.

FLOPs counted: training steps only, 6 x multiply-adds of the three linear
layers per model-example (forward 2x + backward 4x; bias, ReLU, softmax and
optimizer not counted). The engine's eval pass (2 x MACs per row) is not in
the GFLOP/s columns; the "all FLOPs / wall" column adds it.

Writes ``bench/results/train_throughput.json`` (atomic).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import CpuMonitor, matmul_peak, wait_for_quiet_cpu  # noqa: E402
from _results import start_run  # noqa: E402

from fitscope.models import flops_per_example  # noqa: E402
from fitscope.train import TrainConfig, configure_threads, train_ensemble  # noqa: E402

SPEC = "mlp:512x2"
RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as (n, 64) float32 in [0, 1], 80/20 stratified split with seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=0.8, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


def run_engine(x, y, x_te, y_te, *, models: int, epochs: int, batch: int) -> dict:
    """Train ``models`` MLPs at once with the engine; returns times, examples and accuracies."""
    config = TrainConfig(epochs=epochs, batch_size=batch, optimizer="sgd", lr=0.05, momentum=0.9, record=True)
    t0 = time.perf_counter()
    r = train_ensemble(SPEC, x, y, config=config, seeds=list(range(models)), x_test=x_te, y_test=y_te)
    wall = time.perf_counter() - t0
    return dict(wall=wall, train=r.train_seconds, eval=r.eval_seconds, examples=r.examples_seen,
                eval_rows=models * (len(x) + len(x_te)) * r.epochs_run,
                train_acc=float(r.train_acc[:, -1].mean()), test_acc=float(r.test_acc[:, -1].mean()))


def run_baseline(x, y, x_te, y_te, *, models: int, epochs: int, batch: int, eval_each_epoch: bool = False) -> dict:
    """Train ``models`` MLPs one after another with a plain DataLoader loop.

    With ``eval_each_epoch`` the loop also does what the engine's eval pass
    does after every epoch: eval-mode logits on all train + test rows, per-row
    loss, correctness and margin kept as float16 / bool arrays.
    """
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    x_all = torch.from_numpy(np.concatenate([x, x_te]))
    y_all = torch.from_numpy(np.concatenate([y, y_te]))
    dataset = TensorDataset(xt, yt)
    examples, train_acc, test_acc, records = 0, [], [], []
    t0 = time.perf_counter()
    for seed in range(models):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        for _ in range(epochs):
            for xb, yb in loader:
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                examples += len(yb)
            if eval_each_epoch:
                model.eval()
                with torch.no_grad():
                    logits = model(x_all)
                    loss = nn.functional.cross_entropy(logits, y_all, reduction="none")
                    given = logits.gather(1, y_all[:, None])[:, 0]
                    margin = given - logits.scatter(1, y_all[:, None], float("-inf")).amax(1)
                    records.append((loss.half().numpy(), (logits.argmax(1) == y_all).numpy(), margin.half().numpy()))
                model.train()
        with torch.no_grad():  # accuracy check only, outside the timed part
            t_pause = time.perf_counter()
            train_acc.append(float((model(xt).argmax(1) == yt).float().mean()))
            test_acc.append(float((model(torch.from_numpy(x_te)).argmax(1) == torch.from_numpy(y_te)).float().mean()))
            t0 += time.perf_counter() - t_pause
    wall = time.perf_counter() - t0
    return dict(wall=wall, train=wall, eval=0.0, examples=examples,
                train_acc=float(np.mean(train_acc)), test_acc=float(np.mean(test_acc)))


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, write the JSON; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs, 4 baseline models, 1 repeat (smoke test)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--models", type=int, default=16, help="K, models in the ensemble")
    parser.add_argument("--baseline-models", type=int, default=None, help="models the baseline trains (default K)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats; best of them is reported")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip-eval-baseline", action="store_true",
                        help="do not measure (a'), the plain loop with the same per-epoch eval pass")
    parser.add_argument("--max-wait", type=float, default=300.0,
                        help="seconds to wait for other processes to go quiet before each measurement (0: never)")
    args = parser.parse_args(argv)
    run = start_run(__file__, argv)
    epochs = args.epochs or (3 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    k = args.models
    k_base = args.baseline_models or (min(4, k) if args.quick else k)

    threads = configure_threads()
    x, y, x_te, y_te = load_digits_split()
    flops_ex = flops_per_example(SPEC, (64,), 10)  # forward FLOPs = 2 x MACs
    train_flops_ex = 3 * flops_ex  # = 6 x MACs

    # Warm-up: first calls pay for thread pools, MKL and lazy imports.
    run_engine(x, y, x_te, y_te, models=k, epochs=1, batch=args.batch)
    run_baseline(x, y, x_te, y_te, models=1, epochs=1, batch=args.batch)
    matmul_peak(runs=1, min_seconds=0.05)

    engine, baseline, baseline_eval, peaks = [], [], [], []

    def measured(fn, *a, **kw) -> dict:
        # Other processes on a shared machine distort timings: wait for a quiet
        # moment, then record how busy the other processes kept the CPUs.
        quiet = wait_for_quiet_cpu(timeout=args.max_wait) if args.max_wait > 0 else None
        with CpuMonitor() as mon:
            out = fn(*a, **kw)
        out["other_cpu_load_before"] = quiet
        out["other_cpu_load_during"] = mon.other_load
        return out

    for rep in range(repeats):
        engine.append(measured(run_engine, x, y, x_te, y_te, models=k, epochs=epochs, batch=args.batch))
        baseline.append(measured(run_baseline, x, y, x_te, y_te, models=k_base, epochs=epochs, batch=args.batch))
        if not args.skip_eval_baseline:
            baseline_eval.append(measured(run_baseline, x, y, x_te, y_te, models=k_base, epochs=epochs,
                                          batch=args.batch, eval_each_epoch=True))
        peaks.append(measured(matmul_peak))
        print(f"repeat {rep + 1}/{repeats}: engine {engine[-1]['wall']:.2f}s, baseline {baseline[-1]['wall']:.2f}s, "
              f"peak {peaks[-1]['gflops']:.0f} GFLOP/s; other processes' CPU load during them: "
              + ", ".join(f"{r['other_cpu_load_during']:.2f}" if r["other_cpu_load_during"] is not None else "?"
                          for r in (engine[-1], baseline[-1], peaks[-1])), file=sys.stderr)
    e = min(engine, key=lambda r: r["wall"])
    e_train = min(r["train"] for r in engine)
    b = min(baseline, key=lambda r: r["wall"])
    peak = max(p["gflops"] for p in peaks)

    def gflops(examples: int, seconds: float) -> float:
        return train_flops_ex * examples / seconds / 1e9

    rows = []
    b_rate = b["examples"] / b["wall"]
    measured_rows = [
        ("engine, wall (train steps + eval pass + records)", e["examples"], e["wall"], e["eval_rows"] * flops_ex),
        ("engine, training steps only", e["examples"], e_train, None),
        ("(a) plain PyTorch loop, DataLoader, one model at a time", b["examples"], b["wall"], None),
    ]
    if baseline_eval:
        be = min(baseline_eval, key=lambda r: r["wall"])
        measured_rows.append(("(a') = (a) + the same per-epoch eval pass + records", be["examples"], be["wall"],
                              k_base * (len(x) + len(x_te)) * epochs * flops_ex))
    for name, examples, seconds, extra in measured_rows:
        rate = examples / seconds
        g = gflops(examples, seconds)
        rows.append(dict(
            method=name,
            seconds=round(seconds, 3),
            model_examples=int(examples),
            examples_per_s=round(rate, 1),
            gflops=round(g, 2),
            all_flops_gflops=round((train_flops_ex * examples + extra) / seconds / 1e9, 2) if extra else None,
            all_flops_fraction_of_peak=round((train_flops_ex * examples + extra) / seconds / 1e9 / peak, 3)
            if extra else None,
            vs_baseline=round(rate / b_rate, 3),
            fraction_of_peak=round(g / peak, 3),
        ))

    print()
    print(f"{SPEC} x K={k} on digits ({len(x)} train rows), {epochs} epochs, batch {args.batch}, SGD; "
          f"torch {torch.__version__}, {threads} threads; best of {repeats} interleaved repeats")
    print(f"(b) fp32 matmul peak: {peak:.1f} GFLOP/s (square 1024/2048 torch.mm, best of 5 runs x {repeats})")
    print(f"FLOPs per model-example per training step: {train_flops_ex:,} (6 x MACs of the linear layers)")
    header = f"{'method':60s} {'seconds':>8s} {'examples/s':>11s} {'GFLOP/s':>8s} {'vs (a)':>7s} {'of (b)':>7s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['method']:60s} {r['seconds']:8.2f} {r['examples_per_s']:11,.0f} {r['gflops']:8.1f} "
              f"{r['vs_baseline']:6.2f}x {100 * r['fraction_of_peak']:6.1f}%")
    print(f"engine eval pass + records: {e['eval']:.2f}s of {e['wall']:.2f}s wall; counting its FLOPs too, "
          f"the engine does {rows[0]['all_flops_gflops']:.1f} GFLOP/s "
          f"({100 * rows[0]['all_flops_gflops'] / peak:.1f}% of peak) over its wall time")
    loads = [r["other_cpu_load_during"] for r in (*engine, *baseline, *peaks) if r["other_cpu_load_during"] is not None]
    if loads and max(loads) > 0.1:
        print(f"WARNING: other processes used up to {100 * max(loads):.0f}% of the CPUs during a measurement; "
              "timings are distorted", file=sys.stderr)
    print(f"final mean accuracy: engine train {e['train_acc']:.4f} test {e['test_acc']:.4f}; "
          f"baseline train {b['train_acc']:.4f} test {b['test_acc']:.4f}")

    result = dict(
        benchmark="train_throughput",
        workload=dict(spec=SPEC, models=k, baseline_models=k_base, dataset="sklearn digits, x/16, 80% stratified "
                      "train split seed 0", n_train=len(x), n_test=len(x_te), epochs=epochs, batch_size=args.batch,
                      optimizer="sgd lr=0.05 momentum=0.9", repeats=repeats, statistic="best of repeats"),
        flops_counted="training steps only: 6 x multiply-adds of the linear layers per model-example; the engine's "
                      "per-epoch eval pass is inside its wall time but not in 'gflops' ('all_flops_gflops' adds it)",
        flops_per_model_example=train_flops_ex,
        peak=dict(gflops=round(peak, 2), method="square fp32 torch.mm 1024 and 2048, best of 5 runs per repeat",
                  per_repeat=[round(p["gflops"], 2) for p in peaks],
                  other_cpu_load_during=[p["other_cpu_load_during"] for p in peaks]),
        rows=rows,
        engine_runs=engine,
        baseline_runs=baseline,
        baseline_with_eval_runs=baseline_eval,
        accuracy=dict(engine_train=e["train_acc"], engine_test=e["test_acc"],
                      baseline_train=b["train_acc"], baseline_test=b["test_acc"]),
        targets=dict(vs_baseline=">= 4x", fraction_of_peak=">= 0.5",
                     reached_vs_baseline_wall=rows[0]["vs_baseline"], reached_vs_baseline_train=rows[1]["vs_baseline"],
                     reached_fraction_of_peak_wall=rows[0]["fraction_of_peak"],
                     reached_fraction_of_peak_train=rows[1]["fraction_of_peak"]),
    )
    result = run.write(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
