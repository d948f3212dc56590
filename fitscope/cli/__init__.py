"""The ``fitscope`` command line: parses flags, shows progress, calls the API.

Each command group lives in its own module (``fitscope/cli/<group>.py``) and
registers itself on :data:`app`; :func:`main` imports every module of this
package, so a new command module needs no edit here. :func:`main` turns any
:class:`~fitscope.errors.FitscopeError` into one line on stderr and exit code 2.

Third-party chatter (Opacus' and Ray's warnings, Flower's and Ray's INFO logs,
Ray workers' output) is kept off the terminal unless ``--verbose`` is given:
see :func:`quiet_third_party`.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import warnings
from collections.abc import Callable

import click
import typer

from fitscope.errors import FitscopeError

app = typer.Typer(
    name="fitscope",
    help="Measure how neural networks fit their data.",
    epilog="Example: fitscope audit --data digits --noise 0.1 --quick --out runs/demo-audit "
           "(then open runs/demo-audit/report.html).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click already says "Did you mean ...?" for a mistyped command; typer's own suggestion would repeat it
    suggest_commands=False,
)

# Python warnings of these packages are hidden without --verbose (regular expressions on the module
# the warning is attributed to, and on messages that third-party code raises from elsewhere).
QUIET_WARNING_MODULES = (r"opacus(\.|$)", r"ray(\.|$)", r"flwr(\.|$)")
QUIET_WARNING_MESSAGES = (
    r"Optimal order is the largest alpha",  # opacus' RDP accountant
    r"Optimal order is the smallest alpha",
    r".*[Ss]ecure RNG turned off",  # opacus
)
# Loggers kept at ERROR without --verbose (Ray sets its own level again in ray.init: see below).
QUIET_LOGGERS = ("ray", "flwr", "opacus")
# Environment of the processes Ray starts, set only where the user has not set it.
QUIET_ENVIRONMENT = {
    "RAY_LOG_TO_DRIVER": "0",  # workers' stdout/stderr are not copied to this terminal
    "RAY_DEDUP_LOGS": "1",
}

_undo: list[Callable[[], None]] = []


def quiet_third_party(verbose: bool = False) -> None:
    """Keep third-party noise off the terminal unless ``verbose``; our own messages are untouched.

    Without ``verbose``: Python warnings attributed to opacus, ray and flwr
    (and opacus' "Optimal order is the largest alpha" wherever it is raised)
    are ignored; log records below ERROR are dropped for the whole command
    (``logging.disable``), since Ray resets its loggers' level in
    ``ray.init``; ray, flwr and opacus loggers are set to ERROR; Ray's workers
    do not copy their output to this terminal (``RAY_LOG_TO_DRIVER=0`` unless
    set). fitscope's own warnings and one-line errors still show.

    With ``verbose``: nothing is filtered. Either way the previous settings
    come back when the command ends (:func:`restore_third_party`), so calling
    :func:`main` in-process (tests) leaves no trace.
    """
    restore_third_party()
    if verbose:
        return
    saved_filters = warnings.filters[:]
    for module in QUIET_WARNING_MODULES:
        warnings.filterwarnings("ignore", module=module)
    for message in QUIET_WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=message)

    def restore_filters() -> None:
        warnings.filters[:] = saved_filters
        mutated = getattr(warnings, "_filters_mutated", None)  # CPython: invalidate the "already warned" caches
        if mutated is not None:
            mutated()

    _undo.append(restore_filters)

    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.WARNING))

    def restore_logging() -> None:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        logging.disable(disabled)

    _undo.append(restore_logging)

    set_here = [key for key in QUIET_ENVIRONMENT if key not in os.environ]
    for key in set_here:
        os.environ[key] = QUIET_ENVIRONMENT[key]

    def restore_environment() -> None:
        for key in set_here:
            os.environ.pop(key, None)

    _undo.append(restore_environment)


def restore_third_party() -> None:
    """Undo :func:`quiet_third_party`: the warning filters, log levels and environment from before."""
    while _undo:
        _undo.pop()()


@app.callback()
def _global_options(
    ctx: typer.Context,
    verbose: bool = typer.Option(
        False, "--verbose",
        help="Also show third-party warnings and logs (Opacus, Ray, Flower), hidden by default. "
             "Give it before the command: fitscope --verbose audit ..."),
) -> None:
    """Measure how neural networks fit their data.

    Example: fitscope audit --data digits --noise 0.1 --quick --out runs/demo-audit
    """
    quiet_third_party(verbose)
    ctx.call_on_close(restore_third_party)  # also when the app is invoked without main() (tests)


def _register() -> None:
    """Import every command module of this package (each adds its commands to ``app``)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def usage_error_line(err: click.UsageError) -> str:
    """One line for a usage error (unknown command or flag, bad flag value): the message, where it was given, and
    where the help is; click's suggestion ("Did you mean ...?") is part of the message."""
    message = " ".join(err.format_message().split())
    where = err.ctx.command_path if err.ctx is not None else "fitscope"
    return f"error: {where}: {message} (see `{where} --help`)"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script.

    Every error is one line on stderr and exit code 2: a :class:`~fitscope.errors.FitscopeError` from the
    library, and click's usage errors (an unknown command such as ``fitscope dynamics nosuch``, an unknown
    flag, a value of the wrong type), which click would otherwise draw as a box of several lines.
    """
    _register()
    try:
        code = app(args=argv, prog_name="fitscope", standalone_mode=False)
    except FitscopeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.NoArgsIsHelpError as err:  # a group given no command: its help, as click shows it
        from typer import rich_utils

        rich_utils.rich_format_error(err)
        sys.exit(err.exit_code)
    except click.UsageError as err:
        print(usage_error_line(err), file=sys.stderr)
        sys.exit(2)
    except click.ClickException as err:
        print(f"error: {' '.join(err.format_message().split())}", file=sys.stderr)
        sys.exit(err.exit_code)
    except click.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    finally:
        restore_third_party()
    sys.exit(code if isinstance(code, int) else 0)
