"""``fitscope runs list|show`` and ``fitscope env``: output through CliRunner, errors through main()."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import fitscope.cli
import fitscope.cli.env  # noqa: F401 - registers `env`
import fitscope.cli.runs  # noqa: F401 - registers `runs`
from fitscope.cli import app
from fitscope.runs import Run
from cli_helpers import run_main as _main

runner = CliRunner()


@pytest.fixture()
def root(tmp_path):
    """A runs root with a finished run (with a report and a unit) and a failed one."""
    root = tmp_path / "runs"
    with Run.create(root / "first", kind="randomization", config={"noise": [0, 0.5], "train": {"lr": 0.1}},
                    seeds={"data_seed": 3}) as run:
        with run.timer("train"):
            pass
        run.save_unit("noise", {"acc": [0.5]})
        run.write_text("report.html", "<html></html>")
        run.finish(summary={"test_acc": 0.97})
    failed = Run.create(root / "second", kind="audit", config={"k": 1}, seeds={})
    failed.fail("ran out of memory")
    return root


@pytest.fixture()
def only_my_commands(monkeypatch):
    """main() registers just the runs and env commands (other groups are tested elsewhere)."""
    monkeypatch.setattr(fitscope.cli, "_register", lambda: None)




def test_runs_list_shows_every_run(root):
    result = runner.invoke(app, ["runs", "list", "--root", str(root)])
    assert result.exit_code == 0, result.output
    first = Run.open(root / "first")
    second = Run.open(root / "second")
    for needle in (first.id, second.id, "done", "failed", "randomization", "audit"):
        assert needle in result.output
    assert result.output.index(second.id) < result.output.index(first.id)  # newest first
    result = runner.invoke(app, ["runs", "list", "--root", str(root), "--kind", "audit"])
    assert second.id in result.output and first.id not in result.output


def test_runs_list_of_an_empty_root(tmp_path):
    result = runner.invoke(app, ["runs", "list", "--root", str(tmp_path)])
    assert result.exit_code == 0 and "no runs in" in result.output


def test_runs_show_by_prefix_and_by_path(root):
    run = Run.open(root / "first")
    for ref in ("randomization", str(root / "first"), run.id):
        result = runner.invoke(app, ["runs", "show", ref, "--root", str(root)])
        assert result.exit_code == 0, result.output
        out = result.output
        assert run.id in out and "done" in out
        for needle in ("noise", "[0, 0.5]", "train.lr", "data_seed", "timings", "train", "total",
                       "test_acc", "units: 1", "report.html", str(run.path / "report.html")):
            assert needle in out, needle
    failed = runner.invoke(app, ["runs", "show", "audit", "--root", str(root)])
    assert "failed" in failed.output and "ran out of memory" in failed.output
    assert "not written yet" in failed.output


def test_runs_show_json(root):
    result = runner.invoke(app, ["runs", "show", "audit", "--root", str(root), "--json"])
    assert json.loads(result.output)["error"] == "ran out of memory"


def test_env_prints_versions():
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    for needle in ("python", "torch", "numpy", "pandas", "torch_threads", "fitscope"):
        assert needle in result.output
    data = json.loads(runner.invoke(app, ["env", "--json"]).output)
    assert data["fitscope"] == fitscope.__version__


def test_help_texts_carry_examples():
    for argv in (["runs", "list", "--help"], ["runs", "show", "--help"], ["env", "--help"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0 and "Example: fitscope" in result.output


@pytest.mark.parametrize("argv, needle", [
    (["runs", "list", "--root", "{tmp}/nowhere"], "--root"),
    (["runs", "show", "zzz", "--root", "{root}"], "no run 'zzz'"),
    (["runs", "show", "{tmp}", "--root", "{root}"], "not a run directory"),
])
def test_errors_are_one_line_and_exit_2(root, tmp_path, capsys, only_my_commands, argv, needle):
    argv = [a.format(tmp=tmp_path, root=root) for a in argv]
    code, captured = _main(argv, capsys)
    assert code == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "Traceback" not in captured.err


def test_ambiguous_prefix_lists_the_candidates(root, capsys, only_my_commands):
    other = Run.create(root / "third", kind="randomization", config={}, seeds={})
    code, captured = _main(["runs", "show", "randomization", "--root", str(root)], capsys)
    assert code == 2 and "ambiguous" in captured.err and other.id in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_main_runs_a_command(root, capsys, only_my_commands):
    code, captured = _main(["runs", "list", "--root", str(root)], capsys)
    assert code in (0, None) and "randomization" in captured.out


# -- faults: a catalog that cannot be written or read, a damaged run.json ------------------------
def _catalog_writes_fail(monkeypatch):
    """sqlite3.connect as on a full disk: read-only opens work, anything that would write fails."""
    import sqlite3

    real = sqlite3.connect

    def connect(database, *args, uri=False, **kwargs):
        if uri and str(database).endswith("?mode=ro"):
            return real(database, *args, uri=uri, **kwargs)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_runs_list_when_the_catalog_cannot_be_written(root, capsys, monkeypatch, only_my_commands):
    from fitscope.runs.atomic import atomic_write_json

    first = Run.open(root / "first")
    atomic_write_json(first.path / "run.json", dict(first.meta, status="failed"))  # refresh must write
    _catalog_writes_fail(monkeypatch)
    code, captured = _main(["runs", "list", "--root", str(root)], capsys)
    assert code in (0, None), captured.err
    assert first.id in captured.out and Run.open(root / "second").id in captured.out
    assert "failed" in captured.out and "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "listed from the run directories" in lines[0]
    assert "database or disk is full" in lines[0]


def test_runs_list_with_nothing_to_write_reads_the_catalog_read_only(root, capsys, monkeypatch,
                                                                     only_my_commands):
    _catalog_writes_fail(monkeypatch)
    code, captured = _main(["runs", "list", "--root", str(root)], capsys)
    assert code in (0, None) and captured.err == ""
    assert Run.open(root / "first").id in captured.out


def test_runs_list_and_show_with_a_damaged_catalog(root, capsys, only_my_commands):
    for extra in root.glob("catalog.sqlite*"):
        extra.unlink()
    (root / "catalog.sqlite").write_bytes(b"not a database" * 200)
    code, captured = _main(["runs", "list", "--root", str(root)], capsys)
    assert code in (0, None) and Run.open(root / "first").id in captured.out
    assert "cannot be read" in captured.err and "Traceback" not in captured.err
    result = runner.invoke(app, ["runs", "show", "randomization", "--root", str(root)])
    assert result.exit_code == 0 and Run.open(root / "first").id in result.output


def test_runs_show_of_a_run_with_a_damaged_run_json(root, capsys, only_my_commands):
    (root / "first" / "run.json").write_text("{", encoding="utf-8")
    code, captured = _main(["runs", "show", str(root / "first"), "--root", str(root)], capsys)
    assert code == 2 and "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be read" in lines[0] and "--resume --rebuild-meta" in lines[0]
    result = runner.invoke(app, ["runs", "list", "--root", str(root)])
    assert result.exit_code == 0 and "damaged" in result.output
