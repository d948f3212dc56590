"""bench/train_throughput.py: its baselines train what they claim, its engine timing marks bracket the right code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import train_throughput as tt  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    x, y, x_te, y_te = tt.load_digits_split()
    return x[:300], y[:300], x_te[:100], y_te[:100]


@pytest.mark.parametrize("grads", ["func", "autograd"])
def test_the_vmap_recipe_trains_the_same_models_as_the_slicing_loop(digits, grads):
    # same initial weights, same batches, and the functional SGD is torch.optim.SGD's update
    kw = dict(models=3, epochs=2, batch=64, spec="mlp:32-16", keep=True)
    c = tt.run_vmap_recipe(*digits, grads=grads, **kw)
    d = tt.run_slicing(*digits, **kw)
    assert sorted(c["params"]) == sorted(d["params"])
    start = {name: torch.stack([dict(tt.plain_mlp("mlp:32-16", s).named_parameters())[name].detach()
                                for s in range(3)]) for name in d["params"]}
    for name, p in d["params"].items():
        assert p.shape[0] == 3
        assert not torch.allclose(p, start[name])  # it trained
        torch.testing.assert_close(c["params"][name], p, rtol=1e-4, atol=1e-5)
    assert c["test_acc"] == pytest.approx(d["test_acc"], abs=0.02)
    assert c["examples"] == d["examples"] == 3 * 2 * 300


def test_every_method_learns_and_reports_wall_and_cpu_seconds(digits):
    kw = dict(models=2, epochs=3, batch=32, spec="mlp:32x1")
    outs = dict(a=tt.run_baseline(*digits, **kw), a_eval=tt.run_baseline(*digits, eval_each_epoch=True, **kw),
                c=tt.run_vmap_recipe(*digits, **kw), d=tt.run_slicing(*digits, **kw), engine=tt.run_engine(*digits, **kw))
    for name, out in outs.items():
        assert out["examples"] == 2 * 3 * 300, name
        assert out["train"] > 0 and out["wall"] > 0 and out["cpu"] > 0, name
        assert out["test_acc"] > 0.5, name  # chance is 0.1
    e = outs["engine"]
    assert e["train_cpu"] > 0 and e["eval_cpu"] > 0
    # the marks bracket the same code as the engine's own train/eval clocks
    assert e["train_wall_marks"] == pytest.approx(e["train"], abs=0.05)
    assert e["eval_wall_marks"] == pytest.approx(e["eval"], abs=0.05)
    assert e["train"] + e["eval"] <= e["wall"]
    # the instrumentation is undone
    import fitscope.train.ensemble as ens
    assert ens.EpochSampler.__name__ == "EpochSampler" and ens.predict_logits.__name__ == "predict_logits"


@pytest.mark.slow
def test_main_writes_a_record_with_both_clocks_and_the_targets(tmp_path, capsys):
    out = tmp_path / "tt.json"
    tt.main(["--specs", "mlp:64x1", "--epochs", "1", "--models", "2", "--repeats", "1", "--max-wait", "0",
             "--skip-eval-baseline", "--out", str(out)])
    rec = json.loads(out.read_text())
    assert rec["provenance"]["script"] == "bench/train_throughput.py"
    w = rec["workloads"]["mlp:64x1"]
    keys = [r["key"] for r in w["rows"]]
    assert keys == ["engine_train", "engine_record", "engine_total", "a", "c", "c_autograd", "d"]
    assert all(r["wall_seconds"] > 0 and r["cpu_seconds"] > 0 for r in w["rows"])
    [target] = rec["targets"]
    assert target["baselines"] == ["d"] and target["least"] == 3.0
    assert {s["baseline"] for s in w["speedups"]} == {"a", "c", "c_autograd", "d"}
    assert set(w["accuracy"]) == {"engine", "a", "c", "c_autograd", "d"}
    assert "TARGET 2 x mlp:64x1" in capsys.readouterr().out


def test_specs_other_than_plain_mlps_are_refused():
    with pytest.raises(ValueError, match="mlp spec without dropout"):
        tt.plain_mlp("cnn:8-16", 0)
    with pytest.raises(ValueError, match="mlp spec without dropout"):
        tt.plain_mlp("mlp:32x1,dropout=0.5", 0)
