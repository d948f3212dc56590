"""Throughput on a GPU: the ensemble trainer, the FC NTK Gram and the CNTK, against the same code on the CPU and
against PyTorch's vmap ensemble recipe on the same device.

    python bench/device.py [--device cuda|auto|cuda:N] [--quick] [--epochs E] [--cpu-epochs E] [--repeats R]
                           [--fc-rows N] [--cpu-fc-rows N] [--cntk-rows N] [--cpu-cntk-rows N]
                           [--dtype float64|float32] [--max-memory-mb M] [--threads N] [--out PATH]
    python bench/device.py --device cpu --quick    # smoke test on a machine without a GPU: writes no results file

Workloads (``--device``, default ``cuda``):

- training: scikit-learn digits (x / 16, float32, 80% stratified train split
  with seed 0: 1437 rows, 360 test rows), ``mlp:512x2`` on the 64-vectors and
  ``cnn:32-64`` on the 1 x 8 x 8 images (BatchNorm), K = 16 and K = 128
  models, batch 128, SGD (lr 0.05, momentum 0.9), E epochs (default 10).
  Model ``k`` of every method starts from seed ``k``.
- FC NTK Gram: ``fitscope.kernels.ntk(x, depth=5)`` of ``--fc-rows`` x 64
  standard normal rows (seed 0), float64 (``--dtype``).
- CNTK-GAP Gram: ``ntk(images, arch="conv", depth=4)`` (3 x 3 filters, global
  average pooling) of the first ``--cntk-rows`` digits images.

Methods, measured in the same run, best (minimum wall) of R repeats after a
warm-up of each (CUDA context, cuDNN, vmap's first trace):

- device: ``fitscope.train.train_ensemble(..., device=D)`` with its per-epoch
  record pass (per-example loss, correctness, margin of every model on every
  train row, kept on the device and copied back once), and the kernels with
  ``device=D``.
- cpu: the same calls with ``device="cpu"``, at ``--threads`` torch threads.
  Timed on fewer epochs (``--cpu-epochs``, default 2) and, for the kernels,
  fewer rows (``--cpu-fc-rows``, ``--cpu-cntk-rows``): every figure is a rate
  (model-examples or Gram entries per second), which does not depend on those
  counts, and the output says which counts each rate was measured on.
- vmap: PyTorch's "model ensembling" recipe on the device: ``run_vmap_recipe``
  imported from ``bench/train_throughput.py`` (``stack_module_state``,
  ``functional_call`` on a meta-device copy, ``vmap(grad(loss))``, foreach
  SGD with momentum); the CNN is ``fitscope.models.build_plain(spec,
  norm="batch")`` after ``torch.func.replace_all_batch_norm_modules_`` (vmap
  cannot update running statistics). Training steps only, no record pass:
  it is compared with the engine's training steps (``train_seconds``; on CUDA
  the engine synchronizes before reading the clock).

Figures: training, model-examples per second of the training steps and of
the whole call (steps + record pass), and GFLOP/s of the steps counted as 3
x ``fitscope.models.flops_per_example`` (2 x the multiply-adds of the linear
and conv layers, forward + backward; BatchNorm, ReLU, pooling and the
optimizer not counted). Kernels: Gram entries per second (N1 x N2 entries;
the code computes the blocks on and above the diagonal and mirrors them).
Wall seconds (``time.perf_counter``) and process CPU seconds
(``time.process_time``) of every measurement; other processes' CPU load
during it (``_peak.CpuMonitor``). Ratios: device / cpu and device / vmap.
Mean test accuracy of every training method is recorded, so a baseline that
trains nothing cannot pass for a fast one.

The device's name (``torch.cuda.get_device_name``), memory and compute
capability are recorded. Writes ``bench/results/device.json`` through
``bench/_results.py`` when the device is a GPU. A CPU run (``--device cpu``)
writes nothing unless ``--out`` is given, and then its record says
``"cpu_run": true`` and is labeled as a CPU run (not a GPU measurement).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import CpuMonitor  # noqa: E402
from _results import start_run  # noqa: E402
from _results import machine  # noqa: E402
from train_throughput import LR, MOMENTUM, load_digits_split, run_vmap_recipe  # noqa: E402

from fitscope.errors import FitscopeError  # noqa: E402
from fitscope.kernels import ntk  # noqa: E402
from fitscope.models import flops_per_example  # noqa: E402
from fitscope.runs.devices import resolve_device  # noqa: E402
from fitscope.train import TrainConfig, configure_threads, train_ensemble  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "device.json"
SPECS = {"mlp:512x2": (64,), "cnn:32-64": (1, 8, 8)}
MODELS = (16, 128)
BATCH = 128
FC_DEPTH, CNTK_DEPTH = 5, 4


def device_info(dev: torch.device) -> dict:
    """What the device is: its name (``torch.cuda.get_device_name``), memory, capability; the CPU model on CPU."""
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return dict(device=str(dev), name=torch.cuda.get_device_name(dev),
                    memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                    cuda=torch.version.cuda, count=torch.cuda.device_count())
    return dict(device="cpu", name=f"cpu: {machine()['cpu_model']}")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measured(fn, *args, **kwargs) -> dict:
    """``fn(*args, **kwargs)`` (a dict) plus wall and process CPU seconds of the call and the other processes' load."""
    gc.collect()
    with CpuMonitor() as mon:
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {**out, "call_wall": wall, "call_cpu": cpu, "other_cpu_load": mon.other_load}


def cnn_net(spec: str, input_shape: tuple[int, ...]):
    """Model ``k`` of the vmap recipe for a CNN: the engine's network (BatchNorm) without running statistics."""
    from torch.func import replace_all_batch_norm_modules_

    from fitscope.models.plain import build_plain

    return lambda k: replace_all_batch_norm_modules_(build_plain(spec, input_shape, 10, seed=k, norm="batch"))


def engine(data, spec: str, *, models: int, epochs: int, device: str) -> dict:
    """The engine on ``device``: model-examples of its training steps, their seconds, the whole call, accuracy."""
    x, y, x_te, y_te = data
    config = TrainConfig(epochs=epochs, batch_size=BATCH, optimizer="sgd", lr=LR, momentum=MOMENTUM, record=True)
    r = train_ensemble(spec, x, y, config=config, seeds=list(range(models)), x_test=x_te, y_test=y_te,
                       device=device)
    return dict(examples=r.examples_seen, steps_seconds=r.train_seconds, record_seconds=r.eval_seconds,
                epochs=r.epochs_run, test_acc=float(r.test_acc[:, -1].mean()))


def vmap(data, spec: str, *, models: int, epochs: int, device: str) -> dict:
    """The vmap recipe of ``bench/train_throughput.py`` on ``device`` (training steps only)."""
    x, y, x_te, y_te = data
    net = None if spec.startswith("mlp") else cnn_net(spec, tuple(x.shape[1:]))
    r = run_vmap_recipe(x, y, x_te, y_te, models=models, epochs=epochs, batch=BATCH, spec=spec, grads="func",
                        device=device, net=net)
    return dict(examples=r["examples"], steps_seconds=r["train"], record_seconds=None, epochs=epochs,
                test_acc=float(r["test_acc"]))


def kernel(x: np.ndarray, *, arch: str, depth: int, dtype: str, device: str, max_memory_mb: float) -> dict:
    """The Gram matrix of ``x`` on ``device`` (the NumPy result included: copying it back is part of the call)."""
    dev = torch.device(device)
    _sync(dev)
    t0 = time.perf_counter()
    gram = ntk(x, arch=arch, depth=depth, dtype=dtype, device=device, max_memory_mb=max_memory_mb)
    seconds = time.perf_counter() - t0
    return dict(entries=int(gram.size), seconds=seconds, rows=len(x), checksum=float(np.trace(gram)) / len(x))


def best(runs: list[dict], key: str) -> dict:
    """The run with the smallest ``key``."""
    return min(runs, key=lambda r: r[key])


def _rate(run: dict, what: str = "examples", seconds: str = "steps_seconds") -> float:
    return run[what] / max(run[seconds], 1e-12)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the tables, write the JSON (GPU runs, or ``--out``); returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, auto or cpu (a smoke test)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 256 train rows, K = 4 and 8, 1 epoch, 1 repeat, small Gram matrices")
    parser.add_argument("--epochs", type=int, default=None, help="epochs on the device (default 10, quick 1)")
    parser.add_argument("--cpu-epochs", type=int, default=None, help="epochs of the CPU baseline (default 2, quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats; the best is reported (default 3)")
    parser.add_argument("--fc-rows", type=int, default=None, help="FC Gram rows on the device (default 20000)")
    parser.add_argument("--cpu-fc-rows", type=int, default=None, help="FC Gram rows on the CPU (default 2000)")
    parser.add_argument("--cntk-rows", type=int, default=None, help="CNTK Gram rows on the device (default 1797)")
    parser.add_argument("--cpu-cntk-rows", type=int, default=None, help="CNTK Gram rows on the CPU (default 150)")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--max-memory-mb", type=float, default=4096.0, help="the kernels' block memory cap")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: FITSCOPE_NUM_THREADS, else torch's default)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results file (default {RESULTS.relative_to(RESULTS.parents[2])} on a GPU; "
                             "a CPU run writes one only when this is given)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device, "--device")
    except FitscopeError as err:
        parser.exit(2, f"{err}\n")
    run = start_run(__file__, argv)
    dev = torch.device(device)
    cpu_run = dev.type == "cpu"
    q = args.quick
    epochs = args.epochs or (1 if q else 10)
    cpu_epochs = args.cpu_epochs or (1 if q else 2)
    repeats = args.repeats or (1 if q else 3)
    model_counts = (4, 8) if q else MODELS
    fc_rows, cpu_fc_rows = args.fc_rows or (800 if q else 20000), args.cpu_fc_rows or (600 if q else 2000)
    cntk_rows, cpu_cntk_rows = args.cntk_rows or (40 if q else 1797), args.cpu_cntk_rows or (20 if q else 150)
    threads = configure_threads(args.threads)
    info = device_info(dev)
    print(f"device: {info['name']} ({device}); CPU baseline at {threads} torch threads", file=sys.stderr, flush=True)

    full = load_digits_split()
    x, y, x_te, y_te = full
    if q:
        x, y, x_te, y_te = x[:256], y[:256], x_te[:64], y_te[:64]
    data = {spec: tuple(a.reshape((len(a), *shape)) if a.ndim == 2 else a for a in (x, y, x_te, y_te))
            for spec, shape in SPECS.items()}

    # ---- training: engine on the device, the same engine on the CPU, the vmap recipe on the device
    methods = {
        "device": lambda spec, k, e: engine(data[spec], spec, models=k, epochs=e, device=device),
        "cpu": lambda spec, k, e: engine(data[spec], spec, models=k, epochs=e, device="cpu"),
        "vmap": lambda spec, k, e: vmap(data[spec], spec, models=k, epochs=e, device=device),
    }
    method_epochs = {"device": epochs, "cpu": cpu_epochs, "vmap": epochs}
    for spec in SPECS:  # warm-up
        for fn in methods.values():
            fn(spec, model_counts[0], 1)
    training = []
    for spec, shape in SPECS.items():
        flops = 3 * flops_per_example(spec, shape, 10)
        for k in model_counts:
            runs = {m: [measured(fn, spec, k, method_epochs[m]) for _ in range(repeats)] for m, fn in methods.items()}
            row = dict(spec=spec, models=k, train_flops_per_model_example=flops)
            for m, rs in runs.items():
                b = best(rs, "steps_seconds")
                row[m] = dict(epochs=b["epochs"], examples=b["examples"], steps_seconds=round(b["steps_seconds"], 4),
                              record_seconds=None if b["record_seconds"] is None else round(b["record_seconds"], 4),
                              call_wall=round(b["call_wall"], 4), call_cpu=round(b["call_cpu"], 4),
                              steps_rate=round(_rate(b)), whole_call_rate=round(b["examples"] / b["call_wall"]),
                              steps_gflops=round(_rate(b) * flops / 1e9, 2), test_acc=round(b["test_acc"], 4),
                              other_cpu_load=b["other_cpu_load"], repeats=len(rs))
            row["device_over_cpu_steps"] = round(row["device"]["steps_rate"] / row["cpu"]["steps_rate"], 2)
            row["device_over_cpu_whole_call"] = round(row["device"]["whole_call_rate"]
                                                      / row["cpu"]["whole_call_rate"], 2)
            row["device_over_vmap_steps"] = round(row["device"]["steps_rate"] / row["vmap"]["steps_rate"], 2)
            training.append(row)
            print(f"{spec} K={k}: device {row['device']['steps_rate']:,} model-examples/s "
                  f"({row['device']['steps_gflops']} GFLOP/s), cpu {row['cpu']['steps_rate']:,}, "
                  f"vmap {row['vmap']['steps_rate']:,}", file=sys.stderr, flush=True)

    # ---- kernels: the same calls on the device and on the CPU (fewer rows: entries per second)
    rng = np.random.default_rng(0)
    images = np.concatenate([full[0], full[2]]).reshape(-1, 1, 8, 8).astype(np.float64)
    fc_x = rng.standard_normal((max(fc_rows, cpu_fc_rows), 64))
    cases = {
        "fc_ntk": dict(arch="fc", depth=FC_DEPTH, x=fc_x, rows={"device": fc_rows, "cpu": cpu_fc_rows}),
        "cntk_gap": dict(arch="conv", depth=CNTK_DEPTH, x=images,
                         rows={"device": min(cntk_rows, len(images)), "cpu": min(cpu_cntk_rows, len(images))}),
    }
    kernels = []
    for name, case in cases.items():
        row = dict(kernel=name, arch=case["arch"], depth=case["depth"], dtype=args.dtype)
        for where, on in (("device", device), ("cpu", "cpu")):
            x_k = case["x"][: case["rows"][where]]
            call = dict(arch=case["arch"], depth=case["depth"], dtype=args.dtype, device=on,
                        max_memory_mb=args.max_memory_mb)
            kernel(x_k[: min(len(x_k), 64)], **call)  # warm-up
            b = best([measured(kernel, x_k, **call) for _ in range(repeats)], "seconds")
            row[where] = dict(rows=b["rows"], entries=b["entries"], seconds=round(b["seconds"], 4),
                              call_cpu=round(b["call_cpu"], 4), entries_per_second=round(b["entries"] / b["seconds"]),
                              other_cpu_load=b["other_cpu_load"])
        row["device_over_cpu"] = round(row["device"]["entries_per_second"] / row["cpu"]["entries_per_second"], 2)
        kernels.append(row)

    print()
    print(f"{info['name']} ({device}) vs the same code on the CPU ({threads} threads) and the vmap recipe on "
          f"{device}; digits {len(x)} train rows, batch {BATCH}, best of {repeats}")
    print(f"{'training (model-examples/s of the steps)':44s} {'device':>12s} {'cpu':>12s} {'vmap':>12s} "
          f"{'dev/cpu':>8s} {'dev/vmap':>8s} {'dev GFLOP/s':>11s}")
    for r in training:
        print(f"{r['spec'] + ' K=' + str(r['models']):44s} {r['device']['steps_rate']:12,} {r['cpu']['steps_rate']:12,} "
              f"{r['vmap']['steps_rate']:12,} {r['device_over_cpu_steps']:7.2f}x {r['device_over_vmap_steps']:7.2f}x "
              f"{r['device']['steps_gflops']:11.1f}")
    print(f"  (device: {epochs} epochs, cpu: {cpu_epochs}, vmap: {epochs}; whole call incl. the record pass, "
          "device / cpu: " + ", ".join(f"{r['spec']} K={r['models']} {r['device_over_cpu_whole_call']:.2f}x"
                                        for r in training) + ")")
    print(f"{'kernels (Gram entries/s)':44s} {'device':>12s} {'cpu':>12s} {'':>12s} {'dev/cpu':>8s}")
    for r in kernels:
        print(f"{r['kernel'] + ' depth ' + str(r['depth']) + ' ' + r['dtype']:44s} "
              f"{r['device']['entries_per_second']:12,} {r['cpu']['entries_per_second']:12,} {'':12s} "
              f"{r['device_over_cpu']:7.2f}x   (rows: device {r['device']['rows']}, cpu {r['cpu']['rows']})")

    result = dict(
        benchmark="device",
        cpu_run=cpu_run,
        device=info,
        workload=dict(dataset="sklearn digits, x/16, 80% stratified train split seed 0", n_train=len(x),
                      n_test=len(x_te), batch_size=BATCH, optimizer=f"sgd lr={LR} momentum={MOMENTUM}",
                      epochs=method_epochs, models=list(model_counts), specs=list(SPECS), repeats=repeats,
                      statistic="best (minimum) of the repeats", fc_input="standard normal rows x 64, seed 0",
                      cntk_input="digits images 1 x 8 x 8, x/16", max_memory_mb=args.max_memory_mb),
        threads=threads,
        timing="wall: time.perf_counter (CUDA synchronized before reading it); cpu: time.process_time",
        methods=dict(device="fitscope on --device", cpu="the same fitscope calls with device='cpu'",
                     vmap="bench/train_throughput.py run_vmap_recipe on --device (training steps only)"),
        training=training,
        kernels=kernels,
    )
    if cpu_run:
        result["label"] = ("CPU run (--device cpu): 'device' is the CPU itself; a smoke test of the script, "
                           "not a GPU measurement")
    out = args.out if args.out is not None else (None if cpu_run else RESULTS)
    if out is None:
        print("CPU run: no results file written (give --out to write one, labeled as a CPU run)", file=sys.stderr)
        return result
    written = run.write(out, result)
    print(f"wrote {out}", file=sys.stderr)
    return written


if __name__ == "__main__":
    main()
