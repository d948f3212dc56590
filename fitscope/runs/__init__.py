"""Run directories, their catalog and atomic writes.

- :class:`Run`: one directory per job (``run.json``, units of work for resume,
  tables and artifacts, ``report.html``); see :mod:`fitscope.runs.run`.
- :class:`Catalog`: the SQLite index ``<root>/catalog.sqlite`` of the runs
  under a runs root.
- ``atomic_*``: writes that leave either the old file or the complete new one;
  a write the system refuses (e.g. a full disk) raises :class:`WriteError`.
- :func:`recover_config`: the kind, config and seeds of a run, from its
  ``run.json`` or, when that is lost, from the record inside its units.
- :func:`make_executor`: where a job's tasks run, ``local`` (in this process)
  or ``ray`` (a local Ray or a cluster); see :mod:`fitscope.runs.executors`.
- :func:`versions`: the versions recorded in every run and printed by
  ``fitscope env``.
"""

from fitscope.runs.atomic import (
    WriteError,
    atomic_open,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
)
from fitscope.runs.catalog import Catalog
from fitscope.runs.executors import (
    EXECUTORS,
    Executor,
    LocalExecutor,
    RayExecutor,
    TaskError,
    check_task_function,
    make_executor,
)
from fitscope.runs.run import Run, config_hash, read_meta, recover_config, try_read_meta
from fitscope.runs.versions import versions

__all__ = [
    "EXECUTORS",
    "Catalog",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "TaskError",
    "Run",
    "WriteError",
    "atomic_open",
    "atomic_save_npz",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "check_task_function",
    "config_hash",
    "make_executor",
    "read_meta",
    "recover_config",
    "try_read_meta",
    "versions",
]
