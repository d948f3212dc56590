"""One study runner for every study: run directory, --resume, executor, progress, report.

A study is a :class:`Study`: a pydantic config class and four functions that
read like the paper's method section::

    prepare(cfg) -> Prepared             # load data, check it can support the study; nothing written yet
    plan(cfg, prepared) -> [Unit, ...]   # the units of work, each a pure module-level task and its input
    estimate(cfg, prepared, units) -> Outcome   # tables (and a summary) from the finished units
    report(cfg, prepared, outcome) -> dict      # the report template's context

:func:`run_study` owns everything else, the same way for every study:

1. the config: built from the given values, or on ``resume`` taken from the
   run's ``run.json`` with the given values checked against it (a flag that
   disagrees is named in a one-line error);
2. ``prepare`` and ``plan`` run *before* the run directory is made, so bad
   input leaves nothing behind;
3. the run directory (:class:`fitscope.runs.Run`): config hash, seeds,
   versions; damaged units found on resume are set aside and trained again;
4. the units not yet stored run as tasks of the executor (``local`` or
   ``ray``, :func:`fitscope.runs.make_executor`), each stored as soon as it
   finishes; progress per unit and per step inside a unit (e.g. per epoch);
5. ``estimate``, then every table, then the report; only when all of them
   are written is the run marked ``done``.

A unit's function (``Unit.fn``) is called as ``fn(task, progress=tick,
**shared)``: ``task`` is the unit's own input, ``shared`` the study's big
read-only arrays (put into Ray's object store once), ``tick(done)`` reports
the work done so far inside the unit (in the unit's ``work`` units, e.g.
model-epochs). It must be a plain module-level function whose result
follows from its arguments alone (a dict of NumPy arrays): that is what
makes the ``local`` and ``ray`` executors give identical tables, and what
lets a killed job resume from the units it stored.

Placement (executor, address, threads per task, device, GPUs per task) is
not part of the config hash: a run started locally resumes on Ray, a run
started on CPU resumes on a GPU, and the other way round; every attempt
records where its units ran (``attempts[-1]["executor"]``: name, threads,
device...) and every unit the threads and device it ran with. The device
(``--device cpu|cuda|auto``) is resolved before anything is written: a CUDA
device that is not there is a one-line error naming the devices found.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fitscope.errors import ConfigError, FitscopeError, RunError
from fitscope.experiments.config_errors import build_config, cli_flag
from fitscope.runs.atomic import WriteError
from fitscope.runs.devices import DEVICE_ENV, env_device, resolve_device
from fitscope.runs.executors import TaskLost, check_executor_options, env_threads, machine_cpus, make_executor

#: Set to N to make the runner stop after N stored units and wait to be killed (tests of kill and resume).
PAUSE_ENV = "FITSCOPE_TEST_PAUSE_AFTER_UNITS"
#: What the runner prints (to stderr) when it pauses there.
PAUSE_MARK = "fitscope: paused after"


@dataclass(frozen=True)
class Unit:
    """One unit of work: ``fn(task, progress=..., **shared)`` returns the arrays stored as ``units/<key>.npz``.

    Attributes:
        key: a file-name-safe key, unique in the study (e.g. ``"mem-003"``).
        fn: a plain module-level function (see the module docstring).
        task: the unit's own input (picklable: it travels to Ray workers).
        work: how much the unit reports in total through ``progress`` (e.g.
            models x epochs); the progress bar counts these.
        label: a short name for the progress display (default: the key).
        info: small JSON-able facts stored with the unit in ``run.json``.
    """

    key: str
    fn: Callable[..., dict]
    task: Any
    work: int = 1
    label: str = ""
    info: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """What ``prepare`` hands the runner: the seeds to record, the shared arrays, and the study's own state.

    Attributes:
        seeds: every seed the run uses (recorded in ``run.json``).
        shared: keyword arguments every unit gets (big arrays; read-only).
        state: anything ``plan``, ``estimate`` and ``report`` need (loaded data, labels...); stays here.
    """

    seeds: dict
    shared: dict = field(default_factory=dict)
    state: Any = None


@dataclass
class Outcome:
    """What ``estimate`` returns.

    Attributes:
        tables: name -> DataFrame, each written as ``<name>.parquet``.
        summary: headline numbers (JSON-able), stored in ``run.json`` and the catalog and printed by the CLI.
        files: extra artifacts: name (with extension) -> dict (written as JSON) or str (text) or bytes.
        detail: the study's own result object (returned to the API caller and handed to ``report``).
        trained, reused: the unit keys this attempt trained and found stored; set by the runner before
            ``report`` is called (a report may say that the run was resumed).
    """

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    detail: Any = None
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Study:
    """A study: its config class and the four functions the runner calls (see the module docstring).

    Attributes:
        kind: the run kind and study name (``"audit"``); also the default ``--out`` is ``runs/<kind>``.
        command: the CLI command that runs it (``"fitscope audit"``), used in resume hints.
        config: the pydantic config class (``extra="forbid"``).
        prepare, plan, estimate, report: the study's functions.
        template: the report's jinja2 template (in ``fitscope/report/templates``); None: no report.
        quick: the values of ``--quick`` (None: the study has no quick setting).
        work_name: what the units' ``work`` counts, for the progress display (``"model-epochs"``).
        flags: config field -> CLI flag where the flag is not ``--`` + the field with dashes
            (``{"noise_levels": "--noise"}``), so that errors name the flag a user types.
    """

    kind: str
    command: str
    config: type[BaseModel]
    prepare: Callable[[Any], Prepared]
    plan: Callable[[Any, Prepared], list[Unit]]
    estimate: Callable[[Any, Prepared, "UnitStore"], Outcome]
    report: Callable[[Any, Prepared, Outcome], dict] | None = None
    template: str | None = None
    quick: dict | None = None
    work_name: str = "steps"
    flags: dict = field(default_factory=dict)

    def flag(self, name: str) -> str:
        """The CLI flag of the config field ``name``."""
        return cli_flag(name, self.flags)

    def make_config(self, values: Mapping[str, Any], *, quick: bool = False) -> BaseModel:
        """The config from ``values`` (``quick``: on top of the quick setting); bad values -> ConfigError."""
        return build_config(self.config, {**self._quick_values(quick), **values}, self.flags)

    def _quick_values(self, quick: bool) -> dict:
        if not quick:
            return {}
        if self.quick is None:
            raise ConfigError(f"--quick: {self.command} has no quick setting")
        return dict(self.quick)


# --------------------------------------------------------------------------- progress


class Progress:
    """Receives the runner's progress; subclass and override what you show. Every method is a no-op here.

    The CLI's rich bar and :class:`PrintProgress` (plain lines) are the two shipped ones; pass your own
    to :func:`run_study` to watch from Python.
    """

    def start(self, *, total: int, units: int, reused: int, where: str, what: str = "steps") -> None:
        """Training starts: ``total`` work (``what``: the units' ``work`` counts) over ``units`` units to train."""

    def advance(self, done: int) -> None:
        """``done`` of ``total`` work is finished (monotone)."""

    def unit_done(self, key: str, *, stored: int, of: int) -> None:
        """Unit ``key`` is stored; ``stored`` of ``of`` units of the study are now stored."""

    def phase(self, name: str) -> None:
        """A step after training starts (``"estimate"``, ``"report"``)."""

    def message(self, text: str) -> None:
        """One line for the person running the study (a damaged unit retrained, units reused)."""


class PrintProgress(Progress):
    """Plain progress lines to a stream (default stderr), at most one every ``every`` seconds.

    What the CLI shows when its output is not a terminal (CI logs), and a simple choice in a notebook:
    ``run_study(..., progress=PrintProgress())``.
    """

    def __init__(self, stream=None, every: float = 10.0) -> None:
        self._stream = stream
        self._every = every
        self._t0 = time.perf_counter()
        self._last = -float("inf")
        self._total = 0

    def _print(self, text: str) -> None:
        print(text, file=self._stream or sys.stderr, flush=True)

    def start(self, *, total: int, units: int, reused: int, where: str, what: str = "steps") -> None:
        """Print what will train."""
        self._t0, self._total = time.perf_counter(), max(int(total), 1)
        self._print(f"training {units} units, {self._total} {what} ({where}); {reused} reused from earlier attempts")

    def advance(self, done: int) -> None:
        """Print the fraction done and the time left, at most every ``every`` seconds."""
        now = time.perf_counter()
        if now - self._last < self._every and done < self._total:
            return
        self._last = now
        self._print(progress_line(done, self._total, now - self._t0))

    def phase(self, name: str) -> None:
        """Print the step."""
        self._print(f"{name}...")

    def message(self, text: str) -> None:
        """Print the line."""
        self._print(text)


def progress_line(done: int, total: int, elapsed: float) -> str:
    """``"37% (370/1000) 1m02s elapsed, about 1m46s left"``: the plain form of the progress bar."""
    frac = done / total if total else 1.0
    left = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
    return (f"{100 * frac:3.0f}% ({done}/{total}) {_clock(elapsed)} elapsed"
            + (f", about {_clock(left)} left" if np.isfinite(left) else ""))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# --------------------------------------------------------------------------- units on disk


class UnitStore(Mapping):
    """The stored units of a run as a read-only mapping key -> arrays, read from disk on access.

    Only the planned units are listed, in plan order; nothing is held in memory between accesses.
    """

    def __init__(self, run, keys: list[str]) -> None:
        self._run = run
        self._keys = list(keys)

    def __getitem__(self, key: str) -> dict[str, np.ndarray]:
        if key not in self._keys:
            raise KeyError(key)
        return self._run.load_unit(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def info(self, key: str) -> dict:
        """The facts stored with unit ``key`` in ``run.json`` (``Unit.info`` plus when it was saved)."""
        return dict(self._run.meta.get("units", {}).get(key, {}))


# --------------------------------------------------------------------------- the runner


@dataclass
class StudyResult:
    """What :func:`run_study` returns.

    Attributes:
        run: the finished :class:`fitscope.runs.Run`.
        config: the resolved config.
        outcome: the study's :class:`Outcome` (``outcome.detail`` is its own result object).
        trained: keys of the units trained by this call; ``reused``: those found stored.
        damaged: keys of stored units found damaged and trained again.
    """

    run: Any
    config: BaseModel
    outcome: Outcome
    trained: list[str]
    reused: list[str]
    damaged: list[str]

    @property
    def report(self) -> Path | None:
        """The report's path (None if the study writes none)."""
        path = self.run.path / "report.html"
        return path if path.is_file() else None


class StudyInterrupted(FitscopeError):
    """Ctrl-C during a study: the message says how many units are saved and the command that resumes it."""


def resume_hint(study: Study, out: str | os.PathLike) -> str:
    """The command that resumes the study in ``out``."""
    return f"{study.command} --out {out} --resume"


def resolve_config(study: Study, values: Mapping[str, Any], out: str | os.PathLike, *, resume: bool,
                   quick: bool = False, rebuild_meta: bool = False) -> BaseModel:
    """The config of a study run: from ``values`` or, resuming, from the run in ``out``.

    ``values`` holds only what the user gave (flags left out are absent). On
    ``resume`` with a readable ``run.json`` the stored config is the base and
    every given value (and the ``--quick`` setting) must agree with it; with
    ``rebuild_meta`` and an unreadable ``run.json``, the config stored inside
    the intact units is the base.

    Raises:
        ConfigError: a bad value, or a given value that differs from the run's.
        RunError: ``out`` holds a run of another study.
    """
    from fitscope.runs.run import RUN_JSON, read_meta

    given = {**study._quick_values(quick), **{k: v for k, v in values.items() if v is not None}}
    stored = None
    if resume and (Path(out) / RUN_JSON).is_file():
        try:
            meta = read_meta(out)
        except RunError:
            if not rebuild_meta:
                raise
            meta = None
        if meta is not None:
            if meta.get("kind") != study.kind:
                raise RunError(f"--resume: {out} is a {meta.get('kind')!r} run, not {study.kind!r}; "
                               "use another --out")
            stored = meta.get("config")
    if stored is None and resume and rebuild_meta:
        from fitscope.runs.run import recover_config

        found = recover_config(out)
        if found is not None and found[0] == study.kind:
            stored = found[1]
    if stored is None:
        return build_config(study.config, given, study.flags)
    base = build_config(study.config, stored, study.flags)
    merged = build_config(study.config, {**stored, **given}, study.flags)
    old, new = base.model_dump(), merged.model_dump()
    for name in given:
        if name in old and old[name] != new[name]:
            flag = study.flag(name)
            raise ConfigError(f"--resume: {flag} {_show(new[name])} differs from the run's {_show(old[name])} "
                              f"in {out}; drop {flag} to resume it, or use another --out")
    return base


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pause_after() -> int | None:
    text = os.environ.get(PAUSE_ENV)
    if not text:
        return None
    try:
        return max(1, int(text))
    except ValueError:
        raise ConfigError(f"{PAUSE_ENV}: expected an integer >= 1, got {text!r}") from None


def _wait_to_be_killed(n: int) -> None:
    print(f"{PAUSE_MARK} {n} units ({PAUSE_ENV}); waiting to be killed", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.05)
    raise SystemExit(3)  # nobody killed it: fail loudly rather than pass


def default_threads(executor: str) -> int:
    """Torch threads per unit when not given: ``FITSCOPE_NUM_THREADS``, else all usable CPUs locally, 1 per Ray task.

    The variable is parsed by :func:`fitscope.runs.executors.env_threads` and the CPUs
    counted by :func:`fitscope.runs.executors.machine_cpus` (the one counter).
    """
    value = env_threads()
    if value is not None:
        return value
    return machine_cpus() if executor == "local" else 1


def run_study(
    study: Study,
    config: BaseModel | Mapping[str, Any],
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    rebuild_meta: bool = False,
    quick: bool = False,
    executor: str = "local",
    address: str | None = None,
    threads: int | None = None,
    device: str | None = None,
    gpus_per_task: float | None = None,
    progress: Progress | None = None,
) -> StudyResult:
    """Run ``study`` into the run directory ``out``: plan, train the missing units, estimate, write, report.

    Args:
        study: the :class:`Study`.
        config: its config object, or a dict of the values given (missing keys
            take the config's defaults or, on ``resume``, the run's own values).
        out: the run directory (default ``runs/<kind>``).
        resume: continue the run in ``out``: stored units are reused, damaged
            ones trained again.
        rebuild_meta: with ``resume``: rebuild an unreadable ``run.json`` from
            the intact units (their own record of the config).
        quick: start from the study's ``--quick`` setting (dict ``config`` only).
        executor: ``"local"`` or ``"ray"``; ``address``: a Ray cluster's address.
        threads: torch threads per unit (default :func:`default_threads`);
            the same value gives the same bits with either executor.
        device: torch device of every unit: ``"cpu"``, ``"cuda"``,
            ``"cuda:<index>"`` (local only) or ``"auto"`` (a GPU when one is
            found here or, with Ray, in the cluster; else the CPU). Default
            ``FITSCOPE_DEVICE`` if set, else ``"cpu"``. The same device gives
            the same bits with either executor.
        gpus_per_task: Ray only: GPUs each unit reserves on CUDA, in (0, 1]
            (default 1; 0.25 lets four units share a GPU).
        progress: a :class:`Progress` (default: silent).

    Returns:
        A :class:`StudyResult`.

    Raises:
        FitscopeError: bad config, data or placement (before anything is
            written), a run that cannot be resumed, a disk that is full, units
            lost on a cluster (``--resume`` then finishes the run).
        StudyInterrupted: Ctrl-C; the run is marked interrupted and resumes.
    """
    from fitscope.runs import Run

    out = Path(out) if out is not None else Path("runs") / study.kind
    progress = progress or Progress()
    if isinstance(config, BaseModel):
        if not isinstance(config, study.config):
            raise ConfigError(f"config: expected a {study.config.__name__}, got {type(config).__name__}")
        cfg = config
    else:
        cfg = resolve_config(study, config, out, resume=resume, quick=quick, rebuild_meta=rebuild_meta)
    executor = check_executor_options(executor, address=address, gpus_per_task=gpus_per_task)
    threads = default_threads(executor) if threads is None else threads
    named = "--device"
    if device is None:
        device, named = (env_device(), DEVICE_ENV) if env_device() else ("cpu", named)
    if executor == "local":  # a Ray cluster's GPUs are known once it is joined; this machine's now
        device = resolve_device(device, named)
    if resume and rebuild_meta is False and not (out / "run.json").exists():
        raise RunError(f"--resume: {out} is not a run directory (no run.json); "
                       "leave out --resume to start a new run there")

    t0 = time.perf_counter()
    prepared = study.prepare(cfg)
    units = study.plan(cfg, prepared)
    _check_units(units)
    prepare_seconds = time.perf_counter() - t0
    pause = _pause_after()
    # The executor is made before the run directory, so a bad --address or --device leaves nothing behind.
    with make_executor(executor, address=address, threads_per_task=threads, device=device,
                       gpus_per_task=gpus_per_task) as ex, \
            Run.create(out, kind=study.kind, config=cfg.model_dump(mode="json"), seeds=prepared.seeds,
                       resume=resume, rebuild_meta=rebuild_meta) as run:
        damaged = list(run.damaged_units)
        for key in damaged:
            progress.message(f"unit {key} was damaged ({run.unit_damage.get(key, 'unreadable')}); training it again")
        attempt = run.meta.setdefault("attempts", [{}])[-1]
        attempt["executor"] = ex.info
        run.timings["prepare"] = round(run.timings.get("prepare", 0.0) + prepare_seconds, 3)
        todo = [u for u in units if not run.has_unit(u.key)]
        todo_keys = {u.key for u in todo}
        reused = [u.key for u in units if u.key not in todo_keys]
        if reused:
            progress.message(f"reused {len(reused)} finished units, training {len(todo)}")
        attempt["reused_units"] = reused
        attempt["trained_units"] = []
        try:
            if todo:
                _train(study, run, ex, units, todo, prepared, progress, pause)
            progress.phase("estimate")
            with run.timer("estimate"):
                outcome = study.estimate(cfg, prepared, UnitStore(run, [u.key for u in units]))
            outcome.trained, outcome.reused = list(attempt["trained_units"]), list(reused)
            _write(study, run, cfg, prepared, outcome, progress)
        except KeyboardInterrupt:
            saved = sum(run.has_unit(u.key) for u in units)
            _mark_failed(run, "interrupted (Ctrl-C)", status="interrupted")
            raise StudyInterrupted(f"interrupted: {saved} of {len(units)} units are saved in {out}; "
                                   f"resume with: {resume_hint(study, out)}") from None
        except WriteError as err:  # disk full, or not writable: say exactly how to continue
            _mark_failed(run, str(err))
            raise RunError(f"{err}; resume with: {resume_hint(study, out)}") from None
        except TaskLost as err:
            saved = sum(run.has_unit(u.key) for u in units)
            _mark_failed(run, str(err))
            raise RunError(f"{err}; {saved} of {len(units)} units are saved: run "
                           f"{resume_hint(study, out)} to finish") from None
        run.finish(summary=outcome.summary)
    return StudyResult(run=run, config=cfg, outcome=outcome, trained=attempt["trained_units"], reused=reused,
                       damaged=damaged)


def _mark_failed(run, message: str, *, status: str = "failed") -> None:
    """Mark ``run`` failed (or ``status``) with ``message`` if its run.json can still be written (a full disk may not)."""
    try:
        run.fail(message, status=status)
    except FitscopeError:
        pass


def _check_units(units: list[Unit]) -> None:
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"study plan: unit keys must be unique; repeated: {dup[:5]}")  # a bug in the study


def _train(study: Study, run, ex, units: list[Unit], todo: list[Unit], prepared: Prepared, progress: Progress,
           pause: int | None) -> None:
    total = sum(max(int(u.work), 1) for u in todo)
    progress.start(total=total, units=len(todo), reused=len(units) - len(todo), where=ex.name,
                   what=study.work_name)
    inside = [0] * len(todo)  # work reported so far by each running unit
    finished_work = 0

    def tick(index: int, done: int) -> None:
        inside[index] = min(int(done), max(int(todo[index].work), 1))
        progress.advance(finished_work + sum(inside))

    groups: dict[Callable, list[int]] = {}
    for i, unit in enumerate(todo):  # one executor call per task function (most studies have one)
        groups.setdefault(unit.fn, []).append(i)
    stored_now = sum(run.has_unit(u.key) for u in units)
    trained = run.meta["attempts"][-1]["trained_units"]
    last = time.perf_counter()
    for fn, indices in groups.items():
        tasks = [todo[i].task for i in indices]
        local_tick = (lambda j, done, _ix=indices: tick(_ix[j], done))
        for j, arrays in ex.map_unordered(fn, tasks, shared=prepared.shared, progress=local_tick):
            i = indices[j]
            unit = todo[i]
            if not isinstance(arrays, dict):
                raise TypeError(f"unit {unit.key}: {fn.__qualname__} returned {type(arrays).__name__}, "
                                "expected a dict of arrays")  # a bug in the study
            now = time.perf_counter()
            run.timings["train"] = round(run.timings.get("train", 0.0) + now - last, 3)
            last = now
            run.save_unit(unit.key, arrays, info={**unit.info, "threads": ex.threads_per_task, "device": ex.device})
            trained.append(unit.key)
            inside[i] = 0
            finished_work += max(int(unit.work), 1)
            stored_now += 1
            progress.advance(finished_work + sum(inside))
            progress.unit_done(unit.key, stored=stored_now, of=len(units))
            if pause is not None and len(trained) >= pause and len(trained) < len(todo):
                run._save()
                _wait_to_be_killed(len(trained))


def _write(study: Study, run, cfg, prepared: Prepared, outcome: Outcome, progress: Progress) -> None:
    """Every artifact, then (by the caller) ``finish``: a run is done only when all of them are written."""
    for name, table in outcome.tables.items():
        run.write_table(name, table)
    for name, value in outcome.files.items():
        if isinstance(value, bytes):
            run.write_bytes(name, value)
        elif isinstance(value, str):
            run.write_text(name, value)
        else:
            run.write_json(name.removesuffix(".json"), value)
    if study.template is not None and study.report is not None:
        from fitscope.report import write_report

        progress.phase("report")
        with run.timer("report"):
            # the report is the last artifact: it shows the status the run will have once it is written
            write_report(run, study.template, study.report(cfg, prepared, outcome), status="done")

