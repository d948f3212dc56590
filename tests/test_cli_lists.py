"""Flags renamed to one word per idea keep their old name as a hidden, deprecated alias (``fitscope.cli.lists``)."""

from __future__ import annotations

import importlib
import re

import pytest

import fitscope.cli.kernels  # noqa: F401  (registers the commands)
import fitscope.cli.privacy  # noqa: F401
import fitscope.cli.randomization  # noqa: F401
from cli_helpers import run_main

# (module whose run_command is replaced, command words, new flag, old flag, value, config field, parsed)
ALIASES = [
    ("fitscope.cli.randomization", ["randomization"], "--corrupt-prob", "--noise", "0,0.5,1", "noise_levels",
     [0.0, 0.5, 1.0]),
    ("fitscope.cli.kernels", ["kernels", "complexity"], "--corrupt-prob", "--noise", "0,0.5,1", "noise_levels",
     [0.0, 0.5, 1.0]),
    ("fitscope.cli.privacy", ["privacy-study"], "--models", "--shadow-models", "8", "models", 8),
]


@pytest.mark.parametrize("module, words, new, old, value, field, parsed", ALIASES, ids=[a[3] for a in ALIASES])
def test_a_deprecated_alias_gives_the_same_config_with_a_note(module, words, new, old, value, field, parsed,
                                                              monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(importlib.import_module(module), "run_command", lambda study, values, **kw: seen.append(values))
    code, with_new = run_main([*words, new, value, "--out", "x"], capsys)
    assert code in (0, None), with_new.err
    code, with_old = run_main([*words, old, value, "--out", "x"], capsys)
    assert code in (0, None), with_old.err
    assert seen[0] == seen[1] and seen[0][field] == parsed
    assert "deprecated" not in with_new.err
    note = [line for line in with_old.err.splitlines() if line.strip()]
    assert len(note) == 1 and f"{old} is deprecated; use {new}" in note[0]


@pytest.mark.parametrize("module, words, new, old, value, field, parsed", ALIASES, ids=[a[3] for a in ALIASES])
def test_the_alias_is_hidden_and_both_together_are_one_line_exit_2(module, words, new, old, value, field, parsed,
                                                                   tmp_path, capsys):
    code, captured = run_main([*words, "--help"], capsys)
    assert code in (0, None) and new in captured.out
    assert not re.search(rf"{old}\s+(TEXT|INTEGER)", captured.out)  # no option row for the alias
    out = tmp_path / "run"
    code, captured = run_main([*words, old, value, new, value, "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert captured.err.strip() == f"error: {old}: expected it left out with {new} (it is its deprecated alias), " \
                                   f"got {old} {value} and {new} {value}"
