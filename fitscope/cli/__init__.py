"""The ``fitscope`` command line: parses flags, shows progress, calls the API.

Each command group lives in its own module (``fitscope/cli/<group>.py``) and
registers itself on :data:`app`. :func:`main` turns any
:class:`~fitscope.errors.FitscopeError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from fitscope.errors import FitscopeError

app = typer.Typer(
    name="fitscope",
    help="Measure how neural networks fit their data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to ``app``.
    from fitscope.cli import (  # noqa: F401
        audit, data, env, federated, kernels, leak, models, privacy, randomization, runs, train,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except FitscopeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
