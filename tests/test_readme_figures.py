"""Every number in the README's results tables comes from the results file the table names.

For each Markdown table from the ``## Benchmarks`` section on, the file is the
last ``bench/results/<name>.json`` mentioned in the table's own block: the
text between the table and the line that starts it (a bold title such as
``**Kernels**``, a list item, a heading, or the end of the previous table). A
name with ``*`` (``kernels*.json``) stands for every file it matches; a bare
``bench/results/*.json`` names nothing.

Each cell after the first (the first column labels the row) that starts with
a number is checked number by number: the figure as printed, with d decimals,
must be a rounding of some number in the file (|x - v| <= 0.5 * 10^-d), where
``97.3%`` may be stored as 0.973 and ``0.31 ms`` as 0.00031 (seconds).
Thousands separators (``45,010``) are allowed. The provenance, the machine and
load measurements are not figures (see :func:`file_numbers`). README and results files are
never edited to make this pass: a failure means re-run the benchmark or
correct the text.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"

FILE_MENTION = re.compile(r"bench/results/([\w*.-]+)\.json")
BLOCK_START = re.compile(r"^(\*\*|#|- |\* |\d+\. )")
NUMBER = re.compile(r"(?<![\w.])(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(\s*(?:%|ms\b|x\b))?")


@dataclass
class Table:
    """One Markdown table of the README: where it is, what names it, its rows."""

    line: int  # 1-based line of its header row
    title: str  # the block's first line, shortened
    files: list[str]  # results files it names (relative to the repository), [] when none
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)


def split_row(line: str) -> list[str]:
    """The cells of a Markdown table row, stripped."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def results_tables(text: str, results_dir: Path = RESULTS, start_heading: str = "## Benchmarks") -> list[Table]:
    """The Markdown tables of ``text`` from ``start_heading`` on, each with the results files its block names."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == start_heading), None)
    if start is None:
        raise AssertionError(f"README: expected a {start_heading!r} section, got none")
    tables: list[Table] = []
    floor = start  # the previous table's end (or the section heading): a block never reaches above it
    i = start + 1
    while i < len(lines):
        if not (lines[i].lstrip().startswith("|") and i + 1 < len(lines)
                and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1])):
            i += 1
            continue
        block_top = floor + 1
        for j in range(i - 1, floor, -1):
            if BLOCK_START.match(lines[j].lstrip()) and not lines[j].lstrip().startswith("|"):
                block_top = j
                break
        block = "\n".join(lines[block_top:i])
        names = [n for n in FILE_MENTION.findall(block) if n != "*"]
        files: list[str] = []
        if names:
            files = sorted(p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else str(p)
                           for p in results_dir.glob(names[-1] + ".json"))
            if not files:  # named, but no such file: keep the name so the test says so
                files = [f"{results_dir / names[-1]}.json (missing)"]
        title = lines[block_top].strip()[:70] if block_top < i else "(no text above)"
        table = Table(line=i + 1, title=title, files=files, header=split_row(lines[i]))
        k = i + 2
        while k < len(lines) and lines[k].lstrip().startswith("|"):
            table.rows.append(split_row(lines[k]))
            k += 1
        tables.append(table)
        floor = k - 1
        i = k
    return tables


def file_numbers(obj) -> list[float]:
    """Every figure in a parsed JSON value, in any nesting.

    Booleans are not numbers, and the circumstances of a run are not figures:
    the provenance, the machine and every load measurement (a key containing
    ``load``) are left out, so that a README figure cannot match a load average.
    """
    if isinstance(obj, dict):
        return [v for key, value in obj.items() if not _circumstance(key) for v in file_numbers(value)]
    if isinstance(obj, list):
        return [v for value in obj for v in file_numbers(value)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(obj):
        return [float(obj)]
    return []


def _circumstance(key: str) -> bool:
    # "load_average", "other_load", ... but not "workloads" (the figures of a benchmark's workloads)
    return key in ("provenance", "machine") or re.search(r"(^|_)load", key) is not None


def cell_figures(cell: str) -> list[tuple[str, float, int, str]]:
    """The figures of a numeric cell: (as printed, value, decimals, unit); [] for a cell not starting with one."""
    plain = cell.replace("**", "").replace("`", "").strip()
    if not re.match(r"^-?\d", plain):
        return []
    out = []
    for m in NUMBER.finditer(plain):
        digits = m.group(1).replace(",", "")
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        out.append((m.group(0).strip(), float(digits), decimals, (m.group(2) or "").strip()))
    return out


def appears(value: float, decimals: int, unit: str, numbers: list[float]) -> bool:
    """True when some number of the file, rounded to ``decimals`` (in the cell's unit), prints as ``value``."""
    tol = 0.5 * 10.0 ** -decimals * (1 + 1e-9) + 1e-12
    scales = [1.0] + ([100.0] if unit == "%" else []) + ([1000.0] if unit == "ms" else [])
    return any(abs(x * s - value) <= tol for x in numbers for s in scales)


def table_problems(table: Table, root: Path = ROOT) -> list[str]:
    """What is wrong with one table: no file named, a file missing, or figures not found in its file(s)."""
    where = f"README.md:{table.line} ({table.title})"
    if not table.files:
        return [f"{where}: expected a bench/results/<name>.json named above the table, got none"]
    numbers: list[float] = []
    for name in table.files:
        path = root / name
        if not path.exists():
            return [f"{where}: expected the results file {name}, got no such file"]
        numbers += file_numbers(json.loads(path.read_text()))
    problems = []
    for row in table.rows:
        for column, cell in zip(table.header[1:], row[1:]):
            for printed, value, decimals, unit in cell_figures(cell):
                if not appears(value, decimals, unit, numbers):
                    problems.append(f"{where}: row {row[0]!r}, column {column!r}: expected {printed} in "
                                    f"{', '.join(table.files)}, got no number that rounds to it")
    return problems


# ---------------------------------------------------------------- the checker can fail


def test_checker_on_a_synthetic_readme(tmp_path):
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    (results / "demo.json").write_text(json.dumps(
        {"rows": [{"ratio": 1.875, "frac": 0.4281, "rate": 45010.1, "s": 0.000308, "flag": True}],
         "neg": -0.00625, "machine": {"cpus": 77}, "load": {"before": 1.86}, "provenance": {"x": 45011}}))
    text = "\n".join([
        "# x", "## Benchmarks", "",
        "**Demo** (`bench/results/demo.json`):", "",
        "| method | ratio | of peak | rate | time | d |",
        "|---|---:|---:|---:|---:|---:|",
        "| engine 10% | 1.88x | 43% | 45,010 | 77 s (0.31 ms/entry) | -0.006 |",
        "| engine | 1.86x | 0.43 | 45,011 | - | **1** / 0.4 |",
        "", "**Other** run, no file:", "",
        "| a | b |", "|---|---|", "| x | 0.5 |",
        "", "**Globbed** (`bench/results/*.json`):", "",
        "| a | b |", "|---|---|", "| x | 0.5 |",
    ])
    tables = results_tables(text, results)
    assert [(t.line, t.files) for t in tables] == [
        (6, [str(results / "demo.json")]), (13, []), (19, [])]
    problems = table_problems(tables[0], root=tmp_path)
    # row 1: all found (1.875 -> 1.88, 0.4281 -> 43%, 45010.1 -> 45,010, 0.000308 s -> 0.31 ms, -0.00625 -> -0.006)
    # except 77 (only the machine's cpus); row 2: 1.86 (only a load), 45,011 (only in the provenance) and 1 (True
    # is not a number) are not among the file's figures
    assert [p.split("expected ")[1].split(" in ")[0] for p in problems] == ["77", "1.86x", "45,011", "1"]
    assert "row 'engine', column 'ratio'" in problems[1]
    assert table_problems(tables[1], root=tmp_path) == [
        "README.md:13 (**Other** run, no file:): expected a bench/results/<name>.json named above the table, got none"]


def test_cell_figures():
    assert cell_figures("**0.9995** / **0.972**") == [("0.9995", 0.9995, 4, ""), ("0.972", 0.972, 3, "")]
    assert cell_figures("81.0 (114.8 with eval FLOPs)") == [("81.0", 81.0, 1, ""), ("114.8", 114.8, 1, "")]
    assert cell_figures("43% (61% with eval FLOPs)") == [("43%", 43.0, 0, "%"), ("61%", 61.0, 0, "%")]
    assert cell_figures(">= 0.99") == [] and cell_figures("-") == [] and cell_figures("grows with p") == []


# ---------------------------------------------------------------- the README

TABLES = results_tables(README.read_text())


def test_the_readme_has_results_tables():
    assert len(TABLES) >= 5


@pytest.mark.parametrize("table", TABLES, ids=[f"line{t.line}" for t in TABLES])
def test_readme_table_figures_appear_in_their_results_file(table):
    problems = table_problems(table)
    assert not problems, "\n".join(problems)


def test_load_measurements_are_circumstances_but_workloads_are_figures():
    assert file_numbers({"load_average": [3.1], "other_load": 0.5, "quiet_wait_load": 1.2, "machine": {"cpus": 2},
                         "workloads": {"mlp": {"wall_seconds": 3.594}}}) == [3.594]
