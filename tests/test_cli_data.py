"""``fitscope data list`` and ``fitscope data show``: output, sample grids and one-line errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import fitscope.cli.data  # noqa: F401  (registers the commands)
from fitscope.cli import app
from cli_helpers import run_main as _main

runner = CliRunner()




def test_list_shows_builtins_and_file_kinds():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    for name in ("digits", "iris", "wine", "breast_cancer", "mnist1d", ".npz", ".csv", "IDX", "CIFAR", "image folder"):
        assert name in result.output


def test_show_digits_prints_shapes_counts_and_writes_grid(tmp_path):
    grid = tmp_path / "out" / "g.png"
    result = runner.invoke(app, ["data", "show", "digits", "--seed", "1", "--grid", str(grid)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "digits" in out and "(1437, 1, 8, 8) float32" in out and "(360,) int64" in out
    assert "seed=1" in out and "examples per class" in out and "total" in out
    assert f"sample grid: {grid}" in out.replace("\n", "")
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.size[0] > 200


def test_show_default_grid_path_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["data", "show", "digits"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "digits_samples.png").is_file()


def test_show_signals_and_vectors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "waves.npz", x=rng.normal(size=(30, 2, 16)), y=np.arange(30) % 3)
    result = runner.invoke(app, ["data", "show", str(tmp_path / "waves.npz")])
    assert result.exit_code == 0, result.output
    assert "signal" in result.output and (tmp_path / "waves_samples.png").is_file()
    result = runner.invoke(app, ["data", "show", "iris"])
    assert result.exit_code == 0 and "no sample grid" in result.output
    assert "setosa" in result.output


def test_show_csv_with_label_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("kind,a,b\n" + "".join(f"{'xy'[i % 2]},{i},{i * i % 7}\n" for i in range(20)))
    result = runner.invoke(app, ["data", "show", str(path), "--label-column", "kind", "--no-grid"])
    assert result.exit_code == 0, result.output
    assert "x (16, 2) float32" in result.output and "│ x " in result.output


def test_help_texts_have_examples():
    for args in (["data", "--help"], ["data", "list", "--help"], ["data", "show", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Example: fitscope data" in result.output


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["data", "show", "nope"], "unknown data source 'nope'"),
        (["data", "show", "missing/file.npz"], "no such file or folder"),
        (["data", "show", "digits", "--test-fraction", "1.5"], "test_fraction: expected a number in (0, 1)"),
        (["data", "show", "digits", "--label-column", "x"],
         "label_column: expected None for the built-in data set 'digits'"),
    ],
)
def test_errors_are_one_line_exit_2(argv, needle, capsys):
    code, captured = _main(argv, capsys)
    assert code == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


def test_malicious_pickle_via_cli_is_refused(tmp_path, capsys):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(Payload()))
    code, captured = _main(["data", "show", str(folder)], capsys)
    assert code == 2 and f"refusing to unpickle {os.system.__module__}.system from data_batch_1" in captured.err
    assert not (tmp_path / "pwned").exists()
