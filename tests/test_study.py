"""The study runner itself, on a tiny study defined here (local executor): config, resume, progress, faults."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict, Field

from fitscope.errors import ConfigError, RunError
from fitscope.experiments.study import (
    Outcome,
    Prepared,
    PrintProgress,
    Progress,
    Study,
    StudyInterrupted,
    Unit,
    progress_line,
    resolve_config,
    run_study,
)


class SquaresConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(3, ge=0)
    steps: int = Field(4, gt=0)
    scale: float = 1.0


def square_task(task, *, progress=None, offset):
    """Unit i: (i * scale + offset)^2, reporting one tick per step."""
    i, cfg = task
    for step in range(cfg.steps):
        progress(step + 1)
    return {"value": np.asarray((i * cfg.scale + offset) ** 2)}


def interrupting_task(task, *, progress=None, offset):
    i, cfg = task
    if i == 1:
        raise KeyboardInterrupt
    return square_task(task, progress=progress, offset=offset)


def _prepare(cfg):
    if cfg.scale < 0:
        raise ConfigError("scale: expected >= 0, got a negative number")
    return Prepared(seeds={"seed": 0}, shared={"offset": 1.0})


def _plan(cfg, prepared, fn=square_task):
    return [Unit(f"u{i}", fn, (i, cfg), work=cfg.steps, info={"i": i}) for i in range(cfg.n)]


def _estimate(cfg, prepared, units):
    values = [float(units[k]["value"]) for k in units]
    return Outcome(tables={"values": pd.DataFrame({"key": list(units), "value": values})},
                   summary={"total": float(sum(values))}, files={"extra.json": {"n": len(values)}})


SQUARES = Study(kind="squares", command="fitscope squares", config=SquaresConfig, prepare=_prepare, plan=_plan,
                estimate=_estimate, quick={"n": 2, "steps": 2})
INTERRUPTING = Study(kind="squares", command="fitscope squares", config=SquaresConfig, prepare=_prepare,
                     plan=lambda cfg, p: _plan(cfg, p, interrupting_task), estimate=_estimate)


class Recorder(Progress):
    def __init__(self):
        self.events = []

    def start(self, **kw):
        self.events.append(("start", kw["total"], kw["units"], kw["reused"]))

    def advance(self, done):
        self.events.append(("advance", done))

    def unit_done(self, key, *, stored, of):
        self.events.append(("unit", key, stored, of))

    def phase(self, name):
        self.events.append(("phase", name))

    def message(self, text):
        self.events.append(("message", text))


def test_run_writes_tables_files_and_summary_checked_against_the_formula(tmp_path):
    result = run_study(SQUARES, {"n": 3, "scale": 2.0}, tmp_path / "run")
    table = pd.read_parquet(tmp_path / "run" / "values.parquet")
    assert table.value.tolist() == [(2.0 * i + 1.0) ** 2 for i in range(3)]
    assert result.run.meta["summary"]["total"] == 1 + 9 + 25
    assert json.loads((tmp_path / "run" / "extra.json").read_text()) == {"n": 3}
    assert result.trained == ["u0", "u1", "u2"] and result.reused == [] and result.run.status == "done"
    assert result.run.meta["units"]["u1"]["i"] == 1


def test_progress_moves_per_step_and_ends_at_the_total(tmp_path):
    rec = Recorder()
    run_study(SQUARES, {"n": 2, "steps": 3}, tmp_path / "run", progress=rec)
    assert rec.events[0] == ("start", 6, 2, 0)
    advances = [e[1] for e in rec.events if e[0] == "advance"]
    assert advances == sorted(advances) and advances[-1] == 6 and len(set(advances)) == 6
    assert [e[1:] for e in rec.events if e[0] == "unit"] == [("u0", 1, 2), ("u1", 2, 2)]
    assert ("phase", "estimate") in rec.events


def test_print_progress_lines_have_percent_and_time_left():
    assert progress_line(370, 1000, 62.0) == " 37% (370/1000) 1m02s elapsed, about 1m46s left"
    stream = io.StringIO()
    p = PrintProgress(stream, every=0.0)
    p.start(total=4, units=2, reused=0, where="local")
    p.advance(2)
    assert "training 2 units, 4 steps (local)" in stream.getvalue() and " 50% (2/4)" in stream.getvalue()


def test_resume_alone_takes_the_config_and_a_disagreeing_flag_is_named(tmp_path):
    out = tmp_path / "run"
    run_study(SQUARES, {"n": 2, "scale": 3.0}, out)
    assert resolve_config(SQUARES, {}, out, resume=True).scale == 3.0
    assert resolve_config(SQUARES, {"scale": 3}, out, resume=True).n == 2  # agrees: fine
    with pytest.raises(ConfigError, match=r"--scale 2 differs from the run's 3 in .*drop --scale"):
        resolve_config(SQUARES, {"scale": 2.0}, out, resume=True)
    with pytest.raises(ConfigError, match="--steps 2 differs from the run's 4"):
        resolve_config(SQUARES, {}, out, resume=True, quick=True)
    again = run_study(SQUARES, {}, out, resume=True)
    assert again.trained == [] and again.reused == ["u0", "u1"]


def test_bad_input_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="scale"):
        run_study(SQUARES, {"scale": -1.0}, tmp_path / "bad")
    with pytest.raises(ConfigError, match="--executor: expected one of local, ray"):
        run_study(SQUARES, {}, tmp_path / "bad", executor="dask")
    with pytest.raises(RunError, match="not a run directory"):
        run_study(SQUARES, {}, tmp_path / "bad", resume=True)
    assert not (tmp_path / "bad").exists()


def test_empty_plan_goes_straight_to_estimate(tmp_path):
    result = run_study(SQUARES, {"n": 0}, tmp_path / "run")
    assert result.trained == [] and result.run.status == "done"
    assert pd.read_parquet(tmp_path / "run" / "values.parquet").empty


def test_ctrl_c_marks_the_run_interrupted_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(StudyInterrupted, match=rf"1 of 3 units are saved in {out}; resume with: "
                                               rf"fitscope squares --out {out} --resume"):
        run_study(INTERRUPTING, {"n": 3}, out)
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and sorted(meta["units"]) == ["u0"]
    resumed = run_study(SQUARES, {}, out, resume=True)
    assert resumed.trained == ["u1", "u2"] and resumed.reused == ["u0"]


def test_a_damaged_unit_is_trained_again_with_one_line(tmp_path):
    out = tmp_path / "run"
    run_study(SQUARES, {"n": 2}, out)
    path = out / "units" / "u1.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    rec = Recorder()
    resumed = run_study(SQUARES, {}, out, resume=True, progress=rec)
    assert resumed.damaged == ["u1"] and resumed.trained == ["u1"] and resumed.reused == ["u0"]
    assert any(e[0] == "message" and "unit u1 was damaged" in e[1] for e in rec.events)
    assert pd.read_parquet(out / "values.parquet").value.tolist() == [1.0, 4.0]


def test_a_corrupt_run_json_is_rebuilt_from_the_units(tmp_path):
    out = tmp_path / "run"
    run_study(SQUARES, {"n": 3, "scale": 2.0}, out)
    (out / "run.json").write_text('{"id": "squares-x", "conf')  # torn by something outside fitscope
    with pytest.raises(RunError, match="--rebuild-meta"):
        run_study(SQUARES, {}, out, resume=True)
    rebuilt = run_study(SQUARES, {}, out, resume=True, rebuild_meta=True)  # the config comes from the units
    assert rebuilt.config.scale == 2.0 and rebuilt.trained == [] and rebuilt.reused == ["u0", "u1", "u2"]
    assert pd.read_parquet(out / "values.parquet").value.tolist() == [1.0, 9.0, 25.0]
    assert rebuilt.run.status == "done"
