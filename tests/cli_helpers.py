"""Running ``fitscope.cli.main`` in a test: its exit code and what it printed."""

from __future__ import annotations

import pytest

from fitscope.cli import main


def run_main(argv, capsys):
    """Call ``main(argv)``, expect it to exit, and return ``(exit code, captured output)``."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr()
