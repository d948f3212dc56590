"""How many CPU threads torch uses for training.

``FITSCOPE_NUM_THREADS`` (if set) wins; otherwise ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` (torch reads these itself) are respected; otherwise torch
uses every CPU this process may run on.
"""

from __future__ import annotations

import os

import torch

from fitscope.errors import ConfigError

_configured = False


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    Args:
        n: threads to use; None reads ``FITSCOPE_NUM_THREADS``, then leaves an
            ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` choice alone, then uses
            :func:`available_cpus` (on the first call only, so that a later
            ``torch.set_num_threads`` by the caller is respected).
    """
    global _configured
    if n is None:
        env = os.environ.get("FITSCOPE_NUM_THREADS")
        if env:
            try:
                n = int(env)
            except ValueError:
                raise ConfigError(f"FITSCOPE_NUM_THREADS: expected a positive integer, got {env!r}") from None
        elif _configured or os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
            # Set once per process: a later torch.set_num_threads() by the user is kept.
            return torch.get_num_threads()
        else:
            n = available_cpus()
            _configured = True
    if n < 1:
        raise ConfigError(f"number of threads: expected a positive integer, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
