"""The audit's memory estimate: its parts, the refusal before anything is written, and the measured peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cli_helpers import run_main
from fitscope.errors import ConfigError
from fitscope.experiments.audit import make_config
from fitscope.experiments.audit_memory import (
    MEMORY_LIMIT_ENV,
    available_memory,
    check_audit_memory,
    estimate_audit_memory,
    memory_text,
    model_size,
)

# One audit per child process, after a warm-up audit that imports every library the audit uses; the child
# reports its peak resident memory during the audit above its resident memory just before it (the kernel's
# high-water mark reset at that moment: ru_maxrss would also count the data generation's peak, which made an
# earlier version of this test fail when the allocator happened to return that memory), and the estimate.
PROBE = textwrap.dedent('''
    import json, resource, sys
    from pathlib import Path
    import numpy as np

    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def data(path, n, m, shape, c, seed):
        rng = np.random.default_rng(seed)
        d = int(np.prod(shape))
        centers = rng.normal(size=(c, d)).astype(np.float32) * 2
        y = rng.integers(0, c, n + m)
        x = (centers[y] + rng.normal(size=(n + m, d)).astype(np.float32)).reshape(n + m, *shape)
        np.savez(path, x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:])

    values = json.loads(sys.argv[1])
    tmp = Path(sys.argv[2])
    n, m, shape, c = values.pop("size")
    data(tmp / "warm.npz", 200, 100, shape, c, 1)
    data(tmp / "big.npz", n, m, shape, c, 2)
    from fitscope.experiments.audit import audit, make_config
    from fitscope.experiments.audit_memory import estimate_audit_memory
    audit(make_config(**{**values, "data": str(tmp / "warm.npz"), "models": 8, "chunk": 8}), tmp / "warm")
    cfg = make_config(**{**values, "data": str(tmp / "big.npz")})
    # the peak of the audit alone: reset the kernel's high-water mark (VmHWM) to the current RSS first, so that
    # the data generation and the warm-up above (which may have peaked higher and freed) do not count
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = resident()
    audit(cfg, tmp / "run")
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    peak = hwm - before
    estimate = estimate_audit_memory(cfg, n, m, tuple(shape), c)
    print(json.dumps({"measured": peak, "estimate": estimate.total,
                      "phases": {p: estimate.phase(p) for p in ("data", "unit", "estimate")}}))
''')

#: Two audits whose peaks come from different parts: wide image inputs (the data, their copies and the
#: bandwidth's sample: the estimate step), and many models on many rows of 20 classes (the unit's logits).
SIZES = {
    "wide inputs": dict(size=[2000, 500, [1, 50, 80], 10], model="mlp:16x1", models=8, chunk=8, epochs=1),
    "many models": dict(size=[10000, 1000, [20], 20], model="mlp:16x1", models=128, chunk=128, epochs=2),
}


def test_the_estimate_is_within_a_factor_of_two_of_the_measured_peak(tmp_path):
    env = {**os.environ, "FITSCOPE_NUM_THREADS": "1"}  # the two children share the machine's cores
    env.pop(MEMORY_LIMIT_ENV, None)
    children = {}
    for name, values in SIZES.items():
        where = tmp_path / name.replace(" ", "-")
        where.mkdir()
        values = {**values, "cscore_ratios": [0.7], "oof_families": []}
        children[name] = subprocess.Popen([sys.executable, "-c", PROBE, json.dumps(values), str(where)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    results = {}
    for name, child in children.items():
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        results[name] = json.loads(out.strip().splitlines()[-1])
    for name, r in results.items():
        # the big parts are what the estimate counts: over 150 MB each, well above allocator noise
        assert r["estimate"] > 150e6 and r["measured"] > 75e6, (name, r)
        assert 0.5 <= r["estimate"] / r["measured"] <= 2.0, (name, r)
    # the two peaks come from different phases, so both kinds of part are checked
    wide, many = results["wide inputs"]["phases"], results["many models"]["phases"]
    assert wide["estimate"] > wide["unit"] and many["unit"] > many["estimate"]


def _digits_args(out):
    return ["audit", "--model", "mlp:32x1", "--models", "8", "--cscore-ratios", "0.7", "--epochs", "1", "--chunk", "4",
            "--oof-families", "logistic", "--out", str(out)]


def test_an_audit_that_would_not_fit_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "20000000")  # a 20 MB machine
    out = tmp_path / "run"
    code, captured = run_main(_digits_args(out), capsys)
    assert code == 2, captured.err
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert "memory: expected an audit that fits the 19 MiB available, got one that needs about" in lines[0]
    assert "(largest parts: estimate: median bandwidth" in lines[0]
    assert "even --chunk 1 --models 8 needs about" in lines[0]  # digits' fixed parts alone exceed 20 MB
    assert not out.exists()
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    code, captured = run_main(_digits_args(out), capsys)
    assert code == 2 and f"{MEMORY_LIMIT_ENV}: expected a positive integer number of bytes, got 'lots'" in captured.err
    assert not out.exists()


MNIST = dict(n_train=60000, n_test=10000, input_shape=(784,), n_classes=10)


def test_the_refusal_names_a_chunk_and_a_models_count_that_fit(monkeypatch):
    """MNIST-sized data, 200 models in units of 100: a machine just too small for the config; the suggestions fit."""
    cfg = make_config(model="mlp:256x1", models=200, chunk=100, epochs=20, cscore_ratios=[0.7], oof_families=[])
    size = model_size(cfg.model, MNIST["input_shape"], MNIST["n_classes"])

    def total(**changes):
        return estimate_audit_memory(cfg.model_copy(update=changes), **MNIST, size=size).total

    assert total(chunk=100) > total(chunk=50) > total(chunk=10)  # the unit sets the peak
    limit = (total(chunk=40) + total(chunk=41)) // 2
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(limit))
    with pytest.raises(ConfigError) as info:
        check_audit_memory(cfg, **MNIST)
    text = str(info.value)
    assert text.startswith(f"memory: expected an audit that fits the {memory_text(limit)} available, got one that "
                           f"needs about {memory_text(total())} (largest parts: unit: evaluation logits ")
    assert text.endswith("; lower it with --chunk 40 or --models 40") and "\n" not in text
    assert total(models=40) <= limit < total(models=41)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(total()))  # exactly enough: accepted
    assert check_audit_memory(cfg, **MNIST).total == total()


def test_the_parts_follow_the_config():
    cfg = make_config(model="mlp:256x1", models=100, chunk=50, epochs=20, cscore_ratios=[0.7], oof_families="auto")
    est = estimate_audit_memory(cfg, **MNIST)
    n, m, d, c, k = 60000, 10000, 784, 10, 50
    assert est.parts["data: inputs and labels"] == 4 * d * (n + m) + 8 * (2 * n + m)
    assert est.parts["unit: evaluation logits"] == 2 * 4 * k * (n + m) * c
    assert est.parts["unit: records summary"] == 20 * k * n  # not growing with epochs
    assert estimate_audit_memory(cfg.model_copy(update={"epochs": 200}), **MNIST).parts == est.parts
    size = model_size("mlp:256x1", (784,), 10)
    assert (size.params, size.hidden) == (784 * 256 + 256 + 256 * 10 + 10, 256)
    assert est.parts["unit: parameters, gradients and optimizer state"] == 4 * k * size.params * 5  # adam
    # "auto" fits only logistic regression on 47 million input entries: no boosting histograms
    assert "scikit-learn unit: inputs and fold copies" in est.parts
    assert "scikit-learn unit: boosting histograms" not in est.parts
    assert est.total == est.phase("data") + max(est.phase("unit"), est.phase("scikit-learn unit"),
                                                est.phase("estimate"))
    assert est.total < 8 * 1024**3  # the target for 60,000 x 784 with 100 models
    fewer = estimate_audit_memory(cfg.model_copy(update={"chunk": 10}), **MNIST)
    assert fewer.parts["unit: evaluation logits"] * 5 == est.parts["unit: evaluation logits"]
    assert fewer.phase("unit") < est.phase("unit") / 2


def test_available_memory_reads_the_machine_or_the_override(monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    free = available_memory()
    assert free is not None and 0 < free < 1 << 50
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "12345")
    assert available_memory() == 12345
    for bad in ("0", "-5", "1e9", ""):
        monkeypatch.setenv(MEMORY_LIMIT_ENV, bad)
        with pytest.raises(ConfigError, match=f"^{MEMORY_LIMIT_ENV}: expected a positive integer number of bytes"):
            available_memory()
