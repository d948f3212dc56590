"""How much memory an audit needs, estimated before it starts, and the check that refuses one that would not fit.

Notation: n training rows, m test rows, D input values per row (the product
of the input shape), C classes, K memorization models, k models per unit
(``--chunk``, at most K), E epochs, B batch size, P parameters of one model,
A activation values of one model on one row (every layer's output), H the
width of its last hidden layer, s = min(n, 2000) (the median heuristic's sample).

The audit holds its data all the time and, one after another, one unit in
flight (the local executor trains one unit at a time), the scikit-learn
unit, and the estimate step. Its peak is therefore

    data + max(one unit, the scikit-learn unit, the estimate step)

where each of the three is the sum of its big parts (bytes; float32 = 4):

data
    ``4 D (n + m) + 8 (2 n + m)``: inputs (float32), labels as loaded and as trained (int64).
one unit (:func:`fitscope.train.train_ensemble` on k models, CPU) at its peak, an evaluation pass
    after the first epoch:
    inputs on the device ``4 D (n + m)`` (train and test rows in one tensor);
    subset rows and batch order ``3 * 8 k r n`` (r = the largest subset ratio);
    parameters, gradients, optimizer state and the fused step's scratch ``4 k P (3 + slots)``
    (adam 2 slots, sgd 1); a training batch ``3 * 4 k B (D + A)``; the evaluation
    logits ``2 * 4 k (n + m) C`` (this epoch's and the last epoch's while it is
    computed; afterwards the one ``(k, n, C)`` temporary of the log-sum-exp or
    the margin takes the last epoch's place); per-example statistics ``34 k n``
    (this and the last epoch's loss, correctness and margin, the per-model
    means); the records summary ``20 k n`` (counts, margin
    sum, the float64 temporary of the sum: it does not grow with E); and ``8 n H``
    for the hidden features the first unit returns. (After the pass, the
    result's copies and the unit's returned arrays, ``4 k (n + m) C + 2 k n C
    + 26 k n``, are smaller.)
the scikit-learn unit (:func:`fitscope.train.sklearn_oof_probs`)
    ``3 * 8 n D``: the float64 copy of the inputs, a fold's training rows and
    their standardized (or binned) copy; families run one after another; with
    gradient boosting ``112640 D`` more for its histograms (256 bins of 20
    bytes, about 22 nodes' worth per feature).
the estimate step (``fitscope.experiments.audit.estimate``)
    the gathered arrays ``K (n (11 + 2 C) + m) + 2 K_c n + 4 n H + 8 n C F``
    (K_c: C-score models of the other ratios, F: scikit-learn families); one
    unit being read; and the largest of the estimators' temporaries, which
    run one after another: the influence blocks (``6 * 4 b m``, ``b = min(n, 2e6 / m)``
    rows, plus ``4 K m``), the out-of-fold softmax blocks (``2 * 8 K_b n C``,
    ``K_b = min(K, 4e6 / (n C))`` models, plus ``K n``), learning speed
    ``5 K n`` (the counts' range check, their int32 sum over the subsets), the
    input-space kernel density (``8 n_c D`` for the largest class n_c and a
    block of ``8 b n_c`` with ``b = min(n_c, 4e6 / n_c)`` rows; the finiteness
    checks read in blocks), the median-heuristic bandwidth ``8 s D + 28 s^2`` (its
    sample in float64, the pairwise distances and their upper triangle), relative
    distance (``4 n D``, ``8 n D`` more when D <= 15: scikit-learn's tree)
    and the tables ``8 n (30 + 8 C (F + 1))``.

No estimator builds an ``n x n`` matrix: the kernel density works in blocks
of rows per class, the bandwidth looks at 2000 rows at most, the nearest
neighbours come from scikit-learn's chunked search, influence streams blocks
of training rows. Not counted: the interpreter and its libraries (resident
before the audit starts); the influence candidates, the pairs passing the
fixed thresholds (about 200 bytes each while the list is made; how many
depends on how many rows are memorized, which is known only after training:
with 100 models and a tenth of 60,000 rows memorized, 3 million candidates
and 0.6 GB against 10,000 test rows); and on a GPU the unit's device parts,
which then live in GPU memory (the estimate is the CPU's).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from fitscope.errors import ConfigError
from fitscope.models import build, largest_activation
from fitscope.train import auto_families
from fitscope.validation import message, shorten

#: Set to a number of bytes, the memory the audit may use instead of the memory available here
#: (simulates a smaller machine; the tests use it).
MEMORY_LIMIT_ENV = "FITSCOPE_MEMORY_LIMIT_BYTES"

# Influence blocks and out-of-fold softmax blocks hold about this many entries (fitscope.estimators).
_INFLUENCE_ENTRIES = 2_000_000
_SOFTMAX_ENTRIES = 4_000_000
_KERNEL_ENTRIES = 4_000_000
_MEDIAN_SAMPLE = 2000
# Gradient boosting's histograms: 256 bins x 20 bytes (gradient, hessian, count) for about 22 nodes per feature
# (measured: 199 MB for 4000 x 1000 inputs and 10 classes, 86 MB of them the inputs' copies).
_BOOSTING_PER_FEATURE = 22 * 256 * 20
_GIB = 1024**3


@dataclass(frozen=True)
class ModelSize:
    """The sizes of one model of a spec that the memory estimate needs.

    Attributes:
        params: P, parameters of one model.
        activations: A, values of every layer's output for one row (training mode).
        largest: values of the largest single activation for one row.
        hidden: H, inputs of the last linear layer (the hidden features the audit keeps).
    """

    params: int
    activations: int
    largest: int
    hidden: int


def model_size(spec: str, input_shape: tuple[int, ...], n_classes: int) -> ModelSize:
    """:class:`ModelSize` of ``spec`` on inputs ``input_shape`` with ``n_classes`` classes (built on the meta device).

    Raises:
        ConfigError: a bad spec or one that does not fit the input shape.
    """
    with torch.device("meta"):
        model = build(spec, tuple(input_shape), n_classes, seeds=[0])
    params = sum(p.numel() for p in model.parameters())
    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor) and not list(module.children()):
            total += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    model.train()
    with torch.no_grad():
        model(torch.empty(1, 1, *input_shape, device="meta"))
    for hook in hooks:
        hook.remove()
    return ModelSize(params=int(params), activations=int(total),
                     largest=int(largest_activation(spec, tuple(input_shape), n_classes)),
                     hidden=int(model.out.in_features))


@dataclass(frozen=True)
class MemoryEstimate:
    """The big parts of an audit's memory, in bytes, and its estimated peak.

    Attributes:
        parts: part name -> bytes; names start with the phase that holds them
            (``data``, ``unit``, ``scikit-learn unit``, ``estimate``).
        total: the estimated peak, ``data + max(unit, scikit-learn unit, estimate)`` (bytes).
    """

    parts: dict[str, int] = field(default_factory=dict)

    def phase(self, name: str) -> int:
        """Bytes of the parts of one phase (``"data"``, ``"unit"``, ``"scikit-learn unit"``, ``"estimate"``)."""
        return sum(v for k, v in self.parts.items() if k.split(": ", 1)[0] == name)

    @property
    def total(self) -> int:
        """The estimated peak in bytes: the data plus the largest of the three phases."""
        return self.phase("data") + max(self.phase("unit"), self.phase("scikit-learn unit"), self.phase("estimate"))

    def largest(self, count: int = 3) -> list[tuple[str, int]]:
        """The ``count`` largest parts of the phases that make the peak, largest first."""
        peak = max(("unit", "scikit-learn unit", "estimate"), key=self.phase)
        at_peak = [(k, v) for k, v in self.parts.items() if k.split(": ", 1)[0] in ("data", peak)]
        return sorted(at_peak, key=lambda kv: -kv[1])[:count]


def estimate_audit_memory(cfg, n_train: int, n_test: int, input_shape: tuple[int, ...], n_classes: int, *,
                          largest_class: int | None = None, size: ModelSize | None = None) -> MemoryEstimate:
    """The memory an audit with config ``cfg`` needs on data of the given size (the formulas of the module docstring).

    Args:
        cfg: an :class:`~fitscope.experiments.audit.AuditConfig`.
        n_train: n, training rows.
        n_test: m, test rows.
        input_shape: the shape of one input (D is its product).
        n_classes: C.
        largest_class: rows of the largest class (the kernel density's block); default ``ceil(n / C)``.
        size: the model's sizes (default :func:`model_size` of ``cfg.model``).

    Returns:
        A :class:`MemoryEstimate` (bytes).
    """
    n, m, c = int(n_train), int(n_test), int(n_classes)
    d = math.prod(input_shape)
    size = size or model_size(cfg.model, tuple(input_shape), c)
    big_k = int(cfg.models)
    other_ratios = [r for r in cfg.cscore_ratios if r != cfg.ratio]
    cscore_models = int(cfg.cscore_models) * len(other_ratios)  # K_c
    k = min(int(cfg.chunk), max(big_k, int(cfg.cscore_models) if other_ratios else 0))  # the largest unit
    ratio = max([cfg.ratio, *cfg.cscore_ratios])
    slots = 2 if cfg.optimizer == "adam" else 1
    families = auto_families(n, d) if cfg.oof_families == "auto" else tuple(cfg.oof_families)
    f = len(families)
    nc = int(largest_class) if largest_class is not None else -(-n // c)
    logits = 4 * k * (n + m) * c  # one evaluation pass's (k, n + m, C) float32 logits
    parts = {
        "data: inputs and labels": 4 * d * (n + m) + 8 * (2 * n + m),
        "unit: inputs on the device": 4 * d * (n + m),
        "unit: subset rows and batch order": int(3 * 8 * k * ratio * n),
        "unit: parameters, gradients and optimizer state": 4 * k * size.params * (3 + slots),
        "unit: activations of a training batch": 3 * 4 * k * int(cfg.batch_size) * (d + size.activations),
        "unit: evaluation logits": 2 * logits,
        "unit: per-example statistics": 34 * k * n,
        "unit: records summary": 20 * k * n,
        "unit: hidden features of the first model": 8 * n * size.hidden,
    }
    if f:
        parts["scikit-learn unit: inputs and fold copies"] = 3 * 8 * n * d
        if "boosting" in families:
            parts["scikit-learn unit: boosting histograms"] = _BOOSTING_PER_FEATURE * d
    rows = min(n, max(1, _INFLUENCE_ENTRIES // max(m, 1)))
    s = min(n, _MEDIAN_SAMPLE)
    temporaries = {
        "influence blocks": 6 * 4 * rows * m + 4 * big_k * m,
        "out-of-fold softmax blocks": 2 * 8 * min(big_k, max(1, _SOFTMAX_ENTRIES // (n * c))) * n * c + big_k * n,
        "learning speed": 5 * big_k * n,
        "kernel density": 8 * nc * d + 8 * min(nc, max(1, _KERNEL_ENTRIES // nc)) * nc,
        "median bandwidth": 8 * s * d + 28 * s * s,
        "relative distance": 4 * n * d + (8 * n * d if d <= 15 else 0),
    }
    name, largest_temp = max(temporaries.items(), key=lambda kv: kv[1])
    parts.update({
        "estimate: gathered arrays": (big_k * (n * (11 + 2 * c) + m) + 2 * cscore_models * n + 4 * n * size.hidden
                                      + 8 * n * c * f),
        "estimate: one unit being read": k * (n * (8 + 2 * c) + m) + 4 * n * size.hidden,
        f"estimate: {name}": largest_temp,
        "estimate: tables": 8 * n * (30 + 8 * c * (f + 1)),
    })
    return MemoryEstimate(parts={k: int(v) for k, v in parts.items()})


def available_memory() -> int | None:
    """Bytes of memory available here now: ``FITSCOPE_MEMORY_LIMIT_BYTES`` if set, else psutil's
    ``virtual_memory().available``, else ``MemAvailable`` of ``/proc/meminfo``; None where none is known.

    Raises:
        ConfigError: ``FITSCOPE_MEMORY_LIMIT_BYTES`` is not a positive integer.
    """
    text = os.environ.get(MEMORY_LIMIT_ENV)
    if text is not None:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise ConfigError(message(MEMORY_LIMIT_ENV, "a positive integer number of bytes", shorten(text)))
        return value
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        return None
    return None


def memory_text(nbytes: float) -> str:
    """Bytes as ``"1.5 GiB"`` (``"120 MiB"``, ``"0.3 MiB"`` under a GiB)."""
    if nbytes >= _GIB:
        return f"{nbytes / _GIB:.1f} GiB"
    mib = nbytes / 1024**2
    return f"{mib:.0f} MiB" if mib >= 9.95 else f"{mib:.1f} MiB"


def check_audit_memory(cfg, n_train: int, n_test: int, input_shape: tuple[int, ...], n_classes: int, *,
                       largest_class: int | None = None, loaded: int = 0) -> MemoryEstimate:
    """Refuse an audit whose estimated peak exceeds the memory available (one line naming the flags that lower it).

    The memory the audit may use is :func:`available_memory` plus ``loaded``
    (the bytes it already holds: the data, loaded before this check), or
    ``FITSCOPE_MEMORY_LIMIT_BYTES`` alone when set. The suggestion is the
    largest ``--chunk`` below the config's that fits, and the most ``--models``
    (at least the ratio's minimum) that fit with the config's chunk.

    Returns:
        The :class:`MemoryEstimate` (also when no available memory is known: then nothing is refused).

    Raises:
        ConfigError: ``memory: expected an audit that fits the Y available, got one that needs about X
            (largest parts: ...); lower it with --chunk N or --models M``.
    """
    from fitscope.estimators.subsets import min_models

    size = model_size(cfg.model, tuple(input_shape), n_classes)

    def estimate(**changes) -> MemoryEstimate:
        return estimate_audit_memory(cfg.model_copy(update=changes), n_train, n_test, input_shape, n_classes,
                                     largest_class=largest_class, size=size)

    result = estimate()
    free = available_memory()
    if free is None:
        return result
    limit = free if MEMORY_LIMIT_ENV in os.environ else free + int(loaded)
    if result.total <= limit:
        return result
    def most(name: str, low: int, high: int) -> int | None:
        # the largest value in [low, high] that fits (the estimate grows with chunk and models): bisection
        if high < low or estimate(**{name: low}).total > limit:
            return None
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if estimate(**{name: mid}).total <= limit else (low, mid - 1)
        return low

    chunk = most("chunk", 1, min(cfg.chunk, cfg.models) - 1)
    fewest = min_models(cfg.ratio)
    models = most("models", fewest, cfg.models - 1)
    ways = [f"--chunk {chunk}"] if chunk is not None else []
    ways += [f"--models {models}"] if models is not None else []
    if ways:
        lower = "lower it with " + " or ".join(ways)
    else:
        least = estimate(chunk=1, models=fewest).total
        lower = (f"even --chunk 1 --models {fewest} needs about {memory_text(least)}: use a machine with more "
                 f"memory or fewer training rows")
    parts = ", ".join(f"{name} {memory_text(v)}" for name, v in result.largest())
    raise ConfigError(message("memory", f"an audit that fits the {memory_text(limit)} available",
                              f"one that needs about {memory_text(result.total)} (largest parts: {parts}); {lower}"))
