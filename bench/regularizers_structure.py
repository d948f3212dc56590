"""Structural regularizers on digits: channel pruning by polarization vs network slimming, and soft orthogonality.

    python bench/regularizers_structure.py [--epochs 30] [--threads 1] [--quick] [--out PATH]

Data: scikit-learn's digits through ``fitscope.data.load("digits", seed=0)``: 1437 training rows and 360
test rows, inputs as (1, 8, 8) images in [0, 1]. A validation split (20% of the training rows, stratified,
seed 0: 1149 fit / 288 validation rows) chooses every hyperparameter; the test rows are only reported.

Every run trains K = 3 models at once (seeds 0, 1, 2) with ``train_ensemble`` on the fit rows: batch 64, SGD
(lr 0.05, momentum 0.9), cosine schedule, ``--epochs`` epochs (default 30). Accuracies are of the final
(kept) models on the validation and test rows, per model; the figures are means over the 3 models.

1. Polarization (issue figure: "remove at least 50% of the channels of a CNN on digits in one training pass with
   at most 1 point of accuracy lost, and compare with plain L1 at the same pruning rate"), ``cnn:32-64``
   (96 BN channels per model):

   - ``ce``: the baseline (plain cross-entropy);
   - ``polarize:lambda=L`` (other hyperparameters at their defaults; L in a small grid), then pruned to its
     gates: :func:`~fitscope.train.regularizers.pruning.prune_channels` with threshold 0 (the gates the
     training switched off); accuracy before and after pruning. L chosen on validation: the largest pruned
     fraction whose validation accuracy after pruning is within 1 point of ``ce``'s (else the best one);
   - ``l1bn:lambda=L`` (network slimming) trained the same way, each model then pruned at the same rate as the
     chosen polarize model of the same seed, two ways: Liu et al.'s global ranking of ``|gamma|``
     (``prune_channels(fraction=...)``) and the same number of channels in every layer as polarize removed
     (the same sub-network shape); L chosen on validation (best accuracy after the global pruning);
   - one pass at a user-set sparsity: ``polarize:lambda=L,sparsity=0.5`` and ``l1bn:lambda=L,sparsity=0.5``
     (half of every BN layer's channels pruned at 75% of the epochs, the rest of the epochs train the
     sub-network); test accuracy as the run ends.

2. Orthogonality (issue figure: "the orthogonality error falls at least tenfold with at most 0.5 points of
   accuracy change"): ``ortho:lambda=L`` against plain cross-entropy for ``mlp:64x2`` and ``cnn:32-64``;
   the error is :func:`~fitscope.train.regularizers.ortho.orthogonality_error` (mean over the hidden layers of
   ``||G - I||_F / sqrt(m)``). L chosen on validation, in a half-decade grid 1e-2 .. 1: among the L whose error
   falls at least tenfold (a property of the weights), the one whose validation accuracy changes least; if none,
   the largest error reduction within 0.5 points of plain's validation accuracy. (A first run chose the largest
   reduction within 0.5 validation points in the grid 1e-2, 1e-1, 1; on 288 validation rows one row is 0.35
   points, and that rule picked the strongest lambda the noise let through.)

Threads: ``--threads`` (default 1: on a shared 2-core machine one thread per process was ~10x faster than two,
whose spinning threads wait on each other).

Writes ``bench/results/regularizers_structure.json`` through ``bench/_results.py`` and a figure beside it (.png).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

from fitscope.data import load  # noqa: E402
from fitscope.train import TrainConfig, train_ensemble  # noqa: E402
from fitscope.train.ensemble import predict_logits  # noqa: E402
from fitscope.train.regularizers.ortho import orthogonality_error  # noqa: E402
from fitscope.train.regularizers.pruning import apply_masks, bn_layers, gates, prune_channels  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "regularizers_structure.json"
CNN, MLP = "cnn:32-64", "mlp:64x2"
SEEDS = [0, 1, 2]
TRAIN = dict(batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine", record="none")
POLAR_GRID = (1e-2, 3e-2)
L1_GRID = (1e-2, 3e-2)
ORTHO_GRID = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)
SPARSITY = 0.5
PRUNE_LOSS, ORTHO_CHANGE, ORTHO_FACTOR, PRUNE_TARGET = 0.01, 0.005, 10.0, 0.5


def split(seed: int = 0):
    """Digits: (fit, validation, test) as (x, y) pairs; validation = 20% of the training rows, stratified."""
    from sklearn.model_selection import train_test_split

    data = load("digits", seed=0)
    x_fit, x_val, y_fit, y_val = train_test_split(data.x_train, data.y_train, test_size=0.2,
                                                  stratify=data.y_train, random_state=seed)
    return (x_fit, y_fit), (x_val, y_val), (data.x_test, data.y_test)


class Bench:
    """Trains K models per configuration on the fit rows and scores kept models on validation and test rows."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        (self.x, self.y), (self.xv, self.yv), (self.xt, self.yt) = split()
        self.seconds = 0.0

    def accuracy(self, model) -> dict:
        """Per-model accuracy on the validation and test rows (eval mode)."""
        out = {}
        for name, x, y in (("val", self.xv, self.yv), ("test", self.xt, self.yt)):
            logits = predict_logits(model.eval(), torch.from_numpy(x), 2048).numpy()
            out[name] = (logits.argmax(-1) == y).mean(axis=1)
        return out

    def train(self, spec: str, parts: str) -> dict:
        """Train ``spec`` under ``parts``; the kept model, its accuracies, measures and seconds."""
        t0 = time.perf_counter()
        config = TrainConfig(epochs=self.epochs, regularizers=parts, **TRAIN)
        res = train_ensemble(spec, self.x, self.y, config=config, seeds=SEEDS, keep_model=True, n_classes=10)
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        acc = self.accuracy(res.model)
        print(f"  {spec:10s} {parts:38s} val {acc['val'].mean():.4f} test {acc['test'].mean():.4f} "
              f"({seconds:.0f} s)", flush=True)
        return dict(model=res.model, parts=parts, val=acc["val"], test=acc["test"],
                    measures={k: np.asarray(v) for k, v in res.measures.items()}, seconds=seconds)


def layer_counts(masks: np.ndarray, model) -> np.ndarray:
    """``(K, layers)`` pruned channels per BN layer from ``(K, N)`` masks."""
    k = masks.shape[0]
    sizes = [layer.weight.numel() // k for layer in bn_layers(model)]
    bounds = np.cumsum([0, *sizes])
    return np.stack([masks[:, a:b].sum(axis=1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)


def prune_like(model, counts: np.ndarray) -> np.ndarray:
    """Prune, per model and BN layer, the ``counts[k, l]`` smallest ``|gamma|`` of that layer; returns the masks."""
    k = counts.shape[0]
    with torch.no_grad():
        g = gates(model, k).abs()
    masks, start = torch.zeros_like(g, dtype=torch.bool), 0
    for li, layer in enumerate(bn_layers(model)):
        c = layer.weight.numel() // k
        for i in range(k):
            order = torch.sort(g[i, start:start + c], stable=True).indices[: int(counts[i, li])]
            masks[i, start + order] = True
        start += c
    apply_masks(model, masks, k)
    return masks.numpy()


def per_model_pruned(bench: Bench, model, fractions: np.ndarray) -> dict:
    """Each model k pruned globally at ``fractions[k]`` (a copy per model): its accuracies and pruned fraction."""
    val, test, frac = [], [], []
    for i, f in enumerate(fractions):
        pruned = copy.deepcopy(model)
        info = prune_channels(pruned, fraction=float(f))
        acc = bench.accuracy(pruned)
        val.append(acc["val"][i])
        test.append(acc["test"][i])
        frac.append(info["fraction"][i])
    return dict(val=np.array(val), test=np.array(test), fraction=np.array(frac))


def pruning_study(bench: Bench, base: dict) -> dict:
    """Section 1: polarize vs l1bn at the same rate, and both in one pass at a user-set sparsity."""
    print("polarization vs network slimming, cnn:32-64", flush=True)
    polar = {}
    for lam in POLAR_GRID:
        run = bench.train(CNN, f"polarize:lambda={lam:g}")
        pruned = copy.deepcopy(run["model"])
        info = prune_channels(pruned, threshold=0.0)
        after = bench.accuracy(pruned)
        polar[lam] = dict(run=run, info=info, after=after)
        print(f"    pruned to its gates: {info['fraction'].mean():.3f} of the channels, val {after['val'].mean():.4f} "
              f"test {after['test'].mean():.4f}", flush=True)
    ok = [lam for lam in POLAR_GRID if polar[lam]["after"]["val"].mean() >= base["val"].mean() - PRUNE_LOSS]
    lam_p = (max(ok, key=lambda lam: polar[lam]["info"]["fraction"].mean()) if ok
             else max(POLAR_GRID, key=lambda lam: polar[lam]["after"]["val"].mean()))
    chosen = polar[lam_p]
    fractions = chosen["info"]["fraction"]
    counts = layer_counts(chosen["info"]["masks"], chosen["run"]["model"])

    l1 = {}
    for lam in L1_GRID:
        run = bench.train(CNN, f"l1bn:lambda={lam:g}")
        glob = per_model_pruned(bench, run["model"], fractions)
        shaped = copy.deepcopy(run["model"])
        prune_like(shaped, counts)
        same_shape = bench.accuracy(shaped)
        l1[lam] = dict(run=run, global_=glob, same_shape=same_shape)
        print(f"    pruned at polarize's rate: global val {glob['val'].mean():.4f} test {glob['test'].mean():.4f}; "
              f"same layer counts val {same_shape['val'].mean():.4f} test {same_shape['test'].mean():.4f}", flush=True)
    lam_l = max(L1_GRID, key=lambda lam: l1[lam]["global_"]["val"].mean())

    one_pass = {}
    for name, lam in (("polarize", lam_p), ("l1bn", lam_l)):
        run = bench.train(CNN, f"{name}:lambda={lam:g},sparsity={SPARSITY:g}")
        off = np.concatenate([((layer.weight == 0) & (layer.bias == 0)).detach().numpy().reshape(len(SEEDS), -1)
                              for layer in bn_layers(run["model"])], axis=1).mean(axis=1)
        one_pass[name] = dict(parts=run["parts"], val_acc=run["val"], test_acc=run["test"], channels_off=off,
                              test_loss_vs_ce=base["test"] - run["test"], seconds=run["seconds"])

    def scores(acc):
        return dict(val_acc=acc["val"], test_acc=acc["test"])

    record = dict(
        spec=CNN, channels_per_model=int(chosen["info"]["channels"]),
        ce=dict(**scores(base), seconds=base["seconds"]),
        polarize_grid={f"{lam:g}": dict(pruned_fraction=p["info"]["fraction"],
                                        pruned_per_layer=[a for a in p["info"]["per_layer"]],
                                        before=scores(p["run"]), after=scores(p["after"]),
                                        seconds=p["run"]["seconds"]) for lam, p in polar.items()},
        l1bn_grid={f"{lam:g}": dict(before=scores(r["run"]), pruned_global=dict(val_acc=r["global_"]["val"],
                                                                               test_acc=r["global_"]["test"],
                                                                               fraction=r["global_"]["fraction"]),
                                    pruned_same_layer_counts=scores(r["same_shape"]), seconds=r["run"]["seconds"])
                   for lam, r in l1.items()},
        chosen=dict(polarize_lambda=lam_p, l1bn_lambda=lam_l,
                    rule=("polarize: the largest pruned fraction with validation accuracy after pruning within "
                          f"{PRUNE_LOSS * 100:g} point of ce's, else the best; l1bn: the best validation accuracy "
                          "after pruning (global) at polarize's rate")),
        one_pass=one_pass,
    )
    p_after, l_glob, l_same = chosen["after"], l1[lam_l]["global_"], l1[lam_l]["same_shape"]
    record["summary"] = dict(
        pruned_fraction=float(fractions.mean()),
        ce_test_acc=float(base["test"].mean()),
        polarize_test_acc_before=float(chosen["run"]["test"].mean()),
        polarize_test_acc_after=float(p_after["test"].mean()),
        polarize_test_points_lost=float((base["test"] - p_after["test"]).mean() * 100),
        l1bn_test_acc_before=float(l1[lam_l]["run"]["test"].mean()),
        l1bn_test_acc_after_global=float(l_glob["test"].mean()),
        l1bn_test_acc_after_same_layer_counts=float(l_same["test"].mean()),
        one_pass_sparsity=SPARSITY,
        one_pass_polarize_test_acc=float(one_pass["polarize"]["test_acc"].mean()),
        one_pass_polarize_points_lost=float(one_pass["polarize"]["test_loss_vs_ce"].mean() * 100),
        one_pass_l1bn_test_acc=float(one_pass["l1bn"]["test_acc"].mean()),
        one_pass_channels_off=float(one_pass["polarize"]["channels_off"].mean()),
    )
    s = record["summary"]
    record["target"] = dict(
        statement="remove >= 50% of the channels with <= 1 point of test accuracy lost against ce (mean of 3 seeds)",
        pruned_to_gates_met=bool(s["pruned_fraction"] >= PRUNE_TARGET
                                 and s["polarize_test_points_lost"] <= 100 * PRUNE_LOSS),
        one_pass_sparsity_met=bool(s["one_pass_channels_off"] >= PRUNE_TARGET
                                   and s["one_pass_polarize_points_lost"] <= 100 * PRUNE_LOSS),
    )
    return record


def ortho_study(bench: Bench, base_cnn: dict) -> dict:
    """Section 2: orthogonality error and accuracy of ortho against plain, MLP and CNN."""
    print("soft orthogonality", flush=True)
    out = {}
    for spec in (MLP, CNN):
        plain = base_cnn if spec == CNN else bench.train(spec, "ce")
        err0 = orthogonality_error(plain["model"])
        grid = {}
        for lam in ORTHO_GRID:
            run = bench.train(spec, f"ortho:lambda={lam:g}")
            err = run["measures"]["ortho/error"]
            grid[lam] = dict(run=run, error=err, ratio=err0 / err, val_change=run["val"] - plain["val"],
                             test_change=run["test"] - plain["test"])
            print(f"    error {err.mean():.4f} (plain {err0.mean():.4f}: {np.mean(err0 / err):.1f}x lower), "
                  f"test change {np.mean(run['test'] - plain['test']) * 100:+.2f} points", flush=True)
        # the error ratio is a property of the trained weights (no held-out rows); the accuracy change is read on
        # the validation rows only
        tenfold = [lam for lam in ORTHO_GRID if grid[lam]["ratio"].mean() >= ORTHO_FACTOR]
        close = [lam for lam in ORTHO_GRID if abs(grid[lam]["val_change"].mean()) <= ORTHO_CHANGE]
        if tenfold:
            lam = min(tenfold, key=lambda v: abs(grid[v]["val_change"].mean()))
        elif close:
            lam = max(close, key=lambda v: grid[v]["ratio"].mean())
        else:
            lam = min(ORTHO_GRID, key=lambda v: abs(grid[v]["val_change"].mean()))
        c = grid[lam]
        out[spec] = dict(
            plain=dict(error=err0, val_acc=plain["val"], test_acc=plain["test"]),
            grid={f"{v:g}": dict(error=g["error"], error_ratio=g["ratio"], val_acc=g["run"]["val"],
                                 test_acc=g["run"]["test"], seconds=g["run"]["seconds"]) for v, g in grid.items()},
            chosen_lambda=lam,
            error_ratio=float(c["ratio"].mean()),
            test_points_change=float(c["test_change"].mean() * 100),
            met=bool(c["ratio"].mean() >= ORTHO_FACTOR and abs(c["test_change"].mean()) <= ORTHO_CHANGE),
        )
    return dict(rule=("lambda: among those whose error falls >= 10x, the smallest validation accuracy change; if "
                      f"none, the largest error reduction with validation accuracy within {ORTHO_CHANGE * 100:g} "
                      "points of plain's; else the smallest change"),
                target="orthogonality error >= 10x lower with <= 0.5 points of test accuracy change (mean of 3 seeds)",
                **out)


def plot(record: dict, path: Path) -> None:
    """Test accuracy of each pruning variant (left); orthogonality error and accuracy change against lambda (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = record["pruning"]
    s = p["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    rate = f"{s['pruned_fraction'] * 100:.0f}%"
    rows = [("ce (nothing pruned)", s["ce_test_acc"]),
            (f"polarize, pruned to its gates ({rate})", s["polarize_test_acc_after"]),
            (f"l1bn, pruned globally ({rate})", s["l1bn_test_acc_after_global"]),
            (f"l1bn, polarize's layer counts ({rate})", s["l1bn_test_acc_after_same_layer_counts"]),
            (f"polarize, one pass, sparsity {SPARSITY:g}", s["one_pass_polarize_test_acc"]),
            (f"l1bn, one pass, sparsity {SPARSITY:g}", s["one_pass_l1bn_test_acc"])]
    low = (s["ce_test_acc"] - 0.04) * 100
    for i, (label, acc) in enumerate(rows):
        value = acc * 100
        ax.plot(max(value, low), i, "o" if value >= low else "<", ms=8, color=f"C{i}")
        ax.text(max(value, low) + 0.1, i + 0.25, f"{value:.2f}%", fontsize=7)
    ax.axvline((s["ce_test_acc"] - PRUNE_LOSS) * 100, color="gray", ls="--", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.set(xlim=(low - 0.2, 100.2), xlabel="test accuracy (%), mean of 3 models",
           title=f"Pruning {CNN} on digits (dashed: ce - 1 point)")
    ax.invert_yaxis()
    ax.grid(alpha=0.3)
    o = record["orthogonality"]
    for j, spec in enumerate((MLP, CNN)):
        lams = [float(v) for v in o[spec]["grid"]]
        err = [np.mean(o[spec]["grid"][f"{v:g}"]["error"]) for v in lams]
        change = [(np.mean(o[spec]["grid"][f"{v:g}"]["test_acc"]) - np.mean(o[spec]["plain"]["test_acc"])) * 100
                  for v in lams]
        axes[1].plot(lams, err, "o-", color=f"C{j}", label=spec)
        axes[1].axhline(np.mean(o[spec]["plain"]["error"]), color=f"C{j}", ls=":", lw=1)
        axes[1].axhline(np.mean(o[spec]["plain"]["error"]) / ORTHO_FACTOR, color=f"C{j}", ls="--", lw=0.8)
        axes[2].plot(lams, change, "o-", color=f"C{j}", label=spec)
        chosen = o[spec]["chosen_lambda"]
        axes[2].plot([chosen], [o[spec]["test_points_change"]], "*", ms=14, color=f"C{j}")
    axes[1].set(xscale="log", yscale="log", xlabel="ortho lambda", ylabel="orthogonality error",
                title="Orthogonality error (dotted: plain, dashed: plain / 10)")
    axes[2].axhspan(-100 * ORTHO_CHANGE, 100 * ORTHO_CHANGE, color="gray", alpha=0.15)
    axes[2].axhline(0, color="k", lw=0.5)
    axes[2].set(xscale="log", xlabel="ortho lambda", ylabel="test accuracy change vs plain (points)",
                title="Accuracy change (star: chosen on validation)")
    for ax in axes[1:]:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 epochs: a smoke run of the pipeline")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    run = start_run(__file__, argv)
    torch.set_num_threads(args.threads)
    epochs = 3 if args.quick else args.epochs
    bench = Bench(epochs)
    t0 = time.perf_counter()
    print(f"digits: {len(bench.x)} fit / {len(bench.xv)} validation / {len(bench.xt)} test rows; "
          f"K = {len(SEEDS)} models per run, {epochs} epochs, {args.threads} thread(s)", flush=True)
    base = bench.train(CNN, "ce")
    pruning = pruning_study(bench, base)
    ortho = ortho_study(bench, base)
    record = dict(
        benchmark="regularizers_structure",
        data=dict(name="digits", fit_rows=len(bench.x), validation_rows=len(bench.xv), test_rows=len(bench.xt),
                  validation="20% of the training rows, stratified, seed 0; chooses every hyperparameter"),
        training=dict(models=len(SEEDS), seeds=SEEDS, epochs=epochs, threads=args.threads, **TRAIN),
        pruning=pruning,
        orthogonality=ortho,
        train_seconds=bench.seconds,
        seconds=time.perf_counter() - t0,
    )
    out = Path(args.out)
    plot(record, out.with_suffix(".png"))
    run.write(out, record)

    s = pruning["summary"]
    print(f"\n=== digits, {CNN}, {epochs} epochs, K = {len(SEEDS)} (means over the 3 models; "
          f"{time.perf_counter() - t0:.0f} s)")
    print(f"ce test accuracy {s['ce_test_acc'] * 100:.2f}%")
    print(f"polarize (lambda {pruning['chosen']['polarize_lambda']:g}) pruned to its gates: "
          f"{s['pruned_fraction'] * 100:.1f}% of the channels; test {s['polarize_test_acc_before'] * 100:.2f}% "
          f"before, {s['polarize_test_acc_after'] * 100:.2f}% after ({s['polarize_test_points_lost']:+.2f} points lost "
          "vs ce)")
    print(f"l1bn (lambda {pruning['chosen']['l1bn_lambda']:g}) at the same rate: test "
          f"{s['l1bn_test_acc_before'] * 100:.2f}% before, {s['l1bn_test_acc_after_global'] * 100:.2f}% pruned "
          f"globally, {s['l1bn_test_acc_after_same_layer_counts'] * 100:.2f}% with polarize's layer counts")
    print(f"one pass, sparsity {SPARSITY:g}: polarize {s['one_pass_polarize_test_acc'] * 100:.2f}% "
          f"({s['one_pass_polarize_points_lost']:+.2f} points lost vs ce, {s['one_pass_channels_off'] * 100:.1f}% "
          f"channels off), l1bn {s['one_pass_l1bn_test_acc'] * 100:.2f}%")
    t = pruning["target"]
    verdict = {True: "MET", False: "NOT met"}
    print(f"target (>= 50% channels, <= 1 point lost): pruned to gates {verdict[t['pruned_to_gates_met']]}, "
          f"one pass {verdict[t['one_pass_sparsity_met']]}")
    for spec in (MLP, CNN):
        o = ortho[spec]
        chosen = o["grid"][f"{o['chosen_lambda']:g}"]
        print(f"ortho {spec} (lambda {o['chosen_lambda']:g}): error {np.mean(o['plain']['error']):.4f} -> "
              f"{np.mean(chosen['error']):.4f} ({o['error_ratio']:.1f}x lower), test {o['test_points_change']:+.2f} "
              f"points: {'MET' if o['met'] else 'NOT met'} (>= 10x, <= 0.5 points)")
    return record


if __name__ == "__main__":
    main()
