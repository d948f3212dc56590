"""``eval_mode``: eval inside the block, each submodule's own mode back afterwards, also on an exception."""

from __future__ import annotations

import pytest
from torch import nn

from fitscope.train.modes import eval_mode


def test_every_submodule_gets_its_own_mode_back_even_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    model.train()
    model[2].eval()  # a frozen batch norm inside a model in train mode
    before = [m.training for m in model.modules()]
    with eval_mode(model) as inside:
        assert inside is model and not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
