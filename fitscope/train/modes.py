"""A module's train/eval mode for the length of a block."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode inside the block and give every submodule its own mode back afterwards.

    Each submodule's flag is restored, not only the top module's: a caller who froze one layer in eval mode
    inside a model in train mode gets exactly that back, also when the block raises.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
