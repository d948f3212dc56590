"""Running ``fitscope.cli.main`` in a test: its exit code and what it printed."""

from __future__ import annotations

import pytest

from fitscope.cli import main


def run_main(argv, capsys):
    """Call ``main(argv)``, expect it to exit, and return ``(exit code, captured output)``."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr()


def assert_refused(argv, out, needle, capsys) -> None:
    """``main(argv)`` refuses: exit 2, exactly one line on stderr that contains ``needle``, and no ``out``."""
    code, captured = run_main(argv, capsys)
    assert code == 2, captured.err
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert not out.exists()
