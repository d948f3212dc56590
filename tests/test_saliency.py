"""The saliency study: units against direct computation, tables against scipy and brute force, report and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from cli_helpers import assert_refused, run_main
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.saliency import STUDY, make_config, plan_tasks, prepare, saliency_study
from fitscope.explain import cascading_randomization
from fitscope.models import build_plain
from fitscope.seeding import derive_seed
from fitscope.train.plain_models import train_plain

#: a tiny run of every unit kind on digits
TINY = dict(data=["digits"], model="cnn:4-8", rows=4, epochs=2, random_label_epochs=2, ig_steps=4,
            smoothgrad_samples=2, top_k=5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return saliency_study(make_config(**TINY), tmp_path_factory.mktemp("saliency") / "run", threads=1)


def test_a_cascade_unit_is_train_plain_then_cascading_randomization(tiny_run):
    run, _ = tiny_run
    cfg = make_config(**TINY)
    prepared = prepare(cfg)
    task = plan_tasks(cfg, prepared.state.data)[0]
    stored = np.load(run.path / "units" / "cascade-digits.npz")
    model = build_plain("cnn:4-8", (1, 8, 8), 10, seed=derive_seed(cfg.seed, "model", "digits"))
    train_plain(model, prepared.shared["x_train__digits"], prepared.shared["y_train__digits"], epochs=2,
                seed=derive_seed(task.seed, "batches"))
    x, y = prepared.shared["x_rows__digits"], prepared.shared["y_rows__digits"]
    expected = cascading_randomization(model, x, y, methods=["gradient_x_input", "cgi"], seed=task.seed)
    for method in ("gradient_x_input", "cgi"):
        np.testing.assert_allclose(stored[f"maps_{method}"], expected.maps[method], rtol=1e-5, atol=1e-7)
    assert list(stored["layers"]) == ["out", "norm2", "conv2", "norm1", "conv1"]
    # the explained rows are the seeded subset of the test split
    rows = np.sort(np.random.default_rng(derive_seed(0, "rows", "digits")).choice(360, 4, replace=False))
    np.testing.assert_array_equal(prepared.state.rows["digits"], rows)
    np.testing.assert_array_equal(x, prepared.state.data[0].x_test[rows])


def test_tables_agree_with_scipy_on_the_stored_maps(tiny_run):
    run, outcome = tiny_run
    per_row = pd.read_parquet(run.path / "per_row.parquet")
    similarity = pd.read_parquet(run.path / "similarity.parquet")
    stored = np.load(run.path / "units" / "cascade-digits.npz")
    random = np.load(run.path / "units" / "random-labels-digits.npz")
    for method in ("gradient", "cgi"):
        maps = stored[f"maps_{method}"]
        for depth in (0, len(maps) - 1):
            got = per_row[(per_row.test == "cascade") & (per_row.method == method) & (per_row.depth == depth)]
            want = [spearmanr(np.abs(maps[0, r]).ravel(), np.abs(maps[depth, r]).ravel())[0] for r in range(4)]
            np.testing.assert_allclose(got.spearman_abs, want, rtol=1e-9)
        got = per_row[(per_row.test == "random labels") & (per_row.method == method)]
        want = [spearmanr(maps[0, r].ravel(), random[f"maps_{method}"][0, r].ravel())[0] for r in range(4)]
        np.testing.assert_allclose(got.spearman, want, rtol=1e-9)
    # depth 0 compares the trained maps with themselves
    zero = similarity[(similarity.test == "cascade") & (similarity.depth == 0)]
    np.testing.assert_allclose(zero["mean"], 1.0)
    # the aggregate is the mean and sample std over the rows
    row = similarity[(similarity.method == "cgi") & (similarity.depth == 5) & (similarity.metric == "top_k")]
    values = per_row[(per_row.method == "cgi") & (per_row.depth == 5)].top_k
    assert row["mean"].item() == pytest.approx(values.mean()) and row["std"].item() == pytest.approx(values.std())
    key = "digits: mean Spearman (|map|) after full randomization, cgi"
    full = per_row[(per_row.method == "cgi") & (per_row.depth == 5)].spearman_abs.mean()
    assert outcome.summary[key] == pytest.approx(full) and run.meta["summary"][key] == pytest.approx(full)


def test_the_report_holds_the_verdict_curves_and_grids(tiny_run):
    run, _ = tiny_run
    html = (run.path / "report.html").read_text()
    assert "On digits, CGI" in html and "gradient x input" in html
    # one similarity figure and two map grids (2 rows) for the one data set
    assert html.count("data:image/png;base64,") == 3
    assert "down to conv1" in html and "random labels" in html


def test_the_verdict_states_the_finding_or_its_absence():
    from fitscope.report.saliency import verdict

    full = pd.DataFrame({"data": ["digits"] * 2 + ["mnist1d"] * 2, "method": ["cgi", "gradient_x_input"] * 2,
                         "mean": [0.12, 0.92, 0.35, 0.6]})
    text = verdict(dict(full=full, bound=0.2))
    assert text == ("On digits, CGI's maps changed strongly when every layer was re-drawn (mean Spearman similarity "
                    "of the absolute maps 0.12, at most 0.2) while gradient x input's stayed similar (0.92); on "
                    "mnist1d, CGI's maps did not change as much as expected when every layer was re-drawn (mean "
                    "Spearman similarity of the absolute maps 0.35, above 0.2) while gradient x input's stayed "
                    "similar (0.60).")


def test_quick_is_a_small_setting_and_the_study_is_registered():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.rows, cfg.epochs, cfg.random_label_epochs, cfg.data) == (16, 10, 30, ["digits", "mnist1d"])
    assert get_study("saliency") is STUDY
    with pytest.raises(ConfigError, match="^--methods: expected methods among gradient"):
        make_config(methods=["gradient", "lime"])


# --------------------------------------------------------------------------- command line

ARGS = ["saliency", "--data", "digits", "--model", "cnn:4-8", "--rows", "3", "--epochs", "1", "--random-label-epochs",
        "1", "--ig-steps", "2", "--smoothgrad-samples", "2", "--methods", "gradient_x_input,cgi", "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--methods", "gradient,occlusion"], "--methods: expected methods among gradient, gradient_x_input"),
        (["--rows", "1000"], "--rows: expected at most the 360 test rows of digits"),
        (["--top-k", "65"], "--top-k: expected at most the 64 features of digits"),
        (["--model", "cnn1d:8"], "--model: expected a family for images of shape 1x8x8"),
        (["--smoothgrad-sigma", "0"], "--smoothgrad-sigma"),
        (["--data", "nope"], "nope"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "after full randomization, cgi" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "saliency" and sorted(meta["units"]) == ["cascade-digits", "random-labels-digits"]
    code, captured = run_main(["saliency", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 2 finished units, training 0" in captured.err
    code, captured = run_main(["saliency", "--out", str(out), "--resume", "--rows", "4"], capsys)
    assert code == 2 and "--rows 4 differs from the run's 3" in captured.err
