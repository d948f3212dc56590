"""Identity or constant: correlations against NumPy, the finding on a tiny instance, the unit, report and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import assert_refused, run_main
from fitscope.dynamics import function_form, identity_or_constant, output_correlations, pixel_correlations
from fitscope.errors import ConfigError, DataError
from fitscope.experiments import get_study
from fitscope.experiments.dynamics_identity import (
    STUDY,
    dynamics_identity,
    make_config,
    plan_nets,
    prepare,
    train_net,
)
from fitscope.models.same_shape import build_same_shape

#: 8x8 digits as they are; a depth-1 CNN and a depth-5 FC net (and the other two), fitted fast with Adam at 0.01
FINDING = dict(size=0, depths=[1, 5], test_inputs=20, noise_inputs=5, width=64, channels=8, max_steps=500, lr=1e-2)
#: a tiny run of every kind of unit, for the report and the CLI
TINY = dict(size=0, depths=[1, 2], test_inputs=6, noise_inputs=3, width=16, channels=4, max_steps=30, show=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Constant(torch.nn.Module):
    """Outputs ``x0`` whatever the input: the memorizing solution."""

    def __init__(self, x0: np.ndarray) -> None:
        super().__init__()
        self.x0 = torch.from_numpy(x0).float()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.x0.expand_as(z).clone()


def _corrcoef_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NumPy's corrcoef, one row pair at a time."""
    return np.array([np.corrcoef(u.ravel(), v.ravel())[0, 1] for u, v in zip(a, b)])


# --------------------------------------------------------------------------- the correlations


def test_pixel_correlations_are_numpys_corrcoef_row_by_row():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 1, 5, 5))
    b = 0.3 * a + rng.normal(size=a.shape)
    np.testing.assert_allclose(pixel_correlations(a, b), _corrcoef_rows(a, b), rtol=1e-12, atol=1e-12)
    flat = np.ones((2, 4))
    assert np.isnan(pixel_correlations(flat, rng.normal(size=(2, 4)))).all()  # no variance: no direction
    with pytest.raises(DataError, match="b: expected the shape of a"):
        pixel_correlations(a, b[:3])


def test_an_identity_model_gives_one_and_a_constant_model_the_reverse():
    rng = np.random.default_rng(1)
    x0 = rng.uniform(size=(1, 6, 6)).astype(np.float32)
    z = rng.uniform(size=(9, 1, 6, 6)).astype(np.float32)
    z[:3] += 0.8 * x0  # some inputs resemble the training example
    expected = _corrcoef_rows(z, np.broadcast_to(x0, z.shape))
    same = identity_or_constant(torch.nn.Identity(), x0, z)
    np.testing.assert_allclose(same.identity, 1.0, atol=1e-6)
    np.testing.assert_allclose(same.constant, expected, atol=1e-6)
    np.testing.assert_allclose(same.baseline, expected, atol=1e-6)
    memorized = identity_or_constant(Constant(x0), x0[None], z)  # x0 with a leading 1 is accepted too
    np.testing.assert_allclose(memorized.constant, 1.0, atol=1e-6)
    np.testing.assert_allclose(memorized.identity, expected, atol=1e-6)
    assert (same.form, memorized.form) == ("identity", "constant")
    # outputs already computed: the same numbers
    mixed = 0.5 * z + 0.5 * x0
    direct = output_correlations(mixed, z, x0)
    np.testing.assert_allclose(direct.identity, _corrcoef_rows(mixed, z), atol=1e-12)
    np.testing.assert_allclose(direct.constant, _corrcoef_rows(mixed, np.broadcast_to(x0, z.shape)), atol=1e-12)


def test_bad_arrays_and_models_are_one_line_errors():
    x0 = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(DataError, match=r"train_x: expected one input of shape \(1, 4, 4\)"):
        identity_or_constant(torch.nn.Identity(), np.zeros((2, 2)), np.ones((3, 1, 4, 4)))
    with pytest.raises(DataError, match="model: expected outputs of the input's shape"):
        identity_or_constant(torch.nn.Flatten(), x0, np.ones((3, 1, 4, 4)))
    with pytest.raises(DataError, match="test_x: expected finite values"):
        identity_or_constant(torch.nn.Identity(), x0, np.full((3, 1, 4, 4), np.nan))


@pytest.mark.parametrize("identity, constant, form", [
    (0.95, 0.6, "identity"), (0.5, 0.97, "constant"), (0.4, 0.6, "neither"), (0.85, 0.9, "constant"),
    (float("nan"), 0.9, "neither"),
])
def test_function_form(identity, constant, form):
    assert function_form(identity, constant) == form


# --------------------------------------------------------------------------- the finding and the unit


def test_a_depth_one_cnn_computes_the_identity_and_a_deep_fc_net_the_constant():
    cfg = make_config(**FINDING)
    prepared = prepare(cfg)
    tasks = {t.key: t for t in plan_nets(cfg, prepared.state.input_shape)}
    assert sorted(tasks) == ["cnn-d01", "cnn-d05", "fc-d01", "fc-d05"]
    cnn = train_net(tasks["cnn-d01"], **prepared.shared)
    fc = train_net(tasks["fc-d05"], **prepared.shared)
    assert cnn["converged"] and fc["converged"]  # both fit the one example to the tolerance
    baseline = cnn["test_baseline"].mean()
    # the CNN copies its input: near 1 with the input, no more than the inputs themselves with the example
    assert cnn["test_identity"].mean() > 0.95 and cnn["test_constant"].mean() < baseline + 0.05
    # the deep FC net outputs its training example: near 1 with it, no more than the example with the input
    assert fc["test_constant"].mean() > 0.9 and fc["test_identity"].mean() < baseline + 0.05
    assert cnn["test_identity"].mean() > fc["test_identity"].mean() + 0.3
    # on noise, which shares nothing with the example, the FC net still answers with the example
    assert fc["noise_constant"].mean() > 0.8 and abs(fc["noise_baseline"].mean()) < 0.2


def test_a_unit_is_plain_adam_on_the_square_loss_until_the_tolerance():
    cfg = make_config(size=0, architectures=["cnn"], depths=[2], channels=4, max_steps=400, lr=1e-2, tol=1e-3,
                      test_inputs=5, noise_inputs=0, show=2)
    prepared = prepare(cfg)
    (task,) = plan_nets(cfg, prepared.state.input_shape)
    out = train_net(task, **prepared.shared)
    x0 = torch.from_numpy(prepared.shared["train_x"])
    model = build_same_shape("cnn", (1, 8, 8), depth=2, channels=4, seed=task.model_seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(1, 401):
        loss = ((model(x0) - x0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() <= 1e-3:
            break
    assert int(out["steps"]) == step < 400 and bool(out["converged"])
    with torch.no_grad():
        shown = model(torch.from_numpy(prepared.shared["shown"])).numpy()
    np.testing.assert_allclose(out["shown_outputs"], shown, rtol=1e-5, atol=1e-6)
    assert out["noise_identity"].shape == (0,) and out["test_identity"].shape == (5,)
    assert prepared.shared["shown"].shape == (3, 1, 8, 8)  # the example, 2 test digits, no noise


def test_images_are_upsampled_bilinearly_and_noise_spans_the_data_range():
    from scipy.ndimage import zoom

    prepared = prepare(make_config(size=16, test_inputs=3, noise_inputs=4))
    x0 = prepared.shared["train_x"]
    data = prepared.state.data
    assert x0.shape == (1, 1, 16, 16) and prepared.state.input_shape == (1, 16, 16)
    np.testing.assert_allclose(x0[0, 0], zoom(data.x_train[0, 0].astype(np.float64), 2, order=1, grid_mode=False),
                               atol=1e-6)
    noise = prepared.shared["noise_x"]
    assert noise.shape == (4, 1, 16, 16) and noise.min() >= 0 and noise.max() <= 1


# --------------------------------------------------------------------------- config, report and registry


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(depths=[0]), "--depths: expected depths in [1, 50], got 0"),
        (dict(depths=[1, 51]), "--depths: expected depths in [1, 50], got 51"),
        (dict(depths=[]), "--depths: expected at least one depth"),
        (dict(architectures=["rnn"]), "--architectures: expected architectures among fc, cnn, got 'rnn'"),
        (dict(lr=0.0), "--lr: expected a learning rate in (0, 1], got 0.0"),
        (dict(lr=1.5), "--lr: expected a learning rate in (0, 1], got 1.5"),
        (dict(lr=float("nan")), "--lr: expected a learning rate in (0, 1], got nan"),
        (dict(kernel=4), "--kernel: expected an odd kernel size"),
        (dict(init="xavier"), "--init"),
        (dict(tol=0), "--tol"),
    ],
)
def test_bad_config_is_one_line_naming_the_flag(values, needle):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_quick_is_a_small_setting_and_the_study_is_registered():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.size, cfg.depths, cfg.architectures, cfg.width, cfg.channels) == (16, [1, 3, 20], ["fc", "cnn"], 256,
                                                                                    16)
    assert (make_config().depths, make_config().size) == ([1, 2, 3, 5, 10, 20], 28)
    assert get_study("dynamics-identity") is STUDY and STUDY.command == "fitscope dynamics identity"


def test_a_tiny_run_writes_tables_and_a_report_with_the_figures(tmp_path):
    run, outcome = dynamics_identity(make_config(**TINY), tmp_path / "run", threads=1)
    nets = pd.read_parquet(run.path / "nets.parquet")
    correlations = pd.read_parquet(run.path / "correlations.parquet")
    assert nets.unit.tolist() == ["fc-d01", "fc-d01", "fc-d02", "fc-d02", "cnn-d01", "cnn-d01", "cnn-d02", "cnn-d02"]
    assert len(correlations) == 4 * (6 + 3)
    mean = correlations.groupby(["unit", "inputs"]).identity.mean()
    np.testing.assert_allclose(nets.set_index(["unit", "inputs"]).identity, mean.loc[list(zip(nets.unit, nets.inputs))])
    html = (run.path / "report.html").read_text()
    assert run.meta["status"] == "done" and "Trained to reproduce one example" in html
    assert html.count("data:image/png;base64,") == 5  # test and noise correlations, two output grids, loss
    assert outcome.summary["input shape"] == "1x8x8"


def test_the_verdict_states_the_finding_from_the_nets_table():
    from fitscope.report.dynamics_identity import verdict

    def row(arch, depth, identity, constant):
        return dict(arch=arch, depth=depth, inputs="test", identity=identity, constant=constant, baseline=0.5,
                    form=function_form(identity, constant))

    nets = pd.DataFrame([row("cnn", 1, 0.99, 0.5), row("cnn", 3, 0.95, 0.5), row("cnn", 20, 0.5, 1.0),
                         row("fc", 1, 0.4, 0.6), row("fc", 20, 0.5, 1.0)])
    assert verdict(dict(nets=nets)) == (
        "Trained to reproduce one example: CNN nets computed the identity at depth 1 and 3; the constant (their "
        "training example) at depth 20 on new digits. FC nets computed the constant (their training example) at "
        "depth 20; neither at depth 1 on new digits (a net computes a function when its outputs correlate at least "
        "0.8 with that function's on average and more than with the other; the new digits themselves correlate "
        "0.50 with the training example).")


# --------------------------------------------------------------------------- command line

ARGS = ["dynamics", "identity", "--size", "0", "--depths", "1,2", "--architectures", "cnn", "--channels", "4",
        "--test-inputs", "4", "--noise-inputs", "2", "--max-steps", "10", "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--depths", "0"], "--depths: expected depths in [1, 50], got 0"),
        (["--depths", "1,60"], "--depths: expected depths in [1, 50], got 60"),
        (["--depths", "deep"], "--depths: expected comma-separated"),
        (["--architectures", "fc,transformer"], "--architectures: expected architectures among fc, cnn, got "
                                                "'transformer'"),
        (["--lr", "0"], "--lr: expected a learning rate in (0, 1], got 0.0"),
        (["--lr", "3"], "--lr: expected a learning rate in (0, 1], got 3.0"),
        (["--lr", "inf"], "--lr: expected a learning rate in (0, 1], got inf"),
        (["--example", "100000"], "--example: expected an index below the"),
        (["--data", "mnist1d", "--size", "16"], "--size: expected 0 for mnist1d"),
        (["--architectures", "fc", "--width", "100000", "--depths", "20"], "--width: expected networks of at most"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "CNN depths computing the identity" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "dynamics-identity" and sorted(meta["units"]) == ["cnn-d01", "cnn-d02"]
    assert all((out / name).is_file() for name in ("nets.parquet", "correlations.parquet", "report.html"))
    code, captured = run_main(["dynamics", "identity", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 2 finished units, training 0" in captured.err
    code, captured = run_main(["dynamics", "identity", "--out", str(out), "--resume", "--max-steps", "12"], capsys)
    assert code == 2 and "--max-steps 12 differs from the run's 10" in captured.err
