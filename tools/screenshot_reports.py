#!/usr/bin/env python3
"""Screenshot fitscope reports in headless Chromium and check that they fit a phone's width.

    python tools/screenshot_reports.py RUN_DIR_OR_HTML... --out DIR

For each report (a ``report.html`` file, a run directory holding one, or a
folder of run directories), this writes ``DIR/<name>-1400.png`` and
``DIR/<name>-420.png`` (a desktop and a phone width) and measures, at 420 px,
whether the page body overflows sideways: ``document.documentElement.scrollWidth
<= window.innerWidth``. Wide tables may scroll inside their own box; the page
itself must not. It prints one line per report and exits 1 when a page
overflows (2 when Chromium is missing or no report was found).

The measurement runs a small script in a temporary copy of the page (the
reports themselves have no scripts) and reads its result with ``--dump-dom``;
the elements that stick out past the right edge are named, to say what to fix.

Needs ``chromium`` (Debian: ``apt-get install -y chromium``) or
``chromium-browser`` / ``google-chrome`` on the PATH, or ``--chromium PATH``.
Uses only the standard library.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTHS = (1400, 420)
NARROW = 420
HEIGHT = 2000
MARKER = "__fitscope_measure__"

# Appended to a copy of the page: after load, measure the page width and the elements that stick out.
MEASURE_JS = """
<script>
window.addEventListener("load", function () {
  var w = window.innerWidth, de = document.documentElement, off = [];
  function clipped(el) {
    for (var p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      var ox = getComputedStyle(p).overflowX;
      if (ox !== "visible" && p.getBoundingClientRect().right <= w + 0.5) return true;
    }
    return false;
  }
  var all = document.body.querySelectorAll("*");
  for (var i = 0; i < all.length; i++) {
    var el = all[i], r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > w + 0.5 && !clipped(el)) {
      var cls = typeof el.className === "string" ? el.className.trim() : "";
      var name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (cls ? "." + cls.split(/\\s+/).join(".") : "");
      off.push(name + " (right " + Math.round(r.right) + ")");
    }
  }
  parent.postMessage(JSON.stringify({scrollWidth: de.scrollWidth, innerWidth: w, scrollHeight: de.scrollHeight,
                                     offenders: off.slice(0, 8)}), "*");
});
</script>
"""

# Headless Chromium lays a page out at least 500 px wide whatever --window-size says (and crops the
# screenshot), so the page is shown in an iframe of the exact width; the iframe's result comes back
# by postMessage and is written into the wrapper's DOM for --dump-dom.
WRAPPER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><style>html, body {{ margin: 0; padding: 0; overflow: hidden; }}
iframe {{ display: block; border: 0; width: {width}px; height: {height}px; }}</style></head>
<body><iframe src="{src}" scrolling="no"></iframe>
<script>
window.addEventListener("message", function (event) {{
  var pre = document.createElement("pre");
  pre.id = "{marker}";
  pre.textContent = event.data;
  document.body.appendChild(pre);
}});
</script></body></html>
"""


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable: ``explicit``, else the first of chromium, chromium-browser, google-chrome."""
    if explicit:
        return explicit if shutil.which(explicit) or Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def find_reports(paths: list[str]) -> list[Path]:
    """The ``report.html`` files named by ``paths``: files as given, run directories, folders of runs."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif (path / "report.html").is_file():
            found.append(path / "report.html")
        elif path.is_dir():
            found.extend(sorted(path.glob("**/report.html")))
        else:
            print(f"warning: {item}: no such file or directory", file=sys.stderr)
    unique: list[Path] = []
    for report in found:
        if report.resolve() not in [u.resolve() for u in unique]:
            unique.append(report)
    return unique


def report_name(report: Path, taken: set[str]) -> str:
    """A short unique file stem for ``report``: its run directory's name (or the file's stem)."""
    base = report.parent.name if report.name == "report.html" else report.stem
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base) or "report"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name


def _chromium_args(chromium: str, profile: str, width: int, height: int) -> list[str]:
    args = [chromium, "--headless=new", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--no-default-browser-check", f"--user-data-dir={profile}", f"--window-size={width},{height}",
            "--force-device-scale-factor=1", "--allow-file-access-from-files"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return args


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else "no output"


def _wrapped(report: Path, workdir: Path, width: int, height: int) -> Path:
    """A page in ``workdir`` showing a measuring copy of ``report`` in an iframe ``width`` x ``height`` px."""
    text = report.read_text(encoding="utf-8")
    at = text.rfind("</body>")
    text = text[:at] + MEASURE_JS + text[at:] if at >= 0 else text + MEASURE_JS
    copy = workdir / "page.html"
    copy.write_text(text, encoding="utf-8")
    wrapper = workdir / f"wrapper-{width}x{height}.html"
    wrapper.write_text(WRAPPER.format(width=width, height=height, src=copy.name, marker=MARKER), encoding="utf-8")
    return wrapper


def measure(chromium: str, report: Path, width: int, profile: str, workdir: Path, height: int = HEIGHT,
            timeout: float = 90) -> dict:
    """Lay ``report`` out ``width`` px wide and measure it: scrollWidth, innerWidth, scrollHeight, offenders."""
    wrapper = _wrapped(report, workdir, width, height)
    args = _chromium_args(chromium, profile, width, height) + [
        "--virtual-time-budget=10000", "--dump-dom", wrapper.resolve().as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    match = re.search(rf'<pre id="{MARKER}">(.*?)</pre>', done.stdout, re.S)
    if not match:
        raise RuntimeError(f"{report}: the measuring script gave no result ({_last_line(done.stderr)})")
    return json.loads(html.unescape(match.group(1)))


def screenshot(chromium: str, report: Path, png: Path, width: int, height: int, profile: str, workdir: Path,
               timeout: float = 90) -> None:
    """Save a ``width`` x ``height`` px screenshot of ``report`` (laid out exactly ``width`` px wide) to ``png``."""
    wrapper = _wrapped(report, workdir, width, height)
    png.unlink(missing_ok=True)
    args = _chromium_args(chromium, profile, width, height) + [
        f"--screenshot={png.resolve()}", "--virtual-time-budget=10000", wrapper.resolve().as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if not png.is_file():
        raise RuntimeError(f"{report}: no screenshot ({_last_line(done.stderr)})")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, screenshot and measure every report, print the table; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Example: python tools/screenshot_reports.py runs/audit runs/leak "
                                            "--out /tmp/shots")
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_HTML",
                        help="report.html files, run directories, or folders of run directories")
    parser.add_argument("--out", required=True, help="folder for the PNG screenshots")
    parser.add_argument("--full-page", action="store_true",
                        help="screenshot the whole page height (measured at each width) instead of "
                             f"the top {HEIGHT} px")
    parser.add_argument("--max-height", type=int, default=20000, help="cap of --full-page heights in px")
    parser.add_argument("--chromium", help="the Chromium executable (default: found on the PATH)")
    args = parser.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("error: no Chromium found; install it (apt-get update && apt-get install -y chromium) "
              "or pass --chromium PATH", file=sys.stderr)
        return 2
    reports = find_reports(args.paths)
    if not reports:
        print("error: no report.html found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    rows = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="fitscope-chromium-") as profile, \
            tempfile.TemporaryDirectory(prefix="fitscope-pages-") as pages:
        workdir = Path(pages)
        for report in reports:
            name = report_name(report, taken)
            row = {"report": str(report), "shots": [], "result": ""}
            try:
                for width in WIDTHS:
                    info = measure(chromium, report, width, profile, workdir)
                    height = min(args.max_height, max(HEIGHT, int(info["scrollHeight"]))) if args.full_page \
                        else HEIGHT
                    png = out / f"{name}-{width}.png"
                    screenshot(chromium, report, png, width, height, profile, workdir)
                    row["shots"].append(str(png))
                    if width == NARROW:
                        row["scroll"] = f"{info['scrollWidth']} / {info['innerWidth']}"
                        if info["scrollWidth"] > info["innerWidth"]:
                            failed = True
                            row["result"] = "OVERFLOW: " + ", ".join(info["offenders"] or ["(no single element)"])
                        else:
                            row["result"] = "ok"
            except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as err:
                failed = True
                row["result"] = f"ERROR: {err}"
                row.setdefault("scroll", "-")
            rows.append(row)

    head = ("report", f"scrollWidth / innerWidth at {NARROW} px", "result")
    table = [(r["report"], r.get("scroll", "-"), r["result"]) for r in rows]
    widths = [max(len(head[i]), *(len(t[i]) for t in table)) for i in range(2)]
    print(f"{head[0]:<{widths[0]}}  {head[1]:<{widths[1]}}  {head[2]}")
    for t in table:
        print(f"{t[0]:<{widths[0]}}  {t[1]:<{widths[1]}}  {t[2]}")
    print(f"screenshots in {out}/ ({', '.join(f'{w} px' for w in WIDTHS)} wide)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
