"""The run store under real faults: damaged units, a lost or corrupt run.json, a full disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import tempfile
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fitscope.runs.atomic as atomic
from fitscope.errors import RunError
from fitscope.runs import Catalog, Run, WriteError, config_hash, recover_config, try_read_meta
from fitscope.runs.atomic import TEMP_SUFFIX, atomic_save_npz, atomic_write_json

CONFIG = {"model": "mlp:64x1", "noise": [0, 0.5], "train": {"lr": 0.1, "epochs": 4}}
SEEDS = {"data_seed": 0, "model_seeds": [0, 1]}


def _make(out: Path, **kwargs) -> Run:
    args = dict(kind="demo", config=CONFIG, seeds=SEEDS)
    args.update(kwargs)
    return Run.create(out, **args)


def _temps(directory: Path) -> list[Path]:
    return list(directory.rglob(f"*{TEMP_SUFFIX}"))


def _with_units(out: Path, n: int = 3, **kwargs) -> Run:
    """A killed run (still "running") with units u0..u<n-1>, unit ``i`` holding ``arange(50) * i``."""
    run = _make(out, **kwargs)
    for i in range(n):
        run.save_unit(f"u{i}", {"v": np.arange(50) * i, "name": np.array([f"unit {i}"])}, info={"models": i})
    return run


def _flip_a_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _data_offset(path: Path, member: str = "v.npy") -> int:
    """The offset of the last byte of ``member``'s data inside the zip file (an array value, not a header)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(handle.read(4), dtype="<u2")
    return info.header_offset + 30 + int(name_len) + int(extra_len) + info.compress_size - 1


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# -- unit integrity ------------------------------------------------------------
def test_a_unit_carries_its_own_record_and_run_json_its_checksum(tmp_path):
    run = _make(tmp_path / "r")
    path = run.save_unit("mem-001", {"acc": np.array([0.5, 0.7])}, info={"models": 2})
    with np.load(path) as data:
        assert sorted(data.files) == ["__unit__", "acc"]
        record = json.loads(data["__unit__"].tobytes().decode("utf-8"))
    assert record["key"] == "mem-001" and record["kind"] == "demo" and record["run"] == run.id
    assert record["config"] == CONFIG and record["config_hash"] == config_hash(CONFIG)
    assert record["seeds"] == SEEDS and record["info"] == {"models": 2}
    entry = json.loads((run.path / "run.json").read_text())["units"]["mem-001"]
    import hashlib

    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["bytes"] == path.stat().st_size and entry["models"] == 2 and "saved" in entry
    assert list(run.load_unit("mem-001")) == ["acc"]  # the record is not handed back
    assert run.verify_units() == []


@pytest.mark.parametrize("arrays, info, needle", [
    ({"__unit__": np.zeros(2)}, None, "reserved"),
    ({"a": np.zeros(2)}, {"sha256": "x"}, "info"),
    ({"a": np.zeros(2)}, {"f": object()}, "stored as JSON"),
])
def test_save_unit_refuses_reserved_names(tmp_path, arrays, info, needle):
    run = _make(tmp_path / "r")
    with pytest.raises(RunError, match=needle) as err:
        run.save_unit("u", arrays, info=info)
    _one_line(err.value)
    assert not run.has_unit("u") and not (run.path / "units" / "u.npz").exists()


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "cut short: "),
    ("flip", "checksum mismatch"),
    ("delete", "file missing"),
    ("grow", "size "),
])
def test_resume_moves_a_damaged_unit_aside(tmp_path, damage, reason):
    run = _with_units(tmp_path / "r")
    path = run.path / "units" / "u1.npz"
    original = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(original[: len(original) // 2])
    elif damage == "flip":
        _flip_a_byte(path, _data_offset(path))
    elif damage == "grow":
        path.write_bytes(original + b"\0")
    else:
        path.unlink()
    assert run.verify_units() == ["u1"] and path.exists() == (damage != "delete")  # verify moves nothing

    again = _make(tmp_path / "r", resume=True)
    assert again.damaged_units == ["u1"] and again.unit_damage["u1"].startswith(reason)
    assert not again.has_unit("u1") and again.unit_keys() == ["u0", "u2"]
    assert "u1" not in json.loads((again.path / "run.json").read_text())["units"]
    assert again.meta["attempts"][-1]["damaged_units"] == again.unit_damage
    aside = again.path / "units" / ".damaged" / "u1.npz"
    assert aside.exists() == (damage != "delete")  # kept for a person to look at, not deleted
    assert again.load_unit("u2")["v"].tolist() == (np.arange(50) * 2).tolist()
    with pytest.raises(RunError, match="no unit 'u1'"):
        again.load_unit("u1")
    # made again, then the run is whole: a further resume finds nothing wrong
    again.save_unit("u1", {"v": np.arange(50)})
    again.finish()
    third = _make(tmp_path / "r", resume=True)
    assert third.damaged_units == [] and third.unit_keys() == ["u0", "u1", "u2"]


def test_a_unit_saved_but_never_recorded_is_damaged(tmp_path):
    """Killed between writing units/u3.npz and writing run.json: the file has no record."""
    run = _with_units(tmp_path / "r")
    before = (run.path / "run.json").read_bytes()
    run.save_unit("u3", {"v": np.arange(3)})
    (run.path / "run.json").write_bytes(before)  # as if the process died before run.json was replaced
    again = _make(tmp_path / "r", resume=True)
    assert again.damaged_units == ["u3"] and "not recorded" in again.unit_damage["u3"]
    assert not again.has_unit("u3") and (again.path / "units" / ".damaged" / "u3.npz").is_file()
    assert again.unit_keys() == ["u0", "u1", "u2"]


def test_damaged_files_of_two_resumes_do_not_overwrite_each_other(tmp_path):
    run = _with_units(tmp_path / "r", n=1)
    for _ in range(2):
        path = run.path / "units" / "u0.npz"
        path.write_bytes(path.read_bytes()[:40])
        run = _make(tmp_path / "r", resume=True)
        assert run.damaged_units == ["u0"]
        run.save_unit("u0", {"v": np.arange(3)})
    assert sorted(p.name for p in (run.path / "units" / ".damaged").iterdir()) == ["u0.1.npz", "u0.npz"]


def test_units_saved_before_checksums_are_read_whole_on_resume(tmp_path):
    """A run made by an older fitscope: units without __unit__, records without sha256."""
    run = _make(tmp_path / "r")
    meta = run.meta
    for i in range(2):
        atomic_save_npz(run.path / "units" / f"old{i}.npz", v=np.arange(10) + i)
        meta["units"][f"old{i}"] = {"saved": "2024-01-01T00:00:00+00:00"}
    atomic_write_json(run.path / "run.json", meta)
    bad = run.path / "units" / "old1.npz"
    _flip_a_byte(bad, _data_offset(bad))
    again = _make(tmp_path / "r", resume=True)
    assert again.damaged_units == ["old1"] and "Bad CRC-32" in again.unit_damage["old1"]
    assert again.has_unit("old0") and again.load_unit("old0")["v"].tolist() == list(range(10))


@pytest.mark.parametrize("garbage", ["random", "empty", "truncated", "flipped", "not-npy"])
def test_load_unit_of_a_damaged_file_is_one_run_error(tmp_path, garbage):
    run = _with_units(tmp_path / "r", n=1)
    path = run.path / "units" / "u0.npz"
    good = path.read_bytes()
    if garbage == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif garbage == "empty":
        path.write_bytes(b"")
    elif garbage == "truncated":
        path.write_bytes(good[: len(good) - 30])
    elif garbage == "flipped":
        _flip_a_byte(path, _data_offset(path))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("v.npy", b"\x93NUMPY not really")
    with pytest.raises(RunError) as err:
        run.load_unit("u0")
    message = _one_line(err.value)
    assert message.startswith(f"unit 'u0' of run {run.id} cannot be read ({path}: ")
    assert message.endswith("; run again with --resume to make it again")
    assert err.value.__cause__ is None and err.value.__suppress_context__


# -- a lost or corrupt run.json ---------------------------------------------------
def test_a_corrupt_run_json_says_how_to_rebuild_it(tmp_path):
    run = _with_units(tmp_path / "r")
    (run.path / "run.json").write_text('{"id": "demo-2024', encoding="utf-8")  # cut short
    for resume in (False, True):
        with pytest.raises(RunError) as err:
            _make(tmp_path / "r", resume=resume)
        message = _one_line(err.value)
        assert message.startswith(f"{run.path / 'run.json'} cannot be read (")
        assert message.endswith("; run again with --resume --rebuild-meta to rebuild it from the 3 intact units")
    # units of another config do not count
    with pytest.raises(RunError, match="none of its 3 units is intact"):
        _make(tmp_path / "r", config={**CONFIG, "noise": [1]}, resume=True)
    with pytest.raises(RunError, match="--rebuild-meta"):
        Run.open(run.path)
    (run.path / "run.json").unlink()
    with pytest.raises(RunError, match=r"holds units but no run.json; run again with --resume --rebuild-meta"):
        _make(tmp_path / "r", resume=True)
    with pytest.raises(RunError, match="--rebuild-meta: expected --resume as well"):
        _make(tmp_path / "r", rebuild_meta=True)


@pytest.mark.parametrize("lost", [False, True])
def test_rebuild_meta_keeps_the_intact_units_of_this_config(tmp_path, lost):
    run = _with_units(tmp_path / "r", n=4)
    other = _with_units(tmp_path / "other", n=1, config={**CONFIG, "noise": [1]})
    shutil.copy(other.path / "units" / "u0.npz", run.path / "units" / "x-other.npz")  # another config
    shutil.copy(run.path / "units" / "u3.npz", run.path / "units" / "renamed.npz")  # holds unit u3
    cut = run.path / "units" / "u2.npz"
    cut.write_bytes(cut.read_bytes()[:-10])
    if lost:
        (run.path / "run.json").unlink()
    else:
        (run.path / "run.json").write_bytes(b"\x00" * 64)  # a file system that lost the data

    rebuilt = _make(tmp_path / "r", resume=True, rebuild_meta=True)
    assert rebuilt.rebuilt_units == ["u0", "u1", "u3"]
    assert rebuilt.damaged_units == ["renamed", "u2", "x-other"]
    assert rebuilt.unit_damage["x-other"] == "made with another config"
    assert rebuilt.unit_damage["u2"].startswith("unreadable: ")
    assert rebuilt.unit_damage["renamed"] == "it holds unit 'u3', not 'renamed'"
    assert rebuilt.id == run.id  # from the units' own record
    assert rebuilt.meta["rebuilt"]["kept"] == 3 and rebuilt.meta["rebuilt"]["discarded"] == 3
    assert "time" in rebuilt.meta["rebuilt"]
    assert rebuilt.meta["units"]["u1"]["models"] == 1  # the unit's info came back with it
    assert rebuilt.unit_keys() == ["u0", "u1", "u3"] and not rebuilt.has_unit("u2")
    assert rebuilt.load_unit("u3")["v"].tolist() == (np.arange(50) * 3).tolist()
    damaged = {p.name for p in (run.path / "units" / ".damaged").iterdir()}
    assert damaged == {"renamed.npz", "u2.npz", "x-other.npz"} | (set() if lost else {"run.json"})
    saved = json.loads((run.path / "run.json").read_text())
    assert saved["id"] == run.id and saved["config"] == CONFIG and saved["status"] == "running"
    assert Catalog(tmp_path).get(run.id)["status"] == "running"
    assert rebuilt.verify_units() == []
    rebuilt.finish()
    again = _make(tmp_path / "r", resume=True)  # an ordinary resume from here on
    assert again.damaged_units == [] and again.unit_keys() == ["u0", "u1", "u3"]


def test_rebuild_meta_leaves_a_readable_run_json_alone(tmp_path):
    run = _with_units(tmp_path / "r", n=2)
    again = _make(tmp_path / "r", resume=True, rebuild_meta=True)
    assert again.id == run.id and "rebuilt" not in again.meta and again.rebuilt_units == []
    with pytest.raises(RunError, match="different config"):
        _make(tmp_path / "r", config={"other": 1}, resume=True, rebuild_meta=True)


def test_rebuild_meta_does_not_adopt_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty but holds no run"):
        _make(tmp_path / "mine", resume=True, rebuild_meta=True)


def test_recover_config_reads_the_units_own_record(tmp_path):
    run = _with_units(tmp_path / "r", n=3)
    assert recover_config(run.path) == ("demo", CONFIG, SEEDS)  # from run.json
    (run.path / "run.json").write_text("garbage")
    assert try_read_meta(run.path) is None
    (run.path / "units" / "u0.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert recover_config(run.path) == ("demo", CONFIG, SEEDS)
    kind, config, seeds = recover_config(run.path)
    rebuilt = Run.create(run.path, kind=kind, config=config, seeds=seeds, resume=True, rebuild_meta=True)
    assert rebuilt.rebuilt_units == ["u1", "u2"] and rebuilt.damaged_units == ["u0"]
    assert recover_config(tmp_path / "nothing") is None
    (tmp_path / "empty" / "units").mkdir(parents=True)
    assert recover_config(tmp_path / "empty") is None


# -- a full disk --------------------------------------------------------------------
class _Disk:
    """Sends the atomic writes whose file name contains ``full_for`` to /dev/full (a real ENOSPC)."""

    def __init__(self) -> None:
        self.full_for: str | None = None

    def mkstemp(self, prefix: str = "", suffix: str = "", dir=None):
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=dir)
        if self.full_for is None or self.full_for not in prefix:
            return fd, name
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name


@pytest.fixture()
def disk(monkeypatch):
    """Control over a full disk: set ``disk.full_for = ""`` (every file) or a part of a file name."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    controller = _Disk()
    monkeypatch.setattr(atomic, "tempfile", types.SimpleNamespace(mkstemp=controller.mkstemp))
    return controller


def _assert_disk_full(err: BaseException, path: Path) -> None:
    message = _one_line(err)
    assert isinstance(err, RunError) and isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert message == (f"disk full while writing {path} (No space left on device): "
                       "free space, then run again with --resume")
    assert err.__cause__ is None and err.__suppress_context__


def test_disk_full_while_saving_a_unit(tmp_path, disk):
    run = _with_units(tmp_path / "r", n=1)
    before = (run.path / "run.json").read_bytes()
    disk.full_for = "u1.npz"
    with pytest.raises(WriteError) as err:
        run.save_unit("u1", {"v": np.arange(100_000)})
    _assert_disk_full(err.value, run.path / "units" / "u1.npz")
    assert not run.has_unit("u1") and not (run.path / "units" / "u1.npz").exists()
    assert _temps(run.path) == [] and (run.path / "run.json").read_bytes() == before
    disk.full_for = "u0.npz"  # replacing a unit: the old file stands, still recorded
    with pytest.raises(WriteError):
        run.save_unit("u0", {"v": np.arange(3)})
    assert run.has_unit("u0") and run.load_unit("u0")["v"].tolist() == [0] * 50
    disk.full_for = None
    assert _make(tmp_path / "r", resume=True).damaged_units == []


def test_disk_full_while_recording_a_unit(tmp_path, disk):
    """The unit's file was written but run.json was not: resuming finds it unrecorded."""
    run = _with_units(tmp_path / "r", n=1)
    disk.full_for = "run.json"
    with pytest.raises(WriteError) as err:
        run.save_unit("u1", {"v": np.arange(10)})
    _assert_disk_full(err.value, run.path / "run.json")
    assert not run.has_unit("u1") and _temps(run.path) == []
    assert try_read_meta(run.path)["units"].keys() == {"u0"}
    disk.full_for = None
    again = _make(tmp_path / "r", resume=True)
    assert again.damaged_units == ["u1"] and again.unit_keys() == ["u0"]


@pytest.mark.parametrize("write, name", [
    (lambda run: run.write_table("scores", pd.DataFrame({"x": np.arange(1000)})), "scores.parquet"),
    (lambda run: run.write_json("summary", {"a": list(range(1000))}), "summary.json"),
    (lambda run: run.write_text("notes.md", "x" * 100_000), "notes.md"),
    (lambda run: run.write_bytes("figures/a.png", b"\x89PNG" * 1000), "figures/a.png"),
])
def test_disk_full_while_writing_an_artifact(tmp_path, disk, write, name):
    run = _make(tmp_path / "r")
    disk.full_for = Path(name).name
    with pytest.raises(RunError) as err:
        write(run)
    _assert_disk_full(err.value, run.path / name)
    assert not (run.path / name).exists() and _temps(run.path) == []


def test_disk_full_at_the_start_and_end_of_a_run(tmp_path, disk):
    disk.full_for = "run.json"
    with pytest.raises(RunError) as err:
        _make(tmp_path / "new")
    _assert_disk_full(err.value, tmp_path / "new" / "run.json")
    assert _temps(tmp_path) == []

    disk.full_for = None
    run = _make(tmp_path / "r")
    with run.timer("train"):
        pass
    disk.full_for = "run.json"
    with pytest.raises(RunError) as err:
        run.finish(summary={"acc": 1.0})
    _assert_disk_full(err.value, run.path / "run.json")
    assert run.status == "running" and "finished" not in run.meta and "summary" not in run.meta
    assert "ended" not in run.meta["attempts"][-1]
    with pytest.raises(RunError, match="disk full"):
        with run.timer("report"):
            pass
    disk.full_for = None
    run.finish()
    assert try_read_meta(run.path)["status"] == "done"


def test_disk_full_inside_a_run_block_gives_one_error_and_no_warning(tmp_path, disk):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WriteError) as err:
            with _make(tmp_path / "r") as run:
                disk.full_for = ""  # everything from here on
                with run.timer("train"):
                    run.save_unit("u0", {"v": np.arange(10)})
    assert "disk full while writing" in _one_line(err.value) and str(err.value).endswith("--resume")
    assert err.value.path == run.path / "units" / "u0.npz"  # the first failure, not the timer's
    assert [str(w.message) for w in caught if "could not record" in str(w.message)] == []
    assert _temps(tmp_path) == []
    disk.full_for = None
    assert _make(tmp_path / "r", resume=True).unit_keys() == []


def test_disk_full_reported_by_a_plain_os_write(tmp_path, monkeypatch):
    """The same one line when the error comes from Python (no /dev/full needed)."""
    run = _make(tmp_path / "r")

    def no_space(self, handle, **kwargs):
        handle.write(b"PAR1 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_space)
    with pytest.raises(RunError) as err:
        run.write_table("t", pd.DataFrame({"x": [1]}))
    _assert_disk_full(err.value, run.path / "t.parquet")
    assert not (run.path / "t.parquet").exists() and _temps(run.path) == []


def test_write_error_is_an_os_error_for_best_effort_writers(tmp_path, disk):
    disk.full_for = "cache"
    with pytest.raises(OSError) as err:
        atomic_save_npz(tmp_path / "cache.npz", a=np.arange(10))
    assert str(err.value) == (f"disk full while writing {tmp_path / 'cache.npz'} (No space left on device): "
                              "free space, then run again")
    assert err.value.disk_full and _temps(tmp_path) == []


def test_catalog_that_cannot_be_written_does_not_fail_the_run(tmp_path, monkeypatch):
    real = sqlite3.connect

    def connect(database, *args, uri=False, **kwargs):
        if uri and str(database).endswith("?mode=ro"):
            return real(database, *args, uri=uri, **kwargs)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite3, "connect", connect)
    with pytest.warns(UserWarning, match=r"catalog .* not updated: catalog .* cannot be written \(database or"):
        run = _make(tmp_path / "r")
    with pytest.warns(UserWarning):
        run.finish()
    assert try_read_meta(run.path)["status"] == "done"
    with pytest.raises(RunError, match="cannot be written") as err:
        Catalog(tmp_path).upsert(run.meta, run.path)
    _one_line(err.value)
    monkeypatch.undo()
    assert [r["id"] for r in Catalog(tmp_path).scan()] == [run.id]


def test_catalog_marks_a_run_whose_run_json_is_damaged(tmp_path):
    run = _with_units(tmp_path / "r", n=1)
    run.finish()
    (run.path / "run.json").write_text("{")
    catalog = Catalog(tmp_path)
    assert [r["status"] for r in catalog.refresh()] == ["damaged"]
    assert catalog.refresh() == []
    rebuilt = _make(tmp_path / "r", resume=True, rebuild_meta=True)
    assert catalog.get(rebuilt.id)["status"] == "running" and rebuilt.id == run.id


def test_a_catalog_that_cannot_be_read_falls_back_to_the_directories(tmp_path):
    a = _make(tmp_path / "a")
    b = _make(tmp_path / "b", kind="other")
    atomic_write_json(b.path / "run.json", dict(b.meta, created="2100-01-01T00:00:00+00:00"))  # the newer
    b = Run.open(b.path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{")
    catalog = Catalog(tmp_path)
    for extra in tmp_path.glob("catalog.sqlite*"):
        extra.unlink()
    (tmp_path / "catalog.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RunError, match="catalog .* cannot be read") as err:
        catalog.list()
    _one_line(err.value)
    assert [r["id"] for r in catalog.scan()] == [b.id, a.id]
    assert [r["id"] for r in catalog.scan(kind="demo")] == [a.id]
    assert catalog.scan()[1]["path"] == str(a.path) and catalog.scan()[1]["status"] == "running"
    assert catalog.get("other")["id"] == b.id  # by prefix, from the directories
