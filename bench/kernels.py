"""Infinite-width kernel Gram matrices: fitscope against a naive per-pair loop and neural-tangents.

    python bench/kernels.py [--only fc|cntk] [--skip-nt] [--skip-naive] [--n-images 500] [--quick]

Workloads (float64 unless --dtype float32):

- (a) FC NTK Gram of mnist1d train: 4000 x 40 (flattened 1 x 40 signals,
  ``fitscope.data.load("mnist1d")``), depth 5, with ``fitscope.kernels.ntk``
  (arch="fc"); falls back to ``fitscope.kernels.fc.fc_kernel`` when api.py is missing.
- (b) CNTK-GAP Gram of the first 500 scikit-learn digits (8 x 8, 1 channel,
  pixel / 16), depth 4, 3 x 3 filters, with ``fitscope.kernels.conv.cntk``.

Baselines measured in the same run:

- (c) naive per-pair loop on a small subset, scaled up to the unique entries
  ``N (N + 1) / 2`` of the Gram matrix (a naive loop may use symmetry too).
  FC: the recursion in plain Python (``math`` module) per pair. CNTK: one
  pair at a time with full ``P x P`` position-pair matrices in torch (the
  structure of Arora et al.'s reference CNTK code), no blocking over pairs.
- (d) neural-tangents 0.6.5 (jax 0.4.30, ``jax_enable_x64``) in a subprocess
  of ``/work/main/.venv-nt/bin/python`` (skipped with a message when that venv
  does not exist; see the Makefile target ``bench-nt-venv``). Same
  architecture: ``stax.serial([Dense(512 | Conv(1, (3, 3), 'SAME'), W_std=sqrt 2,
  b_std=None), Relu()] * depth, [GlobalAvgPool()], Dense(1, W_std=1))``, which
  is our kernel divided by the input dimension (D = 40 for FC, C = 1 for
  conv; neural-tangents averages the input covariance over features, we
  sum). The ratio ours / nt on the first few inputs is printed and must be
  that constant. Its time is the whole batched ``kernel_fn`` call (CNTK:
  ``nt.batch`` with ``--nt-batch`` rows, including jit compilation),
  measured inside the subprocess.

Peak: the best fp64 (fp32 with --dtype float32) GFLOP/s of square
``torch.mm`` (1024, 2048), measured in this run with torch's thread count.
FLOPs counted for our kernels (nominal, documented, not hardware counters):

- FC: ``2 N^2 D`` for the Gram matmul plus ``N (N + 1) / 2 * depth * 20`` for
  the recursion (the closed-form ReLU step and NTK update counted as 20
  elementwise operations per entry and layer, each transcendental as 1).
- CNTK-GAP: per computed pair, ``2 C P^2`` for the input covariance, and per
  layer ``E * (2 * 2 (k - 1) + 2 + 2 + 19 + 2)`` with ``E = P^2`` entries: window
  sums of Sigma and Theta along two axes with a scale each, the ReLU step
  (19 elementwise torch ops in ``relu_step``, transcendentals as 1) and the
  NTK update; plus ``E`` for the readout. Pairs computed = the unique
  ``N (N + 1) / 2`` (diagonal blocks compute both orders; not counted).

The fraction of matmul peak is therefore small by construction: these
kernels are elementwise and transcendental-bound (arccos, sin, cos), not
matmul-bound.

Machine load: every timed section runs inside ``CpuMonitor``; ``other_load``
(fraction of all CPUs used by OTHER processes during it) and the load
average are printed and stored. ``--wait-quiet S`` waits up to S seconds for
a quiet machine first.

Quoted, not measured: the neural-tangents times the issue states for an
earlier quiet run (:data:`QUOTED_NT`) are printed as quoted and stored under
the result file's ``"quoted"`` key with their source, never beside the
measurements.

Writes ``bench/results/kernels.json`` (atomic, through ``bench/_results.py``; ``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import CpuMonitor, matmul_peak, wait_for_quiet_cpu  # noqa: E402
from _results import start_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "kernels.json"
NT_PYTHON = ROOT / ".venv-nt" / "bin" / "python"
RELU_STEP_OPS = 19  # elementwise torch ops in fitscope.kernels.relu.relu_step
# Quoted, not measured here: what issue 5 states neural-tangents took "on this machine" in an earlier quiet run.
QUOTED_NT = dict(fc_seconds=2.2, cntk_gap_seconds=210.0, cntk_gap_ms_per_entry=0.84)
QUOTED_NT_SOURCE = ("issue 5 (bench/kernels.py item): neural-tangents 0.6.5, float64, an earlier quiet run on the "
                    "development machine; quoted, not measured by this script and not reproduced by it")


# --------------------------------------------------------------------------- data


def mnist1d_train() -> np.ndarray:
    """mnist1d train signals, flattened to (4000, 40) float64."""
    from fitscope.data import load

    d = load("mnist1d", seed=0)
    return np.asarray(d.x_train, dtype=np.float64).reshape(len(d.x_train), -1)


def digits_images(n: int) -> np.ndarray:
    """The first ``n`` scikit-learn digits as (n, 1, 8, 8) float64 in [0, 1]."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:n] / 16.0).astype(np.float64)[:, None]


# --------------------------------------------------------------------------- ours


def fc_gram(x: np.ndarray, depth: int, dtype: str, max_memory_mb: float) -> np.ndarray:
    try:
        from fitscope.kernels import ntk
    except ImportError:
        ntk = None
    if ntk is not None:
        return ntk(x, arch="fc", depth=depth, dtype=dtype, max_memory_mb=max_memory_mb)
    from fitscope.kernels.fc import fc_kernel

    return fc_kernel(x, None, depth=depth, fixed=0, kind="ntk", dtype=getattr(torch, dtype),
                     device=torch.device("cpu"), max_memory_mb=max_memory_mb)


def cntk_gram(x: np.ndarray, depth: int, dtype: str, max_memory_mb: float, max_block: int | None) -> np.ndarray:
    from fitscope.kernels.conv import cntk

    return cntk(x, depth=depth, pool="gap", dtype=dtype, max_memory_mb=max_memory_mb, max_block=max_block)


def timed(fn, repeats: int) -> tuple[float, object, dict]:
    """Best wall seconds of ``repeats`` calls, the last result, and the machine load during them."""
    best, out = math.inf, None
    la0 = os.getloadavg()
    with CpuMonitor() as mon:
        cpu0 = time.process_time()
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / repeats
    load = dict(other_load=None if mon.other_load is None else round(mon.other_load, 3),
                loadavg_before=round(la0[0], 2), loadavg_after=round(os.getloadavg()[0], 2), cpu_seconds=round(cpu, 3))
    return best, out, load


# --------------------------------------------------------------------------- naive baselines


def naive_fc_pair(u: np.ndarray, v: np.ndarray, depth: int) -> float:
    """The FC NTK of one pair in plain Python: the METHODS recursion, scalar by scalar."""
    s = float(np.dot(u, v))
    su, sv = float(np.dot(u, u)), float(np.dot(v, v))
    theta = s
    for _ in range(depth):
        norm = math.sqrt(su * sv)
        rho = max(-1.0, min(1.0, s / norm)) if norm > 0 else 0.0
        t = math.acos(rho)
        s = norm * (math.sin(t) + (math.pi - t) * math.cos(t)) / math.pi
        theta = theta * (math.pi - t) / math.pi + s
    return theta


def naive_cntk_pair(a: torch.Tensor, b: torch.Tensor, depth: int, k: int = 3) -> float:
    """CNTK-GAP of one pair, ``P x P`` matrices in torch, one pair at a time (like Arora et al.'s CNTK.py)."""
    from fitscope.kernels.relu import relu_step

    c, h, w = a.shape
    p = h * w

    def window(m):  # m: (H, W, H, W); mean over aligned 3x3 offsets with zero padding
        padded = torch.nn.functional.pad(m, (1, 1, 1, 1, 1, 1, 1, 1))
        out = torch.zeros_like(m)
        for di in range(k):
            for dj in range(k):
                out += padded[di:di + h, dj:dj + w, di:di + h, dj:dj + w]
        return out / (k * k)

    def var_window(v):
        return torch.nn.functional.avg_pool2d(v[None, None], k, 1, k // 2, count_include_pad=True)[0, 0]

    sab = (a.reshape(c, p).T @ b.reshape(c, p)).reshape(h, w, h, w)
    va, vb = (a * a).sum(0), (b * b).sum(0)
    theta = sab.clone()
    for _ in range(depth):
        va, vb = var_window(va), var_window(vb)
        lam, th = window(sab), window(theta)
        sab, dot = relu_step(lam, va[:, :, None, None], vb[None, None])
        theta = th * dot + sab
    return float(theta.mean())


def time_naive(kind: str, x: np.ndarray, depth: int, pairs: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(pairs, 2))
    if kind == "fc":
        fn = lambda: [naive_fc_pair(x[i], x[j], depth) for i, j in idx]  # noqa: E731
    else:
        t = torch.as_tensor(x)
        fn = lambda: [naive_cntk_pair(t[i], t[j], depth) for i, j in idx]  # noqa: E731
    sec, vals, load = timed(fn, 1)
    n = len(x)
    unique = n * (n + 1) // 2
    return dict(pairs_timed=pairs, seconds_measured=sec, seconds_per_pair=sec / pairs,
                seconds=sec / pairs * unique, scaled_to_entries=unique, load=load,
                sample=[(int(i), int(j), float(v)) for (i, j), v in zip(idx[:5], vals[:5])])


# --------------------------------------------------------------------------- neural-tangents

NT_SCRIPT = r"""
import json, resource, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import neural_tangents as nt
from neural_tangents import stax
arch, depth, batch, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
x = np.load(path)
layers = []
for _ in range(depth):
    if arch == "fc":
        layers.append(stax.Dense(512, W_std=np.sqrt(2.0), b_std=None))
    else:
        layers.append(stax.Conv(1, (3, 3), padding="SAME", W_std=np.sqrt(2.0), b_std=None))
    layers.append(stax.Relu())
if arch != "fc":
    layers.append(stax.GlobalAvgPool())
    x = np.moveaxis(x, 1, -1)  # NCHW -> NHWC
layers.append(stax.Dense(1, W_std=1.0, b_std=None))
_, _, kernel_fn = stax.serial(*layers)
small = np.asarray(kernel_fn(x[:6], None, "ntk"))
if batch > 0:
    kernel_fn = nt.batch(kernel_fn, batch_size=batch, store_on_device=False)
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
k = np.asarray(kernel_fn(x, None, "ntk"))
sec = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
np.save(path + ".out.npy", k)
print(json.dumps(dict(seconds=sec, cpu_seconds=cpu, small=small.tolist(), jax=jax.__version__, nt=nt.__version__,
                      x64=bool(jax.config.jax_enable_x64), devices=str(jax.devices()))))
"""


def run_nt(arch: str, x: np.ndarray, depth: int, batch: int) -> dict:
    if not NT_PYTHON.exists():
        return dict(skipped=f"{NT_PYTHON} not found (make bench-nt-venv)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npy")
        np.save(path, x)
        la0 = os.getloadavg()
        with CpuMonitor() as mon:
            proc = subprocess.run([str(NT_PYTHON), "-c", NT_SCRIPT, arch, str(depth), str(batch), path],
                                  capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if proc.returncode != 0:
            return dict(skipped=f"neural-tangents failed: {proc.stderr.strip().splitlines()[-1:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["kernel"] = np.load(path + ".out.npy")
    out["load"] = dict(other_load=None if mon.other_load is None else round(mon.other_load, 3),
                       loadavg_before=round(la0[0], 2), loadavg_after=round(os.getloadavg()[0], 2))
    return out


# --------------------------------------------------------------------------- FLOPs


def fc_flops(n: int, d: int, depth: int) -> float:
    return 2.0 * n * n * d + n * (n + 1) / 2 * depth * 20


def cntk_gap_flops(n: int, c: int, p: int, depth: int, k: int = 3) -> float:
    pairs = n * (n + 1) / 2
    e = p * p
    per_layer = e * (2 * 2 * (k - 1) + 2 + 2 + RELU_STEP_OPS + 2)
    return pairs * (2.0 * c * e + depth * per_layer + e)


# --------------------------------------------------------------------------- main


def bench_one(name: str, *, x: np.ndarray, ours, nt_arch: str, depth: int, flops: float, peak: float,
              scale_const: float, args, naive_kind: str, naive_pairs: int) -> dict:
    n = len(x)
    entries = n * n
    print(f"\n== {name}: {x.shape}, depth {depth}, {entries} entries ==", flush=True)
    sec, k, load = timed(ours, args.repeats)
    print(f"  fitscope: {sec:.3f} s (other load {load['other_load']}, loadavg {load['loadavg_before']}"
          f" -> {load['loadavg_after']}, cpu {load['cpu_seconds']} s)", flush=True)
    res = dict(shape=list(x.shape), depth=depth, entries=entries,
               fitscope=dict(seconds=sec, seconds_per_entry=sec / entries, gflops=flops / sec / 1e9,
                             fraction_of_peak=flops / sec / 1e9 / peak, flops_counted=flops, load=load,
                             symmetric=bool(np.array_equal(k, k.T)), finite=bool(np.isfinite(k).all())))
    if not args.skip_naive:
        nv = time_naive(naive_kind, x, depth, naive_pairs)
        res["naive"] = nv
        nv["naive_over_fitscope"] = nv["seconds"] / sec
        print(f"  naive ({naive_pairs} pairs timed, scaled to {nv['scaled_to_entries']}): {nv['seconds']:.1f} s", flush=True)
        errs = [abs(v - k[i, j]) / max(abs(k[i, j]), 1e-300) for i, j, v in nv["sample"]]
        res["naive"]["max_rel_diff_vs_fitscope"] = max(errs)
    if not args.skip_nt:
        batch = max(b for b in range(1, min(args.nt_batch, n) + 1) if n % b == 0)  # nt.batch needs a divisor of n
        nt_res = run_nt(nt_arch, x, depth, batch if nt_arch == "conv" else 0)
        if "skipped" in nt_res:
            print(f"  neural-tangents: skipped ({nt_res['skipped']})", flush=True)
            res["neural_tangents"] = nt_res
        else:
            ref = nt_res.pop("kernel")
            small = np.asarray(nt_res.pop("small"))
            ratio_small = k[:6, :6] / small
            ratio_all = k / ref
            nt_res.update(seconds_per_entry=nt_res["seconds"] / entries, nt_over_fitscope=nt_res["seconds"] / sec,
                          ratio_ours_over_nt_min=float(ratio_all.min()), ratio_ours_over_nt_max=float(ratio_all.max()),
                          ratio_small_min=float(ratio_small.min()), ratio_small_max=float(ratio_small.max()),
                          expected_ratio=scale_const)
            res["neural_tangents"] = nt_res
            print(f"  neural-tangents: {nt_res['seconds']:.3f} s (cpu {nt_res['cpu_seconds']:.1f} s, other load "
                  f"{nt_res['load']['other_load']}); ours/nt kernel ratio in [{ratio_all.min():.10g}, "
                  f"{ratio_all.max():.10g}] (expected {scale_const:g})", flush=True)
    return res


def print_table(results: dict, peak: float, dtype: str) -> None:
    print(f"\n{'workload':<22}{'method':<18}{'seconds':>10}{'s/entry':>11}{'vs nt':>8}{'vs naive':>10}{'% peak':>8}")
    for name, r in results.items():
        nt_s = r.get("neural_tangents", {}).get("seconds")
        nv_s = r.get("naive", {}).get("seconds")
        rows = [("fitscope", r["fitscope"]["seconds"], r["fitscope"]["fraction_of_peak"] * 100)]
        if nv_s:
            rows.append(("naive (scaled)", nv_s, None))
        if nt_s:
            rows.append(("neural-tangents", nt_s, None))
        for method, s, pk in rows:
            vs_nt = f"{nt_s / s:.2f}x" if nt_s else "-"
            vs_nv = f"{nv_s / s:.1f}x" if nv_s else "-"
            pks = f"{pk:.2f}" if pk is not None else "-"
            print(f"{name:<22}{method:<18}{s:>10.3f}{s / r['entries'] * 1e3:>9.4f}ms{vs_nt:>8}{vs_nv:>10}{pks:>8}")
    print(f"('vs nt' / 'vs naive' = that method's time / this row's time; peak = {peak:.1f} GFLOP/s {dtype} matmul)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["fc", "cntk"], help="run one workload")
    ap.add_argument("--skip-nt", action="store_true", help="do not run neural-tangents")
    ap.add_argument("--skip-naive", action="store_true", help="do not time the naive per-pair loop")
    ap.add_argument("--n-images", type=int, default=500, help="digits images for the CNTK Gram (default 500)")
    ap.add_argument("--n-fc", type=int, default=4000, help="mnist1d rows for the FC Gram (default all 4000)")
    ap.add_argument("--fc-depth", type=int, default=5)
    ap.add_argument("--cntk-depth", type=int, default=4)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--repeats", type=int, default=1, help="best of R timed runs of ours")
    ap.add_argument("--max-memory-mb", type=float, default=1024)
    ap.add_argument("--max-block", type=int, default=None, help="cap on the CNTK block side")
    ap.add_argument("--nt-batch", type=int, default=25,
                    help="nt.batch size for the neural-tangents CNTK (the largest divisor of N up to this)")
    ap.add_argument("--naive-pairs-fc", type=int, default=20000)
    ap.add_argument("--naive-pairs-cntk", type=int, default=40)
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to S seconds for a quiet machine")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test): 1000 FC rows, 60 images")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    run = start_run(__file__, argv)
    if args.quick:
        args.n_fc, args.n_images = min(args.n_fc, 1000), min(args.n_images, 60)
        args.naive_pairs_fc, args.naive_pairs_cntk = min(args.naive_pairs_fc, 2000), min(args.naive_pairs_cntk, 10)

    quiet = wait_for_quiet_cpu(timeout=args.wait_quiet) if args.wait_quiet > 0 else None
    tdtype = getattr(torch, args.dtype)
    with CpuMonitor() as mon:
        peak = matmul_peak(dtype=tdtype)
    print(f"{args.dtype} matmul peak: {peak['gflops']:.1f} GFLOP/s ({peak['threads']} threads, other load during "
          f"it {None if mon.other_load is None else round(mon.other_load, 2)})", flush=True)
    results = {}
    if args.only in (None, "fc"):
        x = mnist1d_train()[: args.n_fc]
        results["fc_ntk_mnist1d"] = bench_one(
            "FC NTK Gram, mnist1d train", x=x, ours=lambda: fc_gram(x, args.fc_depth, args.dtype, args.max_memory_mb),
            nt_arch="fc", depth=args.fc_depth, flops=fc_flops(len(x), x.shape[1], args.fc_depth),
            peak=peak["gflops"], scale_const=float(x.shape[1]), args=args, naive_kind="fc",
            naive_pairs=args.naive_pairs_fc)
    if args.only in (None, "cntk"):
        x = digits_images(args.n_images)
        results["cntk_gap_digits"] = bench_one(
            "CNTK-GAP Gram, digits", x=x,
            ours=lambda: cntk_gram(x, args.cntk_depth, args.dtype, args.max_memory_mb, args.max_block),
            nt_arch="conv", depth=args.cntk_depth, flops=cntk_gap_flops(len(x), 1, 64, args.cntk_depth),
            peak=peak["gflops"], scale_const=1.0, args=args, naive_kind="cntk", naive_pairs=args.naive_pairs_cntk)
    print_table(results, peak["gflops"], args.dtype)
    print(f"quoted, not measured here ({QUOTED_NT_SOURCE}): neural-tangents FC Gram {QUOTED_NT['fc_seconds']} s, "
          f"CNTK-GAP Gram {QUOTED_NT['cntk_gap_seconds']} s ({QUOTED_NT['cntk_gap_ms_per_entry']} ms/entry)")
    record = dict(
        benchmark="kernels", dtype=args.dtype, quiet_wait_load=quiet,
        peak=dict(peak, other_load=mon.other_load), results=results,
    )
    run.quote("neural_tangents_quiet_run", QUOTED_NT, source=QUOTED_NT_SOURCE)
    run.write(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
