"""Shared checks for the regularizer parts (imported by tests/test_regularizers_*.py).

- :func:`tiny_problem`: small inputs of each model family's shape with labels.
- :func:`objective_logit_grads`: run one step of the assembled objective on a K-model ensemble and return the
  gradient of the objective with respect to the logits (through a hook), to compare with a hand formula.
- :func:`assert_together_equals_alone`: models trained together under the parts equal each trained alone.
"""

from __future__ import annotations

import numpy as np
import torch

from fitscope.models import build
from fitscope.train import TrainConfig, train_ensemble
from fitscope.train.objective import Objective
from fitscope.train.regularizers import TrainState, build_parts, check_parts

#: one small spec and input shape per model family
FAMILIES = {
    "mlp": ("mlp:8", (6,)),
    "cnn": ("cnn:4", (1, 6, 6)),
    "resnet": ("resnet:4x1", (1, 6, 6)),
    "cnn1d": ("cnn1d:4", (1, 12)),
}


def tiny_problem(input_shape, n: int = 24, classes: int = 3, seed: int = 0):
    """``(x, y)``: float32 inputs of ``input_shape`` and labels in ``[0, classes)`` (every class present)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(np.float32)
    y = np.arange(n) % classes
    rng.shuffle(y)
    return x, y


def make_state(spec: str, x: np.ndarray, y: np.ndarray, parts_text: str, *, seeds=(0, 1), classes: int = 3,
               epochs: int = 10):
    """A built K-model ensemble, its attached parts, the state and the objective (for one-step checks)."""
    parts = build_parts(check_parts(parts_text))
    model = build(spec, x.shape[1:], classes, seeds=list(seeds))
    state = TrainState(model=model, seeds=list(seeds), n=len(x), n_classes=classes, epochs=epochs,
                       device=torch.device("cpu"), input_shape=tuple(x.shape[1:]), labels=torch.from_numpy(y))
    for part in parts:
        part.attach(state)
    return parts, model, state, Objective(parts, state, hand_written=False)


def objective_logit_grads(objective: Objective, x: np.ndarray, y: np.ndarray, idx: np.ndarray):
    """One objective call on rows ``idx`` ``(K, b)``: ``(logits, d objective / d logits)``, both ``(K, b, C)``."""
    seen = {}

    def hook(module, inputs, output):
        output.retain_grad()
        seen["logits"] = output

    handle = objective.model.register_forward_hook(hook)
    try:
        idx_t = torch.from_numpy(idx)
        objective(torch.from_numpy(x)[idx_t], torch.from_numpy(y)[idx_t], idx_t)
    finally:
        handle.remove()
    return seen["logits"].detach(), seen["logits"].grad.detach()


def assert_together_equals_alone(spec: str, x, y, regularizers: str, *, seeds=(3, 4), epochs: int = 2,
                                 batch_size: int = 8, atol: float = 1e-5, **config) -> None:
    """Train ``seeds`` together and the last seed alone under ``regularizers``: its logits and measures agree."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.05, regularizers=regularizers, record="none",
                      **config)
    together = train_ensemble(spec, x, y, config=cfg, seeds=list(seeds))
    alone = train_ensemble(spec, x, y, config=cfg, seeds=[seeds[-1]])
    np.testing.assert_allclose(together.train_logits[-1], alone.train_logits[0], atol=atol, rtol=1e-4)
    np.testing.assert_allclose(together.train_loss[-1], alone.train_loss[0], atol=atol, rtol=1e-4)
    for key, value in alone.measures.items():
        np.testing.assert_allclose(together.measures[key][-1], value[0], atol=atol, rtol=1e-4)
    # and the parts changed training: the run differs from plain cross-entropy
    plain = train_ensemble(spec, x, y, config=TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.05,
                                                          record="none", **config), seeds=[seeds[-1]])
    assert not np.allclose(plain.train_logits[0], alone.train_logits[0], atol=atol)
