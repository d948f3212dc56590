"""How far one machine goes: the audit's wall time, CPU time and peak memory against n and the number of models.

Each run is ``fitscope audit`` end to end (training, every estimator, the report) in a fresh child process,
on a data file this script writes once per size:

- ``digits784``: scikit-learn's 8x8 digits upsampled to 28x28 (bilinear, ``scipy.ndimage.zoom``) and
  moved by a random shift of up to 2 pixels in each direction per row (plus 2% pixel noise), so any n
  rows of MNIST's shape (784 inputs, 10 classes) come from 1,797 digits;
- ``mnist1d``: the ``mnist1d`` package's generator with ``num_samples`` = n + m (40 inputs, 10 classes).

Every audit: ``mlp:256x1``, K memorization models at ratio 0.7 and no other C-score ratio (so K models
in all), 20 epochs, 10% uniform label noise (so the label-issue AUROC is measured too), ``--chunk
min(K, 50)``, ``--threads 2``, the default scikit-learn families (``--oof-families auto``: logistic
regression alone above 256 features or 500,000 input entries). Test rows: m = min(10,000, max(200, n / 6)).

Measured per run (from the child, ``resource.getrusage(RUSAGE_SELF)`` at its end): wall seconds, CPU
seconds (user + system: both threads), peak resident memory (``ru_maxrss``), and the run's own
timings (prepare / train / estimate / report) from ``run.json``.

Fitted per data shape on the measured runs: ``wall = c * n^a * K^b`` (least squares in logs), and from it
the largest n whose audit finishes in one hour with K = 100 and K = 1,000 on this machine. The projection
to a 100-core Ray cluster assumes the units (``--chunk`` models each) spread over 50 tasks of 2 threads
at this machine's per-core speed, while prepare, estimate and report stay on one machine:
``prepare + train * 2 / 100 + estimate + report`` (a lower bound: it ignores moving the data to the nodes).

A run whose projected wall time (scaled from the nearest measured run by n * K) exceeds what is left of
``--budget-seconds`` is not run; it is recorded with its projection under ``skipped`` -- except the
issue's target, 60,000 x 784 inputs with 100 models (:data:`TARGET`), which always runs. The results
file is rewritten after every run, so a run cut short keeps what it measured.

With ``--reuse``, the grid points already measured in the results file are kept (each marked as reused,
with the commit and time of the run that measured it) and only the others are run.

Usage: python bench/audit_scale.py [--grid default|quick] [--budget-seconds 5400] [--reuse]
Writes bench/results/audit_scale.json and bench/results/audit_scale.png (quick grid: audit_scale_quick.*).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODEL = "mlp:256x1"
EPOCHS = 20
NOISE = 0.1
THREADS = 2
#: The issue's target: an audit of 60,000 x 784 inputs with 100 models of mlp:256x1 (peak memory at most 8 GiB).
TARGET = ("digits784", 60000, 100)

GRIDS = {
    "default": [("digits784", 1000, 100), ("mnist1d", 1000, 100), ("digits784", 5000, 100),
                ("digits784", 60000, 100), ("mnist1d", 1000, 1000), ("mnist1d", 5000, 100),
                ("digits784", 20000, 100), ("mnist1d", 20000, 100), ("digits784", 1000, 1000),
                ("mnist1d", 60000, 100), ("mnist1d", 5000, 1000), ("digits784", 5000, 1000)],
    "quick": [("digits784", 500, 16), ("digits784", 1000, 16), ("digits784", 1000, 32), ("mnist1d", 500, 16)],
}

# The child: run the CLI in-process, then report its own resource use (peak RSS is per process).
CHILD = """
import json, resource, sys, time
MARK = "audit_scale usage: "
t0 = time.perf_counter()
from fitscope.cli import main
code = 0
try:
    main(sys.argv[2:])
except SystemExit as stop:
    code = stop.code or 0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(MARK + json.dumps(dict(code=code, wall=time.perf_counter() - t0, cpu=usage.ru_utime + usage.ru_stime,
                             peak_rss_bytes=usage.ru_maxrss * 1024)), flush=True)
"""
# The line of the child's stdout that carries its measurements.
MARK = "audit_scale usage: "


def test_rows(n: int) -> int:
    """Test rows for n training rows: n / 6 (MNIST's 60,000 / 10,000), at least 200, at most 10,000."""
    return int(min(10_000, max(200, n // 6)))


def digits784(total: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``total`` rows of 28x28 digits: upsampled 8x8 digits, each shifted by up to 2 pixels, 2% pixel noise."""
    from scipy.ndimage import shift, zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    base = np.stack([zoom(img / 16.0, 3.5, order=1) for img in digits.images]).astype(np.float32)  # (1797, 28, 28)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(base), total)
    moves = rng.integers(-2, 3, (total, 2))
    x = np.empty((total, 1, 28, 28), np.float32)
    for i in range(total):  # scipy shifts one image at a time
        x[i, 0] = shift(base[pick[i]], moves[i], order=0, mode="constant")
    x += rng.normal(0.0, 0.02, x.shape).astype(np.float32)
    np.clip(x, 0.0, 1.0, out=x)
    return x, digits.target[pick].astype(np.int64)


def mnist1d(total: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``total`` rows of the mnist1d generator (its default arguments, ``num_samples=total``)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = total
    args.seed = seed
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)[:, None, :]
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x[:total], y[:total]


MAKERS = {"digits784": digits784, "mnist1d": mnist1d}


def write_data(shape: str, n: int, folder: Path) -> Path:
    """The ``.npz`` of one size (``x_train, y_train, x_test, y_test``), made once."""
    path = folder / f"{shape}-{n}.npz"
    if not path.exists():
        m = test_rows(n)
        x, y = MAKERS[shape](n + m, seed=n)
        np.savez(path, x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:])
    return path


def run_audit(shape: str, n: int, k: int, data: Path, work: Path) -> dict:
    """One audit in a child process: its measurements and the run's timings and summary."""
    out = work / f"run-{shape}-{n}-{k}"
    argv = ["audit", "--data", str(data), "--model", MODEL, "--models", str(k), "--ratio", "0.7",
            "--cscore-ratios", "0.7", "--epochs", str(EPOCHS), "--noise", str(NOISE), "--chunk", str(min(k, 50)),
            "--threads", str(THREADS), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, "-", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"audit {shape} n={n} K={k} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    usage = json.loads(lines[-1].removeprefix(MARK))
    if usage["code"] not in (0, None):
        raise SystemExit(f"audit {shape} n={n} K={k} exited {usage['code']}:\n{proc.stderr[-2000:]}")
    meta = json.loads((out / "run.json").read_text())
    summary = meta.get("summary", {})
    return dict(shape=shape, n=n, m=test_rows(n), models=k, wall_seconds=round(wall, 2),
                cpu_seconds=round(usage["cpu"], 2), peak_rss_gib=round(usage["peak_rss_bytes"] / 2**30, 3),
                timings={p: round(float(s), 2) for p, s in meta.get("timings", {}).items()},
                label_issue_auroc=summary.get("label-issue AUROC"), test_accuracy=summary.get("test accuracy"),
                families=summary.get("out-of-fold families"), load_after=list(os.getloadavg()))


def fit_growth(runs: list[dict], key: str = "wall_seconds") -> dict | None:
    """``time = c * n^a * K^b`` by least squares in logs; with one K only, ``time = c * n^a`` at that K.

    None with fewer than 2 runs or no spread in n (and, for the two-exponent fit, fewer than 3 runs).
    ``key``: ``"wall_seconds"`` or ``"cpu_seconds"`` (on a shared, noisy machine the CPU time is the steadier
    measure of the work; one hour of wall time on 2 cores is then about 2 hours of CPU time at most).
    """
    if len(runs) < 2 or len({r["n"] for r in runs}) < 2:
        return None
    models = sorted({r["models"] for r in runs})
    both = len(models) >= 2 and len(runs) >= 3
    cols = [np.ones(len(runs)), [math.log(r["n"]) for r in runs]]
    if both:
        cols.append([math.log(r["models"]) for r in runs])
    a = np.column_stack(cols)
    t = np.log([r[key] for r in runs])
    coef, *_ = np.linalg.lstsq(a, t, rcond=None)
    c, alpha = float(math.exp(coef[0])), float(coef[1])
    beta = float(coef[2]) if both else None
    fitted = a @ coef
    hour = 3600.0 if key == "wall_seconds" else 3600.0 * THREADS
    if both:
        largest = {str(k): int((hour / (c * k ** beta)) ** (1.0 / alpha)) for k in (100, 1000)}
    else:  # c already holds the one K's factor
        largest = {str(models[0]): int((hour / c) ** (1.0 / alpha))}
    return dict(measure=key, c=c, n_exponent=alpha, models_exponent=beta, models_fitted=models,
                max_abs_log_error=float(np.max(np.abs(fitted - t))), largest_n_in_one_hour=largest)


def cluster_projection(run: dict, cores: int = 100) -> float:
    """Projected wall seconds on ``cores`` cores: the training spread over tasks of THREADS threads, the rest as here."""
    t = run["timings"]
    rest = sum(v for p, v in t.items() if p != "train")
    return rest + t.get("train", 0.0) * THREADS / cores


def project(done: list[dict], shape: str, n: int, k: int) -> float | None:
    """Wall seconds of a run not yet made, scaled by n * K from the measured run of the same shape nearest in n * K."""
    same = [r for r in done if r["shape"] == shape]
    if not same:
        return None
    ref = min(same, key=lambda r: abs(math.log(r["n"] * r["models"] / (n * k))))
    return ref["wall_seconds"] * (n * k) / (ref["n"] * ref["models"])


def plot(runs: list[dict], fits: dict, path: Path) -> None:
    """Wall time and peak memory against n, one line per (shape, K)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({(r["shape"], r["models"]) for r in runs}):
        pts = sorted((r for r in runs if (r["shape"], r["models"]) == key), key=lambda r: r["n"])
        label = f"{key[0]}, K={key[1]}"
        axes[0].plot([r["n"] for r in pts], [r["wall_seconds"] / 60 for r in pts], "o-", label=label)
        axes[1].plot([r["n"] for r in pts], [r["peak_rss_gib"] for r in pts], "o-", label=label)
    axes[0].axhline(60, color="gray", ls="--", lw=0.8)
    axes[0].text(axes[0].get_xlim()[0], 62, "one hour", fontsize=8, color="gray")
    axes[0].set(xscale="log", yscale="log", xlabel="training rows n", ylabel="wall minutes (2 cores)",
                title="Audit time")
    axes[1].axhline(8, color="gray", ls="--", lw=0.8)
    axes[1].set(xscale="log", xlabel="training rows n", ylabel="peak memory (GiB)", title="Audit peak memory")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def write_results(run, grid: str, done: list[dict], skipped: list[dict], t0: float) -> dict:
    """Fit the growth and (re)write the results file and its plot from the runs so far; return the fits."""
    fits = {shape: fit_growth([r for r in done if r["shape"] == shape]) for shape in MAKERS}
    fits.update({f"{shape} (CPU time)": fit_growth([r for r in done if r["shape"] == shape], "cpu_seconds")
                 for shape in MAKERS})
    name = "audit_scale" if grid == "default" else f"audit_scale_{grid}"
    target = next((r for r in done if (r["shape"], r["n"], r["models"]) == TARGET), None)
    record = dict(
        benchmark="audit_scale", grid=grid, model=MODEL, epochs=EPOCHS, noise=NOISE, threads=THREADS,
        setting="K memorization models at ratio 0.7, no other C-score ratio, --chunk min(K, 50), "
                "--oof-families auto",
        target=dict(case=list(TARGET), measured=target is not None,
                    peak_rss_gib=None if target is None else target["peak_rss_gib"],
                    wall_seconds=None if target is None else target["wall_seconds"],
                    peak_at_most_8_gib=None if target is None else target["peak_rss_gib"] <= 8.0),
        runs=done, skipped=skipped, growth=fits,
        cluster_assumption="prepare + estimate + report as here, training spread over 100 cores in tasks of "
                           f"{THREADS} threads at this machine's per-core speed (a lower bound)",
        total_seconds=round(time.perf_counter() - t0, 1),
    )
    run.write(RESULTS / f"{name}.json", record)
    plot(done, fits, RESULTS / f"{name}.png")
    return fits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="default", choices=sorted(GRIDS))
    parser.add_argument("--budget-seconds", type=float, default=5400.0,
                        help="skip runs whose projected wall time exceeds what is left of this")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs already in the results file and run only the grid's other points")
    parser.add_argument("--work", default=None, help="folder for the data files and runs (default: a temporary one)")
    args = parser.parse_args(argv)
    run = start_run(__file__, argv)
    t0 = time.perf_counter()
    done: list[dict] = []
    skipped: list[dict] = []
    fits: dict = {}
    name = "audit_scale" if args.grid == "default" else f"audit_scale_{args.grid}"
    if args.reuse and (RESULTS / f"{name}.json").exists():
        source = RESULTS / f"{name}.json"
        for old in json.loads(source.read_text()).get("runs", []):
            if (old["shape"], old["n"], old["models"]) in GRIDS[args.grid]:
                done.append(run.reuse(f"runs/{old['shape']}-{old['n']}-{old['models']}", old, source=source))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for shape, n, k in GRIDS[args.grid]:
            if any((r["shape"], r["n"], r["models"]) == (shape, n, k) for r in done):
                continue
            left = args.budget_seconds - (time.perf_counter() - t0)
            guess = project(done, shape, n, k)
            if guess is not None and guess > left and (shape, n, k) != TARGET:
                skipped.append(dict(shape=shape, n=n, models=k, projected_wall_seconds=round(guess, 1),
                                    seconds_left=round(left, 1)))
                print(f"skip {shape} n={n} K={k}: projected {guess:.0f} s > {left:.0f} s left", flush=True)
                continue
            data = write_data(shape, n, work)
            r = run_audit(shape, n, k, data, work)
            r["projected_100_cores_seconds"] = round(cluster_projection(r), 1)
            done.append(r)
            print(f"{shape} n={n} K={k}: wall {r['wall_seconds']:.0f} s, CPU {r['cpu_seconds']:.0f} s, "
                  f"peak {r['peak_rss_gib']:.2f} GiB, AUROC {r['label_issue_auroc']}, timings {r['timings']}",
                  flush=True)
            fits = write_results(run, args.grid, done, skipped, t0)
    print(json.dumps(fits, indent=1))
    print(f"wrote {RESULTS / (name + '.json')}")


if __name__ == "__main__":
    sys.exit(main())
