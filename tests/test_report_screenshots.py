"""tools/screenshot_reports.py: finding the reports to screenshot.

The screenshots themselves need Chromium, which CI machines do not have (and a test must not skip itself), so
the tool is run by hand before a report change lands: ``python tools/screenshot_reports.py runs/ --out shots``
(``apt-get install -y chromium``) renders every report at 1400 and 420 px and exits 1 if a page is wider than
420 px. The responsive structure itself is checked without a browser in tests/test_report.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


TOOL = Path(__file__).resolve().parents[1] / "tools" / "screenshot_reports.py"


def _tool():
    spec = importlib.util.spec_from_file_location("screenshot_reports", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reports_are_found_in_files_run_directories_and_folders(tmp_path):
    tool = _tool()
    for name in ("a", "b"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "report.html").write_text("<html></html>")
    single = tmp_path / "page.html"
    single.write_text("<html></html>")
    found = tool.find_reports([str(single), str(tmp_path / "runs" / "a"), str(tmp_path / "runs")])
    assert found == [single, tmp_path / "runs" / "a" / "report.html", tmp_path / "runs" / "b" / "report.html"]
    taken: set[str] = set()
    assert [tool.report_name(p, taken) for p in found] == ["page", "a", "b"]
