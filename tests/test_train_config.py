"""TrainConfig validation, learning-rate schedules and thread settings."""

from __future__ import annotations

import math

import pytest
import torch

from fitscope.errors import ConfigError
from fitscope.train import TrainConfig, configure_threads, lr_at, lr_schedule


def test_defaults():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr, cfg.momentum) == (30, 128, "sgd", 0.05, 0.9)
    assert cfg.weight_decay == 0.0 and cfg.augment is False and cfg.record == "summary"
    assert cfg.record_epochs == [-1]
    assert cfg.schedule == "constant" and cfg.early_stop == "none"
    assert TrainConfig(optimizer="adam").lr == 1e-3
    assert TrainConfig(optimizer="adam", lr=0.01).lr == 0.01
    assert TrainConfig(schedule="exponential").gamma == 0.95
    assert TrainConfig(schedule="step").gamma == 0.1


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=-1), "batch_size"),
        (dict(lr=-0.1), "lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(weight_decay=-1), "weight_decay"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(schedule="linear"), "schedule"),
        (dict(early_stop="sometimes"), "early_stop"),
        (dict(gamma=1.5), "gamma"),
        (dict(epochs="many"), "epochs"),
        (dict(learning_rate=0.1), "learning_rate"),
    ],
)
def test_bad_values_raise_one_line_config_error(kwargs, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kwargs)
    message = str(info.value)
    assert field in message and "\n" not in message
    assert "got" in message or "unknown field" in message


def test_model_validate_errors_are_config_errors():
    assert TrainConfig.model_validate({"epochs": 3}).epochs == 3
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.model_validate({"epochs": 0})


def test_round_trip_through_dict():
    cfg = TrainConfig(epochs=5, optimizer="adam", schedule="cosine", augment=True)
    assert TrainConfig(**cfg.model_dump()) == cfg


def test_constant_and_step_schedules():
    assert lr_schedule(TrainConfig(epochs=3, lr=0.1)) == [0.1, 0.1, 0.1]
    cfg = TrainConfig(epochs=6, lr=1.0, schedule="step", step_size=2, gamma=0.5)
    assert lr_schedule(cfg) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_exponential_schedule():
    cfg = TrainConfig(epochs=4, lr=2.0, schedule="exponential", gamma=0.5)
    assert lr_schedule(cfg) == [2.0, 1.0, 0.5, 0.25]


def test_cosine_schedule():
    cfg = TrainConfig(epochs=4, lr=1.0, schedule="cosine")
    expected = [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert lr_schedule(cfg) == pytest.approx(expected)
    assert lr_at(cfg, 0) == 1.0 and lr_at(cfg, 2) == pytest.approx(0.5)
    assert all(a > b > 0 for a, b in zip(lr_schedule(cfg), lr_schedule(cfg)[1:]))


def test_configure_threads_env_override(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("FITSCOPE_NUM_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        assert configure_threads(2) == 2
        monkeypatch.setenv("FITSCOPE_NUM_THREADS", "lots")
        with pytest.raises(ConfigError):
            configure_threads()
    finally:
        torch.set_num_threads(before)


def test_record_modes_and_epochs():
    assert TrainConfig(record=True).record == "full" and TrainConfig(record=False).record == "none"
    assert TrainConfig(record="summary").record == "summary"
    assert TrainConfig(epochs=5, record_epochs=[-1, 3, 1]).record_epochs == [1, 3, -1]
    for bad in ([0], [6], [2, 2], [-2]):
        with pytest.raises(ConfigError, match=r"^record_epochs: expected distinct epochs in \[1, epochs = 5\] or -1 "
                                              r"\(the last epoch run\) \(a TrainConfig field\), got "):
            TrainConfig(epochs=5, record_epochs=bad)
    with pytest.raises(ConfigError, match=r"^record: expected 'none', 'summary' or 'full'"):
        TrainConfig(record="every")
