"""InstaHide encoding (Huang, Song, Li & Arora 2020) and training on it.

Notation: N private examples of shape ``S`` (e.g. ``(1, 8, 8)``), C classes,
P public examples (Cross-dataset InstaHide), k images per encoding, of which
``k_private`` are private; E encodings.

Each encoding e of private example i (its "self", member 0) is

    enc_e = sigma_e * (w_e0 x_i + sum_{j=1}^{k-1} w_ej x_{s_ej}),   label_e = sum_{j private} w_ej y_{s_ej}

where the weights ``w_e`` are ``|N(0, 1)|`` draws normalised to sum 1 and
redrawn until ``max_j w_ej <= max_weight`` (0.65 in the paper), and
``sigma_e`` is an independent random +-1 per pixel (the "sign mask"; off:
plain k-way mixup). Inputs are first mapped linearly from ``input_range``
(default ``[0, 1]``) to ``[-1, 1]`` so that pixel values are centred on 0;
without centring the sign mask hides nothing (``|enc|`` would be the mix).
The InstaHide challenge data are in ``[-1, 1]``; the reference training code
standardises per channel instead, which centres in the same sense.

Inside-dataset (``public=None``): all k members are private; member j >= 1 of
the encodings of one round of N (one per private example) comes from a fresh
random permutation of the private set, as in the reference code
(``train_inside.py``), so every private example is mixed into about k
encodings per round. Cross-dataset: ``k_private`` members (default
``(k + 1) // 2``, the reference code's ``inside_cnt``) are private (self plus
permutation partners) and the other ``k - k_private`` are public examples
drawn uniformly; weights are also redrawn until the private weights sum to at
least ``min_private_weight`` (the code's ``--dom 0.3``; the code bounds the
first two weights, here all private weights).

Labels mix over the private members only. The reference code does NOT
renormalise them: a Cross-dataset label sums to the private weight (< 1) and
the soft cross-entropy is scaled by it. ``renormalize_labels=True`` divides by
the private weight sum instead (a proper distribution).

Training (``train_instahide``) draws fresh encodings every epoch (fresh
partners, weights and masks, as the reference code does) and evaluates on
clean test inputs: centred to ``[-1, 1]`` but neither mixed nor masked, as
the reference code's ``test()`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fitscope.errors import ConfigError, DataError
from fitscope.seeding import derive_seed
from fitscope.validation import (
    as_array,
    check_finite,
    check_fraction,
    check_int,
    check_labels,
    check_number,
    check_real,
    check_seed,
    message,
    shorten,
)

# Weight redraws allowed per encoding before giving up (max_weight too close to 1/k).
_MAX_REDRAWS = 10_000


@dataclass(frozen=True)
class InstaHideEncoding:
    """Encodings, their labels, and the secret mixing (ground truth for attacks).

    Attributes:
        encodings: ``(E, *S)`` float32, what a trainer (or an eavesdropper) sees.
        labels: ``(E, C)`` float32 mixed labels (private members only).
        sources: ``(E, k)`` int64 member indices; column 0 is the encoded
            private example itself; ``is_public[e, j]`` says whether
            ``sources[e, j]`` indexes the public set instead of the private one.
        is_public: ``(E, k)`` bool.
        weights: ``(E, k)`` float64 mixing weights, each row sums to 1.
        signs: ``(E, *S)`` int8 sign mask (all +1 when the mask is off).
        k: images per encoding.
        k_private: private members per encoding.
        sign_mask: whether the sign mask was applied.
        max_weight: the weight cap.
        seed: the seed the encoding was drawn with.
    """

    encodings: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    is_public: np.ndarray
    weights: np.ndarray
    signs: np.ndarray
    k: int
    k_private: int
    sign_mask: bool
    max_weight: float
    seed: int

    @property
    def n_encodings(self) -> int:
        """E, the number of encodings."""
        return int(self.encodings.shape[0])


def center_inputs(x, *, input_range: tuple[float, float] = (0.0, 1.0), name: str = "x") -> np.ndarray:
    """Map inputs linearly from ``input_range`` to ``[-1, 1]`` (float32).

    Args:
        x: ``(N, *S)`` inputs with every value inside ``input_range``.
        input_range: ``(low, high)`` with ``low < high``.
        name: argument name used in error messages.

    Raises:
        DataError: values outside ``input_range`` or not finite.
        ConfigError: ``low >= high``.
    """
    try:
        low, high = (check_number(v, f"input_range[{i}]") for i, v in enumerate(input_range))
    except (TypeError, ValueError):  # not a pair of numbers
        low = high = math.nan
    if not low < high:
        raise ConfigError(message("input_range", "(low, high) with low < high", shorten(input_range)))
    x = check_finite(as_array(x, name).astype(np.float64), name)
    if x.size and (x.min() < low - 1e-6 or x.max() > high + 1e-6):
        raise DataError(message(name, f"values in input_range [{low}, {high}] (pass input_range=(min, max) of "
                                "your data)", f"values in [{x.min():.4g}, {x.max():.4g}]"))
    return np.clip((x - low) / (high - low) * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def _label_rows(y, n: int, n_classes: int | None) -> np.ndarray:
    """``(N,)`` integer labels as one-hot rows, or ``(N, C)`` one-hot (or probability) rows checked; float64."""
    y = as_array(y, "y")
    if y.ndim == 1:
        n_classes = check_int(n_classes, "n_classes", allow_none=True)
        labels = check_labels(y, "y", n, like="x", n_classes=n_classes)
        c = n_classes if n_classes is not None else int(labels.max()) + 1
        out = np.zeros((n, c), np.float64)
        out[np.arange(n), labels] = 1.0
        return out
    if y.ndim != 2 or y.shape[0] != n:
        raise DataError(message("y", f"shape ({n},) or ({n}, C) to match x", f"shape {y.shape}"))
    y = check_real(y, "y", axes=("N", "C"), shape=(n, None)).astype(np.float64)
    bad = (y < 0).any(axis=1) | ~np.isclose(y.sum(axis=1), 1.0, atol=1e-4)
    if bad.any():
        raise DataError(message("y", "one-hot (or probability) rows: non-negative, each summing to 1",
                                f"row {int(np.argmax(bad))} summing to {y[np.argmax(bad)].sum():.4g}"))
    return y


def draw_weights(n: int, k: int, *, max_weight: float, seed: int, k_private: int | None = None,
                 min_private_weight: float = 0.0) -> np.ndarray:
    """Draw InstaHide mixing weights: ``(n, k)`` rows of ``|N(0,1)|`` normalised to 1, redrawn until capped.

    A row is redrawn until its largest weight is ``<= max_weight`` and its
    first ``k_private`` weights sum to ``>= min_private_weight``.

    Args:
        n: number of rows.
        k: weights per row (>= 1).
        max_weight: cap on each weight, in ``(1/k, 1]`` (ignored for k = 1).
        seed: seed of the draw.
        k_private: leading columns the private-weight floor applies to (default k).
        min_private_weight: floor on the sum of the first ``k_private`` weights.

    Raises:
        ConfigError: a bad argument, or a row still violates the constraints after 10000 redraws.
    """
    n = check_int(n, "n", low=0)
    k = check_int(k, "k")
    max_weight = check_fraction(max_weight, "max_weight", open_low=True)
    seed = check_seed(seed)
    kp = check_int(k_private, "k_private", low=1, high=k, allow_none=True) or k
    min_private_weight = check_fraction(min_private_weight, "min_private_weight")
    rng = np.random.default_rng(seed)
    w = np.abs(rng.standard_normal((n, k)))
    w /= w.sum(axis=1, keepdims=True)
    if k == 1:
        return w
    for _ in range(_MAX_REDRAWS):
        bad = np.flatnonzero((w.max(axis=1) > max_weight) | (w[:, :kp].sum(axis=1) < min_private_weight))
        if not len(bad):
            return w
        fresh = np.abs(rng.standard_normal((len(bad), k)))
        w[bad] = fresh / fresh.sum(axis=1, keepdims=True)
    raise ConfigError(message("max_weight", f"a cap loose enough for k={k} with min_private_weight="
                              f"{min_private_weight:g} (no weights found in {_MAX_REDRAWS} redraws; use a larger "
                              "max_weight)", shorten(max_weight)))


def instahide_encode(
    x,
    y,
    *,
    k: int,
    seed: int,
    public=None,
    sign_mask: bool = True,
    max_weight: float = 0.65,
    n_encodings: int | None = None,
    k_private: int | None = None,
    min_private_weight: float = 0.3,
    renormalize_labels: bool = False,
    input_range: tuple[float, float] = (0.0, 1.0),
    n_classes: int | None = None,
) -> InstaHideEncoding:
    """Encode private examples with InstaHide (Inside-dataset, or Cross-dataset when ``public`` is given).

    Args:
        x: ``(N, *S)`` private inputs with values in ``input_range``.
        y: ``(N,)`` int labels or ``(N, C)`` one-hot rows.
        k: images mixed per encoding (>= 1; k = 1 without mask is the identity).
        seed: seed of every draw (partners, weights, public members and mask
            come from independent child seeds, so the same seed with and
            without ``sign_mask`` gives the same mixes).
        public: optional ``(P, *S)`` public inputs (Cross-dataset InstaHide).
        sign_mask: multiply every pixel of every encoding by an independent random sign.
        max_weight: cap on each mixing weight, in ``(1/k, 1]`` (0.65 in the paper).
        n_encodings: E (default N); encoding e encodes private example ``e % N``,
            so ``E = T * N`` is T rounds (T epochs' worth) of encodings.
        k_private: private members per encoding with ``public`` (default
            ``(k + 1) // 2``); without ``public`` it must be k or None.
        min_private_weight: floor on the summed private weight (Cross-dataset only).
        renormalize_labels: divide the mixed label by the private weight sum.
        input_range: value range of ``x`` and ``public``, mapped to ``[-1, 1]``.
        n_classes: C when ``y`` holds int labels (default ``max(y) + 1``).

    Returns:
        An :class:`InstaHideEncoding`.

    Raises:
        DataError: shapes or values of ``x``, ``y``, ``public`` are wrong.
        ConfigError: k < 1, k larger than the private set (Inside-dataset)
            or than its private/public parts, ``max_weight`` outside ``(1/k, 1]``.
    """
    x_arr = as_array(x, "x")
    if x_arr.ndim < 2 or x_arr.shape[0] < 1:
        raise DataError(message("x", "an array of shape (N, *input_shape) with N >= 1", f"shape {x_arr.shape}"))
    n = x_arr.shape[0]
    xc = center_inputs(x_arr, input_range=input_range, name="x")
    labels_in = _label_rows(y, n, n_classes)
    k = check_int(k, "k")
    seed = check_seed(seed)
    pub = None
    if public is not None:
        pub_arr = as_array(public, "public")
        if pub_arr.ndim != x_arr.ndim or pub_arr.shape[1:] != x_arr.shape[1:] or pub_arr.shape[0] < 1:
            raise DataError(message("public", f"shape (P, {', '.join(map(str, x_arr.shape[1:]))}) like x with "
                                    "P >= 1", f"shape {pub_arr.shape}"))
        pub = center_inputs(pub_arr, input_range=input_range, name="public")
    if pub is None:
        if k_private is not None and k_private != k:
            raise ConfigError(message("k_private", f"k={k} or None without a public set (every member is private)",
                                      shorten(k_private)))
        kp = k
        if k > n:
            raise ConfigError(message("k", f"at most the {n} private examples for Inside-dataset InstaHide", str(k)))
    else:
        kp = (k + 1) // 2 if k_private is None else check_int(k_private, "k_private", low=1, high=k)
        if kp > n:
            raise ConfigError(message("k_private", f"at most the {n} private examples", str(kp)))
        if k - kp > pub.shape[0]:
            raise ConfigError(message("public", f"at least k - k_private = {k - kp} examples (the public members "
                                      "of every encoding)", f"{pub.shape[0]} examples"))
    max_weight = check_number(max_weight, "max_weight")
    if k > 1:
        if not 1.0 / k < max_weight <= 1.0:
            raise ConfigError(message("max_weight", f"a number in (1/k, 1] = ({1.0 / k:.4g}, 1] for k={k}",
                                      shorten(max_weight)))
    min_private_weight = check_fraction(min_private_weight, "min_private_weight")
    e = n if n_encodings is None else check_int(n_encodings, "n_encodings")

    # Members: column 0 = self; private partners from a fresh permutation per round of N encodings.
    rounds = -(-e // n)
    rng_partners = np.random.default_rng(derive_seed(seed, "instahide", "partners"))
    sources = np.empty((e, k), np.int64)
    sources[:, 0] = np.arange(e) % n
    for j in range(1, kp):
        sources[:, j] = np.concatenate([rng_partners.permutation(n) for _ in range(rounds)])[:e]
    is_public = np.zeros((e, k), bool)
    if k > kp:
        rng_public = np.random.default_rng(derive_seed(seed, "instahide", "public"))
        sources[:, kp:] = rng_public.integers(0, pub.shape[0], size=(e, k - kp))
        is_public[:, kp:] = True
    weights = draw_weights(e, k, max_weight=max_weight, seed=derive_seed(seed, "instahide", "weights"),
                           k_private=kp, min_private_weight=min_private_weight if pub is not None else 0.0)

    flat = xc.reshape(n, -1).astype(np.float64)
    mixed = weights[:, :1] * flat[sources[:, 0]]
    for j in range(1, k):
        part = pub.reshape(pub.shape[0], -1)[sources[:, j]] if j >= kp else flat[sources[:, j]]
        mixed += weights[:, j : j + 1] * part
    if sign_mask:
        rng_signs = np.random.default_rng(derive_seed(seed, "instahide", "signs"))
        signs = (rng_signs.integers(0, 2, size=mixed.shape, dtype=np.int8) * 2 - 1).astype(np.int8)
    else:
        signs = np.ones(mixed.shape, np.int8)
    encodings = (mixed * signs).astype(np.float32).reshape((e,) + x_arr.shape[1:])

    labels = np.zeros((e, labels_in.shape[1]), np.float64)
    for j in range(kp):
        labels += weights[:, j : j + 1] * labels_in[sources[:, j]]
    if renormalize_labels:
        labels /= weights[:, :kp].sum(axis=1, keepdims=True)
    return InstaHideEncoding(
        encodings=encodings,
        labels=labels.astype(np.float32),
        sources=sources,
        is_public=is_public,
        weights=weights,
        signs=signs.reshape((e,) + x_arr.shape[1:]),
        k=k,
        k_private=kp,
        sign_mask=bool(sign_mask),
        max_weight=float(max_weight),
        seed=int(seed),
    )


def train_instahide(
    spec: str,
    x,
    y,
    *,
    k: int,
    seed: int,
    x_test,
    y_test,
    epochs: int = 30,
    sign_mask: bool = True,
    public=None,
    max_weight: float = 0.65,
    k_private: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    input_range: tuple[float, float] = (0.0, 1.0),
    n_classes: int | None = None,
    device: str | None = None,
    on_epoch: Callable[[int, InstaHideEncoding], None] | None = None,
    keep_model: bool = False,
):
    """Train one model on InstaHide encodings drawn afresh every epoch; test on clean centred inputs.

    ``k=1, sign_mask=False`` trains on the plain (centred) data with the same
    loop, the baseline to compare with.

    Args:
        spec: model spec (``"mlp:256x2"``, ``"cnn:32-64"``, ...).
        x: ``(N, *S)`` private training inputs in ``input_range``.
        y: ``(N,)`` int labels.
        k, sign_mask, public, max_weight, k_private, input_range: as in :func:`instahide_encode`.
        seed: seed of the model and of every epoch's encoding (``derive_seed(seed, "epoch", e)``).
        x_test: ``(m, *S)`` test inputs in ``input_range`` (centred, never mixed or masked).
        y_test: ``(m,)`` int test labels.
        epochs: epochs (one fresh encoding of the whole private set each).
        batch_size, lr, weight_decay, device: optimisation (Adam); device None: the placement's
            (see :func:`fitscope.train.train_ensemble`).
        n_classes: C (default ``max(y, y_test) + 1``).
        on_epoch: called with ``(epoch, encoding)`` after each epoch's encoding is drawn.
        keep_model: return the trained (one-model ensemble) module in ``result.model``.

    Returns:
        A :class:`fitscope.train.instahide_training.SoftLabelResult`.
    """
    from fitscope.train.instahide_training import train_soft_labels

    y_arr = np.asarray(y)
    y_test_arr = np.asarray(y_test)
    if n_classes is None and y_arr.ndim == 1 and np.issubdtype(y_arr.dtype, np.integer) and y_arr.size:
        n_classes = int(max(y_arr.max(), y_test_arr.max() if y_test_arr.size else 0)) + 1
    x_test_c = center_inputs(x_test, input_range=input_range, name="x_test")
    # Validate once up front so that a bad k or weight cap fails before any training.
    instahide_encode(x, y, k=k, seed=seed, public=public, sign_mask=sign_mask, max_weight=max_weight,
                     k_private=k_private, input_range=input_range, n_classes=n_classes, n_encodings=1)

    def epoch_data(epoch: int) -> tuple[np.ndarray, np.ndarray]:
        enc = instahide_encode(x, y, k=k, seed=derive_seed(seed, "epoch", epoch), public=public,
                               sign_mask=sign_mask, max_weight=max_weight, k_private=k_private,
                               input_range=input_range, n_classes=n_classes)
        if on_epoch is not None:
            on_epoch(epoch, enc)
        return enc.encodings, enc.labels

    return train_soft_labels(spec, epoch_data, x_test=x_test_c, y_test=y_test_arr, epochs=epochs, seed=seed,
                             batch_size=batch_size, lr=lr, weight_decay=weight_decay, device=device,
                             keep_model=keep_model)


def predict_instahide(model, x: np.ndarray, *, input_range: tuple[float, float] = (0.0, 1.0),
                      batch_size: int = 1024, device: str | None = None) -> np.ndarray:
    """Logits ``(n, C)`` of a model trained on InstaHide encodings, on raw inputs in ``input_range``.

    InstaHide trains on inputs centred to [-1, 1]; the same centring is applied
    here (:func:`center_inputs`, as :func:`train_instahide` does for its test
    set). ``model`` is the one-model ensemble :func:`train_instahide` keeps
    (``keep_model=True``); it is put in eval mode and moved to ``device`` (in
    place). ``x``: ``(n, *S)``, copied there once; the logits come back once.
    ``device``: torch device; None: the placement's, see :mod:`fitscope.train.device`.
    """
    import torch

    from fitscope.train.device import placement_device

    dev = placement_device(device)
    rows = torch.as_tensor(center_inputs(x, input_range=input_range), dtype=torch.float32).to(dev)
    model.to(dev).eval()
    with torch.no_grad():
        out = [model(rows[i:i + batch_size].unsqueeze(0))[0] for i in range(0, len(rows), batch_size)]
    return torch.cat(out).cpu().numpy()
