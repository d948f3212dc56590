"""``fitscope env``: the versions to paste into a bug report, and the torch threads and device a study will use."""

from __future__ import annotations

import json
import os
import sys

import typer
from rich.console import Console
from rich.table import Table

from fitscope.cli import app
from fitscope.errors import FitscopeError
from fitscope.runs import versions

THREADS_ENV = "FITSCOPE_NUM_THREADS"


def thread_settings() -> dict:
    """The torch threads of this process, and the threads per unit a study run would use on each executor.

    Returns a dict: ``torch_threads`` (``torch.get_num_threads()`` here and
    now; a study sets its own count per unit, so this is not what it uses),
    ``FITSCOPE_NUM_THREADS`` (its value, or None), ``usable_cpus`` (CPUs this
    process may run on), ``per_unit_local`` and ``per_unit_ray`` (the threads
    per unit of a run without ``--threads``: ``FITSCOPE_NUM_THREADS`` if set,
    else every usable CPU with ``--executor local`` and 1 per Ray task), and
    ``source`` (where those come from). An invalid ``FITSCOPE_NUM_THREADS``
    gives the error text in ``per_unit_local`` and ``per_unit_ray``.
    """
    import torch

    from fitscope.experiments.study import default_threads
    from fitscope.runs.executors import machine_cpus

    env = os.environ.get(THREADS_ENV) or None
    out: dict = {"torch_threads": torch.get_num_threads(), THREADS_ENV: env, "usable_cpus": machine_cpus()}
    try:
        out["per_unit_local"] = default_threads("local")
        out["per_unit_ray"] = default_threads("ray")
    except FitscopeError as err:
        out["per_unit_local"] = out["per_unit_ray"] = f"invalid: {err}"
    out["source"] = THREADS_ENV if env else "default (all usable CPUs locally, 1 per Ray task)"
    return out


def device_settings() -> dict:
    """The devices torch finds here and the device a study run uses without ``--device``.

    Returns a dict: ``found`` (``["cpu", "cuda:0", ...]``), ``FITSCOPE_DEVICE``
    (its value, or None) and ``per_unit_local`` (the device of a local run
    without ``--device``: ``FITSCOPE_DEVICE`` resolved, else cpu; the error
    text when it names a device not found).
    """
    from fitscope.runs.devices import DEVICE_ENV, default_device, devices_found

    out: dict = {"found": devices_found(), DEVICE_ENV: os.environ.get(DEVICE_ENV) or None}
    try:
        out["per_unit_local"] = default_device()
    except FitscopeError as err:
        out["per_unit_local"] = f"invalid: {err}"
    return out


@app.command("env")
def env_command(
    as_json: bool = typer.Option(False, "--json", help="Print the versions, thread and device settings as JSON."),
) -> None:
    """Print the versions of Python, the platform, fitscope and its dependencies (for bug reports).

    Also the torch threads: this process's torch.get_num_threads(), and the
    threads per unit a study uses (FITSCOPE_NUM_THREADS if set, else all usable
    CPUs with --executor local, 1 per Ray task; --threads overrides both), and
    the devices torch finds (a study's --device; default FITSCOPE_DEVICE, else cpu).

    Example: fitscope env
    """
    info = versions()
    info["executable"] = sys.executable
    threads = thread_settings()
    devices = device_settings()
    if as_json:
        typer.echo(json.dumps({**info, "threads": threads, "devices": devices}, indent=2, sort_keys=True,
                              default=str))
        return
    table = Table(title="fitscope env", title_justify="left", show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in info.items():
        if key == "torch_threads":
            continue  # shown below with the per-unit threads, labelled
        table.add_row(key, "not installed" if value is None and key not in ("cuda",) else str(value))
    table.add_section()
    table.add_row("torch_threads (this process)",
                  f"{threads['torch_threads']}  (torch.get_num_threads(); a study sets its own, below)")
    table.add_row(THREADS_ENV, threads[THREADS_ENV] or "not set")
    table.add_row("usable CPUs", str(threads["usable_cpus"]))
    source = f"from {THREADS_ENV}" if threads[THREADS_ENV] else "all usable CPUs"
    table.add_row("study threads per unit, --executor local", f"{threads['per_unit_local']}  ({source})")
    source = f"from {THREADS_ENV}" if threads[THREADS_ENV] else "1 per Ray task"
    table.add_row("study threads per unit, --executor ray", f"{threads['per_unit_ray']}  ({source})")
    table.add_section()
    table.add_row("devices found (torch)", ", ".join(devices["found"]))
    source = "from FITSCOPE_DEVICE" if devices["FITSCOPE_DEVICE"] else "default; --device cuda|auto for a GPU"
    table.add_row("study device per unit, this machine", f"{devices['per_unit_local']}  ({source})")
    Console(highlight=False).print(table)
    if threads[THREADS_ENV] is None:
        typer.echo(f"--threads N on a study, or {THREADS_ENV}=N, sets the threads per unit.")
