"""The robustness study on digits: its findings, its cost, and our PGD against ART's on the same models.

Measures, in one run (``bench/results/robust.json``):

1. **Our PGD against the Adversarial Robustness Toolbox.** ``mlp:256x2`` and
   ``cnn:16-32`` trained on digits (inputs in [0, 1]) with standard and with
   PGD training (L-inf, eps 0.1, 7 steps; the study's default training: Adam,
   lr 1e-3, batch 64, the study's epochs), then attacked on the 360 test rows
   by :func:`fitscope.robustness.pgd_attack` and by ART's
   ``ProjectedGradientDescentPyTorch`` (version 1.20, a ``PyTorchClassifier``
   with clip values (0, 1)) with the same settings: L-inf eps 0.1 and L2 eps
   0.5, 20 steps of ``2.5 eps / 20``, 2 random starts each (each row keeps a
   successful one). The figure: our robust accuracy minus ART's (at most +1
   point means ours is at least as strong), and the CPU seconds of each attack
   (ART's is the baseline, measured in the same run).
2. **The study.** ``fitscope robust --quick`` and, unless ``--skip-default``,
   with its defaults, each in a fresh subprocess: wall seconds, CPU seconds of
   the child (user + system), the load other processes put on the machine
   meanwhile (``CpuMonitor``), and the findings read back from the run's
   tables: robust accuracy of standard vs PGD training at eps 0.1 (the goal:
   at least 30 points more for the PGD-trained MLP), the width sweep's robust
   training loss against width (the goal: falling with width), and accuracy
   under the L0 attacks with and without the Fourier defense.

No FLOPs are counted: the figures are accuracies, losses and times. Every
figure is measured in this run; one torch thread throughout.

Usage: FITSCOPE_NUM_THREADS=1 python bench/robust.py [--skip-default] [--root runs/bench-robust]
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

RESULTS = Path(__file__).parent / "results" / "robust.json"
SPECS = ("mlp:256x2", "cnn:16-32")
ATTACKS = (("inf", 0.1), ("2", 0.5))
STEPS, RESTARTS = 20, 2


def _cpu_timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def art_cross_check() -> dict:
    """Robust accuracy of the same trained models under our PGD and ART's, at equal settings."""
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    from fitscope.data import load
    from fitscope.experiments.robust import EnsembleMember, make_config
    from fitscope.robustness import pgd_attack, predict_labels
    from fitscope.seeding import derive_seed
    from fitscope.train import TrainConfig, train_ensemble

    cfg = make_config()
    data = load("digits", seed=0)
    x, y = data.x_test.astype(np.float32), data.y_test.astype(np.int64)
    out = {}
    for spec in SPECS:
        for training, parts in (("standard", "ce"), ("pgd-inf", "pgd:eps=0.1,norm=inf,steps=7,low=0,high=1")):
            train = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer="adam", lr=cfg.lr,
                                record="none", regularizers=parts)
            res, train_cpu, _ = _cpu_timed(lambda: train_ensemble(
                spec, data.x_train, data.y_train, config=train, seeds=[derive_seed(0, "model", spec)],
                n_classes=10, keep_model=True))
            net = EnsembleMember(res.model).eval()
            clean = float((predict_labels(net, x) == y).mean())
            clf = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=x.shape[1:],
                                    nb_classes=10, clip_values=(0.0, 1.0))
            row = {"clean_acc": clean, "train_cpu_s": train_cpu}
            for norm, eps in ATTACKS:
                step = 2.5 * eps / STEPS
                ours, our_cpu, _ = _cpu_timed(lambda: pgd_attack(net, x, y, eps=eps, norm=norm, steps=STEPS,
                                                                 step_size=step, restarts=RESTARTS, low=0.0,
                                                                 high=1.0, seed=0))
                art = ProjectedGradientDescentPyTorch(clf, norm=np.inf if norm == "inf" else 2, eps=eps,
                                                      eps_step=step, max_iter=STEPS, num_random_init=RESTARTS,
                                                      batch_size=512, verbose=False)
                np.random.seed(0)  # ART draws its random starts from NumPy's global generator
                theirs, art_cpu, _ = _cpu_timed(lambda: art.generate(x=x, y=y))
                ours_acc = float((predict_labels(net, ours) == y).mean())
                art_acc = float((clf.predict(theirs).argmax(1) == y).mean())
                row[f"L{norm}"] = {"eps": eps, "ours": ours_acc, "art": art_acc,
                                   "ours_minus_art_points": 100 * (ours_acc - art_acc),
                                   "ours_cpu_s": our_cpu, "art_cpu_s": art_cpu, "art_over_ours_cpu": art_cpu / our_cpu}
                print(f"{spec} {training}: L{norm} eps {eps:g}: ours {100 * ours_acc:.1f}% vs ART "
                      f"{100 * art_acc:.1f}% ({100 * (ours_acc - art_acc):+.1f} points); CPU ours {our_cpu:.1f} s, "
                      f"ART {art_cpu:.1f} s ({art_cpu / our_cpu:.2f}x)", flush=True)
            out[f"{spec} {training}"] = row
    worst = max(v[f"L{n}"]["ours_minus_art_points"] for v in out.values() for n, _ in ATTACKS)
    print(f"largest (ours - ART) robust accuracy: {worst:+.1f} points (goal: at most +1)")
    return {"settings": {"steps": STEPS, "restarts": RESTARTS, "step_size": "2.5 eps / steps",
                         "attacks": [list(a) for a in ATTACKS], "art_version": _art_version()},
            "models": out, "largest_ours_minus_art_points": worst}


def _art_version() -> str:
    import art

    return art.__version__


def findings(out: Path) -> dict:
    """The study's findings read back from its tables."""
    models = pd.read_parquet(out / "models.parquet")
    widths = pd.read_parquet(out / "widths.parquet")
    l0 = pd.read_parquet(out / "l0.parquet")
    result: dict = {"models": models.to_dict("records"), "widths": widths.to_dict("records"),
                    "l0": l0.to_dict("records"), "pgd_gain_points": {}, "width_trend": {}}
    for spec in models.spec.unique():
        rows = models[models.spec == spec].set_index("training")
        if "pgd-inf" in rows.index:
            gain = 100 * (rows.loc["pgd-inf", "linf_acc"] - rows.loc["standard", "linf_acc"])
            result["pgd_gain_points"][spec] = float(gain)
            print(f"  {spec}: robust accuracy at eps 0.1 standard {100 * rows.loc['standard', 'linf_acc']:.1f}% -> "
                  f"PGD {100 * rows.loc['pgd-inf', 'linf_acc']:.1f}% ({gain:+.1f} points; goal +30 for the MLP)")
    for family in widths.family.unique():
        rows = widths[widths.family == family].sort_values("width")
        loss = rows.robust_train_loss.to_numpy()
        rho = float(pd.Series(rows.width.to_numpy()).corr(pd.Series(loss), method="spearman"))
        result["width_trend"][family] = {"widths": rows.width.tolist(), "robust_train_loss": loss.tolist(),
                                         "spearman": rho, "narrowest_over_widest": float(loss[0] / loss[-1])}
        print(f"  {family} sweep: robust training loss {np.round(loss, 3).tolist()} at widths "
              f"{rows.width.tolist()} (Spearman {rho:+.2f}; narrowest / widest {loss[0] / loss[-1]:.2f}x)")
    for attack in l0.attack.unique():
        part = l0[l0.attack == attack].pivot_table(index="budget", columns="defense", values="accuracy")
        print(f"  L0 {attack}: accuracy by budget (none / fourier): " + ", ".join(
            f"{b}: {100 * r.get('none', np.nan):.0f}/{100 * r.get('fourier', np.nan):.0f}%" for b, r in part.iterrows()))
    return result


def study(argv: list[str], out: Path) -> dict:
    """Run ``fitscope robust ARGV --out OUT`` in a fresh subprocess: wall, child CPU, load, findings."""
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMonitor() as mon:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fitscope", "robust", *argv, "--out", str(out)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"fitscope robust {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    print(f"fitscope robust {' '.join(argv)}: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(others kept {100 * (mon.other_load or 0):.0f}% of the CPUs busy)", flush=True)
    return {"argv": argv, "wall_s": wall, "cpu_s": cpu, "other_load": mon.other_load, "units": len(meta["units"]),
            "summary": meta.get("summary"), "findings": findings(out)}


def main_bench() -> None:
    """Measure everything of the module docstring and write :data:`RESULTS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-robust", help="where the study runs go (replaced)")
    parser.add_argument("--skip-default", action="store_true", help="run only --quick")
    args = parser.parse_args()
    run = start_run(__file__)
    torch.set_num_threads(1)
    root = Path(args.root)
    record: dict = {"benchmark": "robust", "art": art_cross_check()}
    record["quick"] = study(["--quick"], root / "quick")
    if not args.skip_default:
        record["default"] = study([], root / "default")
    run.write(RESULTS, record)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_bench()
