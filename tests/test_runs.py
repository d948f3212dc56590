"""The run store: atomic writes, run directories (create/open/resume, units, artifacts, timings), catalog."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitscope.errors import RunError
from fitscope.runs import (
    Catalog,
    Run,
    atomic_open,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    config_hash,
    versions,
)
from fitscope.runs.atomic import _FILE_MODE, TEMP_SUFFIX

CONFIG = {"model": "mlp:64x1", "noise": [0, 0.5], "train": {"lr": 0.1, "epochs": 4}}
SEEDS = {"data_seed": 0, "model_seeds": [0, 1]}


def _temps(directory: Path) -> list[Path]:
    return list(directory.rglob(f"*{TEMP_SUFFIX}"))


def _make(out: Path, **kwargs) -> Run:
    args = dict(kind="demo", config=CONFIG, seeds=SEEDS)
    args.update(kwargs)
    return Run.create(out, **args)


# -- atomic writes ----------------------------------------------------------
def test_atomic_writers_round_trip(tmp_path):
    assert atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    df = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    atomic_write_parquet(tmp_path / "t.parquet", df)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df)
    atomic_save_npz(tmp_path / "u.npz", a=np.arange(3), b=np.eye(2, dtype=np.float32))
    with np.load(tmp_path / "u.npz") as z:
        assert z["a"].tolist() == [0, 1, 2] and z["b"].dtype == np.float32
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == _FILE_MODE  # not mkstemp's 0600
    assert _temps(tmp_path) == []


def test_atomic_json_converts_numpy_sorts_keys_and_indents(tmp_path):
    obj = {"b": np.float32(0.5), "a": np.arange(3), np.int64(7): np.bool_(True), "p": tmp_path, "t": (1, 2)}
    atomic_write_json(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text) == {"7": True, "a": [0, 1, 2], "b": 0.5, "p": str(tmp_path), "t": [1, 2]}
    assert text.index('"7"') < text.index('"a"') < text.index('"b"')
    assert '\n  "a": [' in text
    with pytest.raises(TypeError, match="object"):
        atomic_write_json(tmp_path / "y.json", {"a": 1, "z": object()})
    assert not (tmp_path / "y.json").exists()


@pytest.mark.parametrize("existed", [True, False])
def test_writer_raising_mid_way_leaves_old_file_and_no_temp(tmp_path, existed):
    target = tmp_path / "data.bin"
    if existed:
        target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(target) as handle:
            handle.write(b"half of the new")
            handle.flush()
            raise RuntimeError("disk on fire")
    assert (target.read_bytes() == b"old content") if existed else not target.exists()
    assert _temps(tmp_path) == []


def test_parquet_and_npz_failing_mid_way_leave_old_file(tmp_path, monkeypatch):
    table = tmp_path / "t.parquet"
    old = pd.DataFrame({"x": [1]})
    atomic_write_parquet(table, old)

    def broken_to_parquet(self, handle, **kwargs):
        handle.write(b"PAR1 partial bytes")
        raise OSError("no space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken_to_parquet)
    with pytest.raises(OSError, match="no space"):
        atomic_write_parquet(table, pd.DataFrame({"x": [1, 2, 3]}))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(table), old)

    def broken_savez(handle, **arrays):
        handle.write(b"PK partial")
        raise MemoryError("out of memory")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(MemoryError):
        atomic_save_npz(tmp_path / "u.npz", a=np.arange(3))
    assert not (tmp_path / "u.npz").exists()
    assert _temps(tmp_path) == []


def test_failed_rename_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.txt"
    target.write_text("old")

    def no_replace(src, dst):
        raise PermissionError("read-only")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError) as err:  # a WriteError: an OSError and a one-line RunError
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert isinstance(err.value, RunError)
    assert str(err.value) == f"cannot write {target} (read-only): check the disk, then run again"
    assert target.read_text() == "old" and _temps(tmp_path) == []


def test_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="object"):
        atomic_save_npz(tmp_path / "o.npz", a=np.array([{}, None], dtype=object))


def test_versions_lists_the_stack():
    info = versions()
    for key in ("python", "platform", "fitscope", "torch", "numpy", "scipy", "sklearn", "pandas", "pyarrow",
                "torch_threads"):
        assert key in info
    assert info["numpy"] == np.__version__ and info["torch_threads"] >= 1


# -- create / open / resume ------------------------------------------------
def test_create_writes_run_json_and_registers(tmp_path):
    run = _make(tmp_path / "r", config={**CONFIG, "noise": (0, 0.5)})
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert re.fullmatch(r"demo-\d{8}-\d{6}-[0-9a-f]{6}", meta["id"]) and meta["id"] == run.id
    assert meta["status"] == "running" and meta["kind"] == "demo"
    assert meta["config"] == CONFIG and meta["config_hash"] == config_hash(CONFIG)
    assert meta["seeds"] == SEEDS and meta["argv"] == sys.argv and meta["timings"] == {}
    assert meta["versions"]["numpy"] == np.__version__
    assert meta["created"].endswith("+00:00") and len(meta["attempts"]) == 1
    assert run.path == (tmp_path / "r").absolute() and run.config == CONFIG and run.seeds == SEEDS
    rows = Catalog(tmp_path).list()
    assert [(r["id"], r["status"], r["path"]) for r in rows] == [(run.id, "running", str(run.path))]
    opened = Run.open(tmp_path / "r")
    assert opened.id == run.id and opened.meta == meta


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_existing_run_needs_resume(tmp_path):
    _make(tmp_path / "x").finish()
    with pytest.raises(RunError) as err:
        _make(tmp_path / "x")
    assert str(err.value) == (f"{tmp_path / 'x'} already holds a run (status done); "
                              "pass --resume to continue it or choose another --out")


def test_resume_with_other_config_names_the_differences(tmp_path):
    _make(tmp_path / "x")
    other = {**CONFIG, "noise": [0, 1], "train": {"lr": 0.2, "epochs": 4}}
    with pytest.raises(RunError) as err:
        _make(tmp_path / "x", config=other, resume=True)
    message = str(err.value)
    assert message.startswith(f"--resume: {tmp_path / 'x'} was made with a different config (")
    assert "noise: [0,0.5] vs [0,1]" in message and "train.lr: 0.1 vs 0.2" in message
    assert message.endswith("; use another --out")
    assert "\n" not in message


def test_resume_with_other_seeds_is_refused(tmp_path):
    _make(tmp_path / "x")
    with pytest.raises(RunError, match=r"different seeds \(data_seed: 0 vs 1\)"):
        _make(tmp_path / "x", seeds={**SEEDS, "data_seed": 1}, resume=True)


def test_resume_reopens_and_keeps_units(tmp_path):
    run = _make(tmp_path / "x")
    run.save_unit("a", {"v": np.arange(4)})
    run.finish(summary={"acc": 0.9})
    again = _make(tmp_path / "x", resume=True)
    assert again.id == run.id and again.status == "running"
    assert "summary" not in again.meta and "finished" not in again.meta
    assert len(again.meta["attempts"]) == 2 and again.meta["attempts"][0]["status"] == "done"
    assert again.has_unit("a") and again.load_unit("a")["v"].tolist() == [0, 1, 2, 3]
    assert Catalog(tmp_path).get(run.id)["status"] == "running"


def test_resume_of_nothing_creates(tmp_path):
    run = _make(tmp_path / "fresh", resume=True)
    assert run.status == "running" and (tmp_path / "fresh" / "run.json").is_file()


def test_out_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty but holds no run"):
        _make(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        _make(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert _make(tmp_path / "empty").status == "running"


def test_open_refuses_non_runs(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        Run.open(tmp_path / "nope")
    with pytest.raises(RunError, match="not a run directory"):
        Run.open(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="cannot be read"):
        Run.open(tmp_path / "bad")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(kind="no spaces"), "kind"),
    (dict(config=[1, 2]), "config"),
    (dict(config={"f": object()}), "JSON"),
])
def test_create_validates_arguments(tmp_path, kwargs, needle):
    with pytest.raises(RunError, match=needle):
        _make(tmp_path / "r", **kwargs)
    assert not (tmp_path / "r").exists()


# -- units, artifacts, timings --------------------------------------------------
def test_units_save_load_has(tmp_path):
    run = _make(tmp_path / "r")
    assert run.unit_keys() == [] and not run.has_unit("noise")
    path = run.save_unit("noise", {"acc": np.array([0.5, 0.7]), "names": np.array(["a", "b"])},
                         info={"models": np.int64(2)})
    assert path == run.path / "units" / "noise.npz"
    run.save_unit("curves-wd+dropout", {"x": np.zeros((2, 3), np.float32)})
    assert run.unit_keys() == ["curves-wd+dropout", "noise"]
    loaded = run.load_unit("noise")
    assert loaded["acc"].tolist() == [0.5, 0.7] and loaded["names"].tolist() == ["a", "b"]
    info = Run.open(run.path).meta["units"]["noise"]
    assert info["models"] == 2 and "saved" in info
    with pytest.raises(RunError, match="no unit 'other'.*noise"):
        run.load_unit("other")


@pytest.mark.parametrize("key", ["../evil", "a/b", "", ".hidden", "x" * 200, "sp ace"])
def test_unit_keys_are_safe_names(tmp_path, key):
    run = _make(tmp_path / "r")
    with pytest.raises(RunError, match="safe file name"):
        run.save_unit(key, {"a": np.zeros(1)})


def test_artifacts_are_written_atomically_where_expected(tmp_path):
    run = _make(tmp_path / "r")
    df = pd.DataFrame({"i": [0, 1], "score": [0.1, 0.2]})
    assert run.write_table("scores", df) == run.path / "scores.parquet"
    assert run.write_json("summary", {"a": np.float64(1.5)}) == run.path / "summary.json"
    assert run.write_text("notes.md", "# hi") == run.path / "notes.md"
    assert run.write_bytes("figures/a.png", b"png") == run.path / "figures" / "a.png"
    pd.testing.assert_frame_equal(pd.read_parquet(run.path / "scores.parquet"), df)
    assert [str(p) for p in run.artifacts()] == ["figures/a.png", "notes.md", "scores.parquet", "summary.json"]
    for bad in ("run.json", "units/x.npz", "../x.txt", "/etc/x"):
        with pytest.raises(RunError):
            run.write_text(bad, "no")
    assert _temps(run.path) == []


def test_timer_accumulates_and_survives_errors(tmp_path):
    run = _make(tmp_path / "r")
    with run.timer("train:labels"):
        pass
    first = run.timings["train:labels"]
    with pytest.raises(ValueError, match="^boom$"):  # the timer passes the error on unchanged
        with run.timer("train:labels"):
            raise ValueError("boom")
    assert run.timings["train:labels"] >= first
    with run.timer("report"):
        pass
    saved = Run.open(run.path).timings
    assert set(saved) == {"train:labels", "report"} and saved["train:labels"] == run.timings["train:labels"]
    run.timings.setdefault("load data", 1.25)  # the live dict is saved by the next update
    run.finish()
    assert Run.open(run.path).timings["load data"] == 1.25


def test_context_manager_marks_the_outcome(tmp_path):
    with _make(tmp_path / "ok") as run:
        run.finish(summary={"acc": np.float32(0.5)})
    meta = Run.open(tmp_path / "ok").meta
    assert meta["status"] == "done" and meta["summary"] == {"acc": 0.5} and "finished" in meta
    assert Catalog(tmp_path).get(run.id)["summary"] == {"acc": 0.5}

    with _make(tmp_path / "auto"):
        pass
    assert Run.open(tmp_path / "auto").status == "done"

    with pytest.raises(ZeroDivisionError):
        with _make(tmp_path / "bad"):
            1 / 0
    meta = Run.open(tmp_path / "bad").meta
    assert meta["status"] == "failed" and meta["error"].startswith("ZeroDivisionError: division by zero")
    assert meta["attempts"][-1]["status"] == "failed"

    with pytest.raises(RuntimeError, match="^printing the summary failed$"):
        with _make(tmp_path / "late") as run:
            run.finish()
            raise RuntimeError("printing the summary failed")
    assert Run.open(tmp_path / "late").status == "done"

    with pytest.raises(KeyboardInterrupt):
        with _make(tmp_path / "stop"):
            raise KeyboardInterrupt
    assert Run.open(tmp_path / "stop").status == "interrupted"
    statuses = {Path(r["path"]).name: r["status"] for r in Catalog(tmp_path).list()}
    assert statuses == {"ok": "done", "auto": "done", "bad": "failed", "late": "done", "stop": "interrupted"}


def test_fail_records_the_message(tmp_path):
    run = _make(tmp_path / "r")
    run.fail("data file vanished")
    assert Run.open(run.path).meta["error"] == "data file vanished"
    assert Catalog(tmp_path).get(run.id)["status"] == "failed"


_KILLED_JOB = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from fitscope.runs import Run, atomic_open
    run = Run.create(sys.argv[1], kind="demo", config={"n": 3}, seeds={"seed": 0})
    for i in range(2):
        run.save_unit(f"u{i}", {"v": np.full(3, i)})
    with atomic_open(run.path / "units" / "u2.npz") as handle:
        handle.write(b"half a unit")
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_resume_after_kill_keeps_finished_units(tmp_path):
    out = tmp_path / "job"
    proc = subprocess.run([sys.executable, "-c", _KILLED_JOB, str(out)], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert len(_temps(out)) == 1  # the unit being written when it died
    assert json.loads((out / "run.json").read_text())["status"] == "running"

    catalog = Catalog(tmp_path)
    assert catalog.list()[0]["status"] == "running"
    changed = catalog.refresh()
    assert [r["status"] for r in changed] == ["killed"] and catalog.list()[0]["status"] == "killed"

    run = Run.create(out, kind="demo", config={"n": 3}, seeds={"seed": 0}, resume=True)
    assert run.unit_keys() == ["u0", "u1"] and not run.has_unit("u2")
    assert run.load_unit("u1")["v"].tolist() == [1, 1, 1]
    assert _temps(out) == []
    assert len(run.meta["attempts"]) == 2
    run.save_unit("u2", {"v": np.full(3, 2)})
    run.finish()
    assert catalog.get(run.id)["status"] == "done"


# -- catalog -----------------------------------------------------------------------
def test_catalog_list_get_prefix_and_ambiguity(tmp_path):
    a = _make(tmp_path / "a", kind="audit")
    b = _make(tmp_path / "b", kind="demo")
    c = _make(tmp_path / "c", kind="demo")
    catalog = Catalog(tmp_path)
    assert [r["id"] for r in catalog.list()] == [c.id, b.id, a.id]  # newest first
    assert [r["id"] for r in catalog.list(kind="demo")] == [c.id, b.id]
    assert catalog.list(kind="none") == []
    assert catalog.get(a.id)["kind"] == "audit"
    assert catalog.get("audit")["id"] == a.id  # unique prefix
    assert catalog.get(str(tmp_path / "b"))["id"] == b.id  # directory
    with pytest.raises(RunError, match="ambiguous") as err:
        catalog.get("demo-")
    assert b.id in str(err.value) and c.id in str(err.value)
    with pytest.raises(RunError, match="no run 'zzz'") as err:
        catalog.get("zzz")
    assert a.id in str(err.value)
    with pytest.raises(RunError, match="holds no runs"):
        Catalog(tmp_path / "empty").get("x")
    assert Catalog(tmp_path / "empty").list() == []


def test_catalog_refresh_updates_stale_rows_and_finds_unlisted_runs(tmp_path):
    done = _make(tmp_path / "done")
    gone = _make(tmp_path / "gone")
    catalog = Catalog(tmp_path)
    meta = dict(done.meta, status="done", finished="2030-01-01T00:00:00+00:00", summary={"acc": 1.0})
    atomic_write_json(done.path / "run.json", meta)  # another process finished it
    import shutil

    shutil.rmtree(gone.path)
    changed = {r["id"]: r["status"] for r in catalog.refresh()}
    assert changed == {done.id: "done", gone.id: "missing"}
    assert catalog.get(done.id)["summary"] == {"acc": 1.0}
    assert catalog.refresh() == []

    os.remove(catalog.path)
    for extra in tmp_path.glob("catalog.sqlite-*"):
        os.remove(extra)
    assert Catalog(tmp_path).list() == []
    found = Catalog(tmp_path).refresh()
    assert [r["id"] for r in found] == [done.id]


def test_catalog_refresh_marks_a_run_replaced_by_a_new_one_at_its_path(tmp_path):
    import shutil

    old = _make(tmp_path / "demo")
    old.finish()
    shutil.rmtree(old.path)
    new = _make(tmp_path / "demo")
    catalog = Catalog(tmp_path)
    assert {r["id"]: r["status"] for r in catalog.refresh()} == {old.id: "replaced"}
    assert catalog.get(new.id)["status"] == "running"
    assert catalog.refresh() == []


def test_catalog_takes_concurrent_writers(tmp_path):
    errors = []

    def make(i):
        try:
            _make(tmp_path / f"r{i}").finish(summary={"i": i})
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = Catalog(tmp_path).list()
    assert len(rows) == 8 and {r["status"] for r in rows} == {"done"}
