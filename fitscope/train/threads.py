"""How many CPU threads torch uses for a training call: one rule, decided afresh at every call.

The rule (applied by :func:`configure_threads`, which every training function
of :mod:`fitscope.train` calls on entry):

1. an explicit count (``configure_threads(n)``) is set;
2. else ``FITSCOPE_NUM_THREADS``, if set, is read *at this call* and set
   (so changing it between two calls changes the second call's threads);
3. else torch's setting is left alone: whatever the caller chose with
   ``torch.set_num_threads`` (or torch's own default, which follows
   ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``).

Nothing is remembered between calls. The executors of :mod:`fitscope.runs`
pin a task's threads (and ``FITSCOPE_NUM_THREADS``) for the task's duration,
so a training call inside a task uses the task's count. The CPU counter is
:func:`fitscope.runs.executors.machine_cpus`, the environment variable's
parser :func:`fitscope.runs.executors.env_threads`.
"""

from __future__ import annotations

import torch

from fitscope.runs.executors import env_threads
from fitscope.validation import check_int


def configure_threads(n: int | None = None) -> int:
    """Apply the thread rule of this module for one call and return torch's thread count after it.

    Args:
        n: threads to use; None reads ``FITSCOPE_NUM_THREADS`` now, and when it
            is not set leaves torch's current setting (the caller's) alone.

    Returns:
        ``torch.get_num_threads()`` after applying the rule.

    Raises:
        ConfigError: ``n`` or ``FITSCOPE_NUM_THREADS`` is not a positive integer.
    """
    if n is None:
        n = env_threads()
        if n is None:
            return torch.get_num_threads()
    else:
        n = check_int(n, "threads")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
