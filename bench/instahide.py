"""InstaHide on digits: what the reconstruction attack recovers, and what the encoding costs in accuracy.

Attack (Inside-dataset InstaHide, :func:`fitscope.privacy.instahide_attack.instahide_study`):
the first ``--private`` digits of the training split are the private set, each
encoded ``--per-image`` times (that many epochs of encodings seen by an
eavesdropper); k = 2, 4, 6, with and without the sign mask. The attacker
knows k and the number of private images; with the mask it also holds the
test split as a public prior (same distribution, disjoint). Scores: for every
private image the best SSIM over the recovered images; the fraction at or
above 0.5 and 0.9; the mean; and, as the baseline measured in the same run,
the best SSIM any public digit reaches (a guess that ignores the encodings)
with the fraction of private images where the attack beats that guess.

Accuracy (:func:`fitscope.privacy.instahide.train_instahide`): one
``mlp:256x2`` trained with Adam on fresh encodings every epoch of all 1437
training digits, tested on the clean (centred, unmixed, unmasked) test
split as the reference code does; the baseline is the same loop on plain
data (k = 1, no mask) in the same run. Ratios are accuracy / baseline accuracy.

Usage: python bench/instahide.py [--quick]
Writes bench/results/instahide.json (nothing with --quick).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fitscope.data import load
from fitscope.privacy.instahide import train_instahide
from fitscope.privacy.instahide_attack import instahide_study
from fitscope.train import configure_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

SETTINGS = {
    "default": dict(private=100, per_image=10, rounds=5, steps=300, epochs=30),
    "quick": dict(private=40, per_image=6, rounds=2, steps=150, epochs=8),
}
TRAIN_CASES = [(1, False), (2, False), (2, True), (4, True)]  # (k, sign mask); (1, False) = plain data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = start_run(__file__)
    setting = "quick" if args.quick else "default"
    cfg = SETTINGS[setting]
    configure_threads(1)
    data = load("digits", seed=0)
    t0 = time.perf_counter()

    table = instahide_study(data.x_train, data.y_train, public=data.x_test, seed=args.seed, ks=(2, 4, 6),
                            masks=(False, True), n_private=cfg["private"], encodings_per_image=cfg["per_image"],
                            rounds=cfg["rounds"], steps=cfg["steps"])
    attack_seconds = time.perf_counter() - t0
    print(f"InstaHide attack on digits: {cfg['private']} private images x {cfg['per_image']} encodings, "
          f"baseline = nearest of {len(data.x_test)} public digits ({attack_seconds:.0f} s)")
    print(f"{'k':>2} {'mask':>5} {'rec@0.5':>8} {'rec@0.9':>8} {'mean SSIM':>9} {'public':>7} "
          f"{'beats public':>12} {'members':>8}")
    for r in table.to_dict(orient="records"):
        print(f"{r['k']:>2} {str(r['sign_mask']):>5} {r['recovery_rate@0.5']:>8.2f} {r['recovery_rate@0.9']:>8.2f} "
              f"{r['mean_ssim']:>9.3f} {r['baseline_mean_ssim']:>7.3f} {r['beats_baseline_rate']:>12.2f} "
              f"{r['member_accuracy']:>8.2f}")

    training = []
    for k, mask in TRAIN_CASES:
        t = time.perf_counter()
        res = train_instahide("mlp:256x2", data.x_train, data.y_train, k=k, sign_mask=mask, seed=args.seed,
                              x_test=data.x_test, y_test=data.y_test, epochs=cfg["epochs"])
        training.append(dict(k=k, sign_mask=mask, test_acc=res.final_test_acc, best_test_acc=float(res.test_acc.max()),
                             seconds=time.perf_counter() - t))
    base = training[0]["test_acc"]
    print(f"\nmlp:256x2, {cfg['epochs']} epochs, clean test digits (baseline: plain data, k=1, no mask)")
    print(f"{'k':>2} {'mask':>5} {'test acc':>9} {'ratio':>6}")
    for row in training:
        row["ratio_to_plain"] = row["test_acc"] / base
        print(f"{row['k']:>2} {str(row['sign_mask']):>5} {row['test_acc']:>9.3f} {row['ratio_to_plain']:>6.2f}")

    if args.quick:
        print("\n--quick: nothing written")
        return 0
    out = Path(__file__).parent / "results" / "instahide.json"
    run.write(out, {
        "benchmark": "instahide",
        "setting": setting,
        "config": dict(cfg, seed=args.seed, data="digits", data_seed=0, threads=1, model="mlp:256x2",
                       max_weight=0.65, encoding="inside-dataset"),
        "attack": table.to_dict(orient="records"),
        "training": training,
        "seconds": time.perf_counter() - t0,
    })
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
