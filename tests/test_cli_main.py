"""The top level of ``fitscope``: mistyped commands, --help, --verbose and third-party noise, ``env``."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings

import pytest

from cli_helpers import run_main
from fitscope.errors import ConfigError

OPACUS_MESSAGE = ("Optimal order is the largest alpha. Please consider expanding the range of alphas to get a "
                  "tighter privacy bound.")


@pytest.mark.parametrize("argv, suggestion", [(["audt"], "'audit'"), (["runs", "lst"], "'list'")])
def test_a_mistyped_command_is_suggested_once(capsys, argv, suggestion):
    code, captured = run_main(argv, capsys)
    assert code == 2
    assert captured.err.count("Did you mean") == 1 and suggestion in captured.err


@pytest.mark.parametrize("argv, words", [
    (["dynamics", "nosuch"], ["fitscope dynamics", "No such command 'nosuch'"]),
    (["audit", "--nosuch", "1"], ["fitscope audit", "No such option '--nosuch'"]),
    (["audit", "--models", "abc"], ["fitscope audit", "'--models'", "'abc' is not a valid integer"]),
])
def test_a_usage_error_is_one_line_and_exit_2(capsys, argv, words):
    code, captured = run_main(argv, capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert all(word in lines[0] for word in words), lines[0]
    assert "--help" in lines[0] and not captured.out


def test_a_group_without_a_command_shows_its_help(capsys):
    code, captured = run_main(["dynamics"], capsys)
    assert code == 2 and "sharpness" in captured.out + captured.err


def test_top_level_help_has_an_example_and_the_verbose_option(capsys):
    code, captured = run_main(["--help"], capsys)
    assert code == 0
    assert "Example: fitscope audit" in captured.out and "--verbose" in captured.out


@pytest.fixture()
def noisy_command(monkeypatch):
    """A hidden command that warns like Opacus, like fitscope itself, logs like a library, then fails.

    ``warnings.showwarning`` prints to stderr (pytest would otherwise record the warnings instead).
    """
    from fitscope.cli import app

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", show)

    def noisy() -> None:
        warnings.warn_explicit(OPACUS_MESSAGE, UserWarning, "opacus/accountants/analysis/rdp.py", 332,
                               module="opacus.accountants.analysis.rdp")
        warnings.warn_explicit("ray chatter", FutureWarning, "ray/_private/worker.py", 1, module="ray._private.worker")
        warnings.warn_explicit("our own warning", UserWarning, "fitscope/runs/run.py", 1, module="fitscope.runs.run")
        logging.getLogger("opacus.fitscope_test").warning("library log line")
        raise ConfigError("--flag: our own one-line error")

    app.command("noisy-test", hidden=True)(noisy)
    yield
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != "noisy-test"]


def test_third_party_warnings_and_logs_are_hidden_without_verbose(noisy_command, capsys, caplog):
    filters_before = list(warnings.filters)
    code, captured = run_main(["noisy-test"], capsys)
    assert code == 2
    assert "Optimal order is the largest alpha" not in captured.err and "ray chatter" not in captured.err
    assert "library log line" not in caplog.text
    # ours still show: the warning of fitscope's own module and the one-line error
    assert "our own warning" in captured.err
    assert captured.err.strip().splitlines()[-1] == "error: --flag: our own one-line error"
    # and nothing stays changed after the command
    assert list(warnings.filters) == filters_before and logging.root.manager.disable == logging.NOTSET


def test_verbose_shows_third_party_warnings_and_logs(noisy_command, capsys, caplog):
    code, captured = run_main(["--verbose", "noisy-test"], capsys)
    assert code == 2
    assert "Optimal order is the largest alpha" in captured.err and "ray chatter" in captured.err
    assert "library log line" in caplog.text
    assert "our own warning" in captured.err and "error: --flag: our own one-line error" in captured.err


def test_quiet_settings_are_undone_and_respect_the_users_environment(monkeypatch):
    from fitscope.cli import quiet_third_party, restore_third_party

    monkeypatch.setenv("RAY_LOG_TO_DRIVER", "1")
    monkeypatch.delenv("RAY_DEDUP_LOGS", raising=False)
    before = list(warnings.filters)
    quiet_third_party(verbose=False)
    try:
        assert os.environ["RAY_LOG_TO_DRIVER"] == "1"  # the user's choice is kept
        assert os.environ["RAY_DEDUP_LOGS"] == "1"
        assert logging.getLogger("flwr").level == logging.ERROR
        assert len(warnings.filters) > len(before)
    finally:
        restore_third_party()
    assert "RAY_DEDUP_LOGS" not in os.environ and list(warnings.filters) == before
    quiet_third_party(verbose=True)  # verbose: nothing is filtered
    assert list(warnings.filters) == before and logging.root.manager.disable == logging.NOTSET
    restore_third_party()


def test_env_shows_torch_threads_and_the_threads_per_unit(capsys, monkeypatch):
    import torch

    from fitscope.runs.executors import machine_cpus

    monkeypatch.delenv("FITSCOPE_NUM_THREADS", raising=False)
    code, captured = run_main(["env", "--json"], capsys)
    assert code == 0
    threads = json.loads(captured.out)["threads"]
    assert threads["torch_threads"] == torch.get_num_threads()
    assert threads["per_unit_local"] == machine_cpus() and threads["per_unit_ray"] == 1
    assert threads["FITSCOPE_NUM_THREADS"] is None

    monkeypatch.setenv("FITSCOPE_NUM_THREADS", "3")
    code, captured = run_main(["env"], capsys)
    assert code == 0
    out = " ".join(captured.out.split())
    assert "torch_threads (this process)" in out and "torch.get_num_threads()" in out
    for line in captured.out.splitlines():
        if "--executor local" in line or "--executor ray" in line:
            assert "3" in line and "FITSCOPE_NUM_THREADS" in line

    monkeypatch.setenv("FITSCOPE_NUM_THREADS", "many")
    code, captured = run_main(["env", "--json"], capsys)
    assert code == 0 and json.loads(captured.out)["threads"]["per_unit_local"].startswith("invalid")


def _command_paths():
    import click
    import typer

    from fitscope.cli import _register, app

    _register()
    paths = []

    def walk(cmd, prefix):
        paths.append(prefix)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, prefix + [name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_help_has_an_example(capsys):
    paths = _command_paths()
    assert ["audit"] in paths and ["kernels", "uci"] in paths and ["seed-agreement"] in paths
    missing = []
    for path in paths:
        code, captured = run_main(path + ["--help"], capsys)
        assert code in (0, None), path
        if "example" not in captured.out.lower():
            missing.append(" ".join(path) or "(top level)")
    assert not missing, f"help without an example: {missing}"
