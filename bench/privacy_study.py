"""The privacy trade-off study's headline table: accuracy against leakage for every defense, one run.

Runs ``fitscope privacy-study`` at its default setting (16 shadow models per defense, mlp:64x1, 100
canaries; digits) in a temporary run directory, with one torch thread per unit, and records one row per
defense: test accuracy, LiRA AUC and TPR at 0.1% / 1% FPR, the canary epsilon lower bound and the claimed
epsilon. The baseline is the undefended row of the same run. CPU time is recorded beside wall time.

Usage: FITSCOPE_NUM_THREADS=1 python bench/privacy_study.py   (about 2-4 minutes on 2 cores)
Writes bench/results/privacy_study.json (the README's trade-off table).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import start_run  # noqa: E402

from fitscope.experiments import get_study  # noqa: E402
from fitscope.experiments.study import PrintProgress, run_study  # noqa: E402

COLUMNS = ("defense", "test_acc", "lira_auc", "lira_tpr_at_0_1pct", "lira_tpr_at_1pct", "eps_lower_bound",
           "claimed_eps")


def main(argv: list[str] | None = None) -> dict:
    """Run the study and write the results file; returns the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per unit")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "privacy_study.json"))
    args = parser.parse_args(argv)
    record_run = start_run(__file__, argv)
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_study(get_study("privacy-study"), {}, Path(tmp) / "privacy", threads=args.threads,
                           progress=PrintProgress())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        table = result.outcome.tables["results"]
    rows = []
    for row in table.to_dict("records"):
        rows.append({c: (None if isinstance(row.get(c), float) and math.isnan(row[c]) else row.get(c))
                     for c in COLUMNS if c in row})
    record = dict(benchmark="privacy_study", config=result.config.model_dump(mode="json"),
                  wall_seconds=round(wall, 1), cpu_seconds_this_process=round(cpu, 1), defenses=rows)
    print(f"{'defense':<18} {'test acc':>8} {'AUC':>6} {'TPR@0.1%':>9} {'TPR@1%':>7} {'eps lb':>7}")
    for r in rows:
        print(f"{r['defense']:<18} {r['test_acc']:8.3f} {r['lira_auc']:6.3f} {100 * r['lira_tpr_at_0_1pct']:8.1f}% "
              f"{100 * r['lira_tpr_at_1pct']:6.1f}% {r.get('eps_lower_bound') or 0:7.2f}")
    print(f"wall {wall:.0f} s, CPU {cpu:.0f} s (this process; Ray not used)")
    return record_run.write(args.out, record)


if __name__ == "__main__":
    main()
