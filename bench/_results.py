"""The one writer of ``bench/results/*.json``: every result file says where, when, how and on what it was measured.

A benchmark script starts a :class:`BenchRun` before it measures anything and
writes its record through it at the end::

    run = start_run(__file__, argv)            # load average before, start time
    ...measure...
    run.write(RESULTS, record)                 # provenance added, atomic write

The written file is the script's ``record`` plus one ``"provenance"`` key:

- ``script``, ``command`` (``python bench/<name>.py ...`` as run), the
  environment variables that change threads (``FITSCOPE_*``, ``OMP_NUM_THREADS``, ...);
- ``git``: the commit and whether the working tree was dirty (``None`` outside git);
- ``started_utc``, ``finished_utc``, ``wall_seconds``;
- ``load_average``: ``os.getloadavg()`` before and after, and ``noisy``: true
  when the 1-minute load before or after exceeded the machine's cores (the
  script then prints a warning to re-run on a quiet machine);
- ``machine``: cores, CPU model, memory, python / torch / numpy versions, torch threads;
- ``figures``: which figures were measured in this run and which were not.
  Every figure is measured in this run unless its path (a top-level key of
  the record, optionally followed by ``/`` and a sub-path such as
  ``cases/digits-10``) is listed under ``reused`` (copied from an earlier
  results file, named with its commit and time: :meth:`BenchRun.reuse`) or
  under ``quoted`` (a figure from elsewhere, e.g. a paper, stored under the
  record's ``"quoted"`` key with its source: :meth:`BenchRun.quote`).

Import from a script in ``bench/`` with ``from _results import start_run``
(the script's folder is on ``sys.path``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS_DIR = BENCH / "results"
PROVENANCE = "provenance"
QUOTED = "quoted"
_MAX_CHANGED = 30
_ENV_PREFIXES = ("FITSCOPE_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAY_ADDRESS")


def utc_now() -> str:
    """Current UTC time, ISO 8601 to the second (``2026-11-23T17:03:31+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def load_average() -> list[float] | None:
    """``os.getloadavg()`` (1, 5 and 15 minutes) rounded to 2 decimals; None where the OS has none."""
    try:
        return [round(float(v), 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cores() -> int:
    """The machine's CPU cores as the load average counts them (``os.cpu_count()``, at least 1)."""
    return os.cpu_count() or 1


def is_noisy(before: list[float] | None, after: list[float] | None, n_cores: int) -> bool:
    """True when the 1-minute load average before or after the run exceeded ``n_cores``."""
    return any(load is not None and load[0] > n_cores for load in (before, after))


def git_state(root: str | Path = ROOT) -> dict:
    """``dict(commit=HEAD sha, dirty=bool, changed_count=int, changed_files=[...])`` of the repository at ``root``.

    ``dirty``: files differ from the commit (untracked ones not ignored by git
    included); ``changed_files`` lists the first of them. None when git cannot tell.
    """
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    changed = None if status is None else [line[3:] for line in status.splitlines() if line.strip()]
    return dict(commit=commit.strip() if commit else None, dirty=None if changed is None else bool(changed),
                changed_count=None if changed is None else len(changed),
                changed_files=None if changed is None else changed[:_MAX_CHANGED])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def machine() -> dict:
    """The machine a figure was measured on: cores, CPU model, memory and the versions that matter."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count()
    memory = _memory_bytes()
    info: dict[str, Any] = dict(
        cpus=os.cpu_count(), cpus_available=available, cpu_model=_cpu_model(),
        memory_gib=None if memory is None else round(memory / 2**30, 1),
        python=platform.python_version(), platform=platform.platform(),
    )
    for name in ("numpy", "torch"):
        try:
            module = __import__(name)
        except ImportError:  # pragma: no cover - both are dependencies of fitscope
            info[name] = None
        else:
            info[name] = module.__version__
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        info["torch_threads"] = None
    return info


def _relative(path: str | Path) -> str:
    """``path`` relative to the repository root where it lies inside it, else as given."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _jsonable(obj: Any) -> Any:
    """``json.dump``'s fallback: NumPy scalars and arrays, paths and sets as plain JSON values."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"record: expected JSON-serializable values, got {type(obj).__name__}")


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, default=_jsonable) + "\n"  # serialize first: a bad value writes nothing
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class BenchRun:
    """One invocation of a benchmark script: records the state before it measures, writes its result file.

    Args:
        script: the script's path (``__file__``).
        argv: its arguments (``sys.argv[1:]`` when None).
    """

    def __init__(self, script: str | Path, argv: list[str] | None = None) -> None:
        self.script = _relative(script)
        self.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
        self.started_utc = utc_now()
        self._t0 = time.perf_counter()
        self.cores = cores()
        self.load_before = load_average()
        self.git = git_state()
        self.reused: dict[str, dict] = {}
        self.quoted: dict[str, dict] = {}
        if is_noisy(self.load_before, None, self.cores):
            print(f"WARNING: the 1-minute load average is {self.load_before[0]} on {self.cores} cores before "
                  "this benchmark; its figures will be marked noisy", file=sys.stderr, flush=True)

    @property
    def command(self) -> str:
        """The command line as run, ``python bench/<name>.py ARGS``."""
        return shlex.join(["python", self.script, *self.argv])

    def reuse(self, path: str, value: Any, *, source: str | Path, note: str | None = None) -> Any:
        """Mark the figure at ``path`` as copied from the earlier results file ``source``; returns ``value``.

        The mark names the file, and the commit, time and noise flag recorded in
        it. If ``source`` itself had reused that figure, the mark keeps the
        original source (and says which file it came through). ``note`` says
        more (e.g. that a resumed study run kept its finished units).
        """
        src = Path(source)
        entry: dict[str, Any] = dict(source=_relative(src), source_commit=None, source_finished_utc=None,
                                     source_noisy=None)
        try:
            old = json.loads(src.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"source: expected a readable JSON results file, got {src} ({err})") from None
        prov = old.get(PROVENANCE) if isinstance(old, dict) else None
        if isinstance(prov, dict):
            earlier = (prov.get("figures") or {}).get("reused", {}).get(path)
            if isinstance(earlier, dict) and earlier.get("source"):
                entry = dict(earlier, via=[*earlier.get("via", []), _relative(src)])
            else:
                entry.update(source_commit=(prov.get("git") or {}).get("commit"),
                             source_finished_utc=prov.get("finished_utc"), source_noisy=prov.get("noisy"))
        if note:
            entry["note"] = note
        self.reused[path] = entry
        return value

    def quote(self, name: str, values: dict, *, source: str) -> dict:
        """Record ``values`` quoted from ``source`` (a paper, an issue): stored as ``record["quoted"][name]``.

        Quoted figures were not measured here and never sit where measurements do.
        """
        if not source:
            raise ValueError("source: expected where the quoted figures come from, got an empty string")
        self.quoted[name] = dict(source=source, values=dict(values))
        return values

    def provenance(self, record: dict) -> dict:
        """The ``"provenance"`` entry for ``record`` as of now (load average after, finish time, noise flag)."""
        for path in self.reused:
            if path.split("/", 1)[0] not in record:
                raise KeyError(f"reused: expected a top-level key of the record, got {path!r}")
        load_after = load_average()
        noisy = is_noisy(self.load_before, load_after, self.cores)
        return dict(
            script=self.script,
            command=self.command,
            environment={k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
            git=self.git,
            started_utc=self.started_utc,
            finished_utc=utc_now(),
            wall_seconds=round(time.perf_counter() - self._t0, 1),
            load_average=dict(before=self.load_before, after=load_after, cores=self.cores),
            noisy=noisy,
            machine=machine(),
            figures=dict(
                rule="every figure was measured in this run unless its path is listed under reused or quoted",
                measured=[k for k in record if k != QUOTED and k not in self.reused],
                partly_reused=sorted({p.split("/", 1)[0] for p in self.reused if "/" in p}),
                reused=self.reused,
                quoted={name: q["source"] for name, q in self.quoted.items()},
            ),
        )

    def write(self, path: str | Path, record: dict) -> dict:
        """Add the provenance (and the quoted figures) to ``record`` and write it atomically to ``path``.

        Returns the record as written (read back: plain JSON values). Prints a
        warning to re-run on a quiet machine when the record is noisy.
        """
        if PROVENANCE in record or QUOTED in record:
            raise ValueError(f"record: expected no {PROVENANCE!r} or {QUOTED!r} key (the helper adds them), "
                             f"got {sorted(k for k in record if k in (PROVENANCE, QUOTED))}")
        out = dict(record)
        if self.quoted:
            out[QUOTED] = self.quoted
        prov = self.provenance(out)
        out = {PROVENANCE: prov, **out}
        out = json.loads(write_json_atomic(path, out).read_text())
        if prov["noisy"]:
            la = prov["load_average"]
            print(f"WARNING: 1-minute load average {la['before'] and la['before'][0]} before / "
                  f"{la['after'] and la['after'][0]} after exceeded the {la['cores']} cores: {_relative(path)} is "
                  "marked noisy; re-run on a quiet machine", file=sys.stderr, flush=True)
        return out


def start_run(script: str | Path, argv: list[str] | None = None) -> BenchRun:
    """Start recording a benchmark invocation (call before measuring anything); see :class:`BenchRun`."""
    return BenchRun(script, argv)
