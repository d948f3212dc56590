"""Reconstruction attack on InstaHide, after Carlini et al. (2020), and how to score it.

Notation: E encodings of d = prod(S) pixels (flattened), N private sources,
k private members per encoding (Inside-dataset InstaHide: all k members are
private), values in ``[-1, 1]`` (see :mod:`fitscope.privacy.instahide`).

The attacker sees only the encodings, k and N (as in the InstaHide challenge,
where the number of private images is public), and, with the sign mask, a
*prior* set of public images from the same distribution (Carlini et al. also
assume one: they train their similarity network on it). The model is

    |enc_e| = |sum_{j in members(e)} w_ej x_j|      (sign mask: absolute values remove it)
     enc_e  =  sum_{j in members(e)} w_ej x_j       (no mask: the signed encodings are used)

and the attack alternates, for ``rounds`` rounds,

1. memberships: which k sources each encoding mixes (the "clustering" step:
   source j's cluster is the set of encodings that contain it);
2. solve: given memberships, fit the sources ``X = tanh(Z)`` and per-encoding
   weights ``w_e = softmax(l_e)`` by Adam on the mean squared error of the
   model above (``steps`` steps). Without the mask the model is linear in X
   for fixed weights, so the last round ends with alternating exact least
   squares (sources, then weights), kept when it fits better.

What differs from Carlini et al. (documented simplification):

- No learned similarity network. Without the mask, the first memberships come
  from k-means (N clusters) on the centred, unit-norm encodings: each
  encoding joins the k clusters whose centres it is most similar to (cosine);
  later rounds re-pick members by orthogonal matching
  pursuit (greedy least squares, weights pushed to sum 1) against the current
  sources. With the mask, pairwise similarity of ``|enc|`` says little on
  8x8 digits, so the first sources are N prior images and members are picked
  in "pair-product" space: ``(k^2 |enc|^2 - k) / 2`` approximates
  ``sum_{i<j} x_i * x_j`` per pixel under equal weights (exact for +-1
  pixels), and members are chosen greedily to match it (best pair, then one
  source at a time).
- Solve with the mask: a spectral initialisation as in phase retrieval (per
  pixel, the leading eigenvector of the matrix of estimated pair products
  ``x_ip x_jp`` over the encodings that mix i and j), then gradient descent.
  ``|.|`` cannot tell x from -x per pixel *for all sources at once*, so a
  per-pixel sign is finally chosen to make the mean recovered image agree
  with the prior's mean image (pixels where the prior mean is ~0 stay a
  coin flip). Carlini et al. learn the similarity that drives their
  clustering (a network trained on encodings of public images) and use a
  more elaborate assignment of encodings to clusters; here every step is
  plain least squares or greedy search.
- Carlini et al. attack Cross-dataset encodings (public members act as
  noise); this model has no public term, so the numbers we publish are for
  Inside-dataset encodings.

Scoring (:func:`recovery_scores`): for every original, the best SSIM over
the recovered images (the attacker does not know which recovered image is
which). "Recovered" means best SSIM >= ``threshold`` (default 0.5, a weak
bar; Carlini et al. report SSIM without a fixed bar). Because any digit
resembles some other digit, the score also gives the best SSIM of each
original to the *prior* images (a guess that ignores the encodings) and the
fraction of originals where the attack beats that guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fitscope.errors import ConfigError, DataError
from fitscope.privacy.instahide import center_inputs, instahide_encode
from fitscope.privacy.ssim import ssim_matrix
from fitscope.seeding import derive_seed
from fitscope.validation import as_array, check_bool, check_int, check_number, check_real, check_seed, message

# Rows of encodings scored at once in the pair-product member search (bounds an (rows, N^2/2) float32 block).
_PAIR_BLOCK_ENTRIES = 8_000_000


@dataclass(frozen=True)
class InstaHideAttackResult:
    """What the attack recovered.

    Attributes:
        recovered: ``(N, *S)`` float32 sources in ``[-1, 1]`` (in no particular order).
        members: ``(E, k)`` int64 estimated member sources of each encoding (rows of ``recovered``).
        weights: ``(E, k)`` float64 estimated mixing weights (rows sum to 1).
        loss: final mean squared error of the fitted model.
        sign_mask: whether the attack treated the encodings as sign-masked.
        rounds: membership/solve rounds run.
        seed: the seed of the k-means initialisation.
    """

    recovered: np.ndarray
    members: np.ndarray
    weights: np.ndarray
    loss: float
    sign_mask: bool
    rounds: int
    seed: int


@dataclass(frozen=True)
class RecoveryScore:
    """How well recovered images match the originals (SSIM, Wang et al. 2004).

    Attributes:
        best_ssim: ``(N,)`` for each original, the best SSIM over the recovered images.
        match: ``(N,)`` index of that best recovered image.
        threshold: the SSIM bar for "recovered".
        recovery_rate: fraction of originals with ``best_ssim >= threshold``.
        mean_ssim: mean of ``best_ssim``.
        baseline_ssim: ``(N,)`` best SSIM of each original to the baseline
            (prior) images, or None without a baseline.
        beats_baseline_rate: fraction of originals with ``best_ssim >
            baseline_ssim`` (NaN without a baseline).
    """

    best_ssim: np.ndarray
    match: np.ndarray
    threshold: float
    recovery_rate: float
    mean_ssim: float
    baseline_ssim: np.ndarray | None
    beats_baseline_rate: float


# --------------------------------------------------------------------------- validation


def _as_flat(name: str, a) -> np.ndarray:
    a = as_array(a, name)
    if a.ndim < 2 or a.shape[0] < 1:
        raise DataError(message(name, "an array of shape (n, *input_shape) with n >= 1", f"shape {a.shape}"))
    return check_real(a.reshape(a.shape[0], -1), name, axes=("n", "D")).astype(np.float64)


# --------------------------------------------------------------------------- membership steps


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)


def _kmeans_members(features: np.ndarray, n_sources: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the centred unit-norm features into N groups; members = the k most similar centres."""
    from sklearn.cluster import KMeans

    g = _unit_rows(features - features.mean(axis=0))
    km = KMeans(n_clusters=n_sources, n_init=1, random_state=seed % (2**31)).fit(g)
    members = np.argsort(-(g @ _unit_rows(km.cluster_centers_).T), axis=1)[:, :k]
    return members, km.labels_


def _omp_members(f: np.ndarray, x: np.ndarray, k: int, pull: float = 3.0) -> np.ndarray:
    """Greedy least-squares choice of k sources per signed encoding (orthogonal matching pursuit).

    A constant coordinate ``pull`` appended to encodings and sources pushes the
    least-squares weights to sum to 1, as mixing weights do.
    """
    e, n = f.shape[0], x.shape[0]
    fa = np.hstack([f, np.full((e, 1), pull)])
    xa = np.hstack([x, np.full((n, 1), pull)])
    xn = _unit_rows(xa)
    members = np.zeros((e, k), np.int64)
    resid = fa.copy()
    rows = np.arange(e)[:, None]
    for s in range(k):
        score = np.abs(resid @ xn.T)
        if s:
            score[rows, members[:, :s]] = -np.inf
        members[:, s] = score.argmax(axis=1)
        atoms = xa[members[:, : s + 1]]  # (E, s+1, d+1)
        gram = np.einsum("eid,ejd->eij", atoms, atoms) + 1e-9 * np.eye(s + 1)
        coef = np.linalg.solve(gram, np.einsum("eid,ed->ei", atoms, fa)[..., None])[..., 0]
        resid = fa - np.einsum("ei,eid->ed", coef, atoms)
    return members


def _pair_products_target(a: np.ndarray, k: int) -> np.ndarray:
    """``(k^2 |enc|^2 - k) / 2``: sum over member pairs of x_i * x_j per pixel, under equal weights and x^2 = 1."""
    return (k * k * a**2 - k) / 2.0


def _pair_members(a: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Greedy choice of k sources per |encoding| in pair-product space (best pair, then one source at a time)."""
    e, n = a.shape[0], x.shape[0]
    target = _pair_products_target(a, k).astype(np.float32)
    i_idx, j_idx = np.triu_indices(n, 1)
    pairs = (x[i_idx] * x[j_idx]).astype(np.float32)  # (N(N-1)/2, d)
    pairs_unit = _unit_rows(pairs)
    members = np.zeros((e, k), np.int64)
    block = max(1, _PAIR_BLOCK_ENTRIES // max(1, len(pairs)))
    for start in range(0, e, block):
        best = (target[start : start + block] @ pairs_unit.T).argmax(axis=1)
        members[start : start + block, 0] = i_idx[best]
        members[start : start + block, 1] = j_idx[best]
    current = x[members[:, 0]] * x[members[:, 1]]
    total = x[members[:, 0]] + x[members[:, 1]]
    rows = np.arange(e)
    for s in range(2, k):
        # Adding source j adds x_j * (sum of the chosen sources) to the pair-product sum.
        err = np.empty((e, n))
        for start in range(0, e, 256):
            sl = slice(start, start + 256)
            cand = total[sl, None, :] * x[None, :, :]
            err[sl] = ((target[sl, None, :] - current[sl, None, :] - cand) ** 2).sum(axis=-1)
        err[rows[:, None], members[:, :s]] = np.inf
        j = err.argmin(axis=1)
        members[:, s] = j
        current = current + total * x[j]
        total = total + x[j]
    return members


def _spectral_sources(a: np.ndarray, members: np.ndarray, n_sources: int) -> np.ndarray:
    """Per pixel, the leading eigenvector of the estimated pair-product matrix (phase-retrieval style start)."""
    e, d = a.shape
    k = members.shape[1]
    est = np.clip(_pair_products_target(a, k) / (k * (k - 1) / 2), -1.0, 1.0)  # each pair's share, (E, d)
    prod = np.zeros((n_sources, n_sources, d))
    count = np.zeros((n_sources, n_sources))
    for i in range(k):
        for j in range(i + 1, k):
            np.add.at(prod, (members[:, i], members[:, j]), est)
            np.add.at(count, (members[:, i], members[:, j]), 1.0)
    prod = prod + prod.transpose(1, 0, 2)
    count = count + count.T
    prod = np.where(count[:, :, None] > 0, prod / np.maximum(count, 1.0)[:, :, None], 0.0)
    x = np.zeros((n_sources, d))
    for p in range(d):
        vals, vecs = np.linalg.eigh(prod[:, :, p] + np.eye(n_sources))  # diagonal: x_i^2 ~ 1
        x[:, p] = vecs[:, -1] * np.sqrt(max(vals[-1], 0.0))
    x /= np.maximum(np.abs(x).max(axis=0, keepdims=True), 1e-9)
    return np.clip(x, -0.95, 0.95)


# --------------------------------------------------------------------------- solve step


def _solve(f: np.ndarray, members: np.ndarray, x0: np.ndarray, *, absolute: bool, steps: int, lr: float
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit sources tanh(Z) and weights softmax(L) to the encodings by Adam, given memberships."""
    threads = torch.get_num_threads()
    # The tensors are small ((E, k, d) with E ~ 1e3): one thread avoids the per-op cost of waking others.
    torch.set_num_threads(1)
    try:
        return _adam_fit(f, members, x0, absolute=absolute, steps=steps, lr=lr)
    finally:
        torch.set_num_threads(threads)


def _adam_fit(f: np.ndarray, members: np.ndarray, x0: np.ndarray, *, absolute: bool, steps: int, lr: float
              ) -> tuple[np.ndarray, np.ndarray, float]:
    target = torch.from_numpy(f.astype(np.float32))
    z = torch.atanh(torch.from_numpy(x0.astype(np.float32)).clamp(-0.95, 0.95)).requires_grad_(True)
    logits = torch.zeros(members.shape, dtype=torch.float32, requires_grad=True)
    idx = torch.from_numpy(members)
    opt = torch.optim.Adam([z, logits], lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        pred = (torch.softmax(logits, dim=1)[:, :, None] * torch.tanh(z)[idx]).sum(dim=1)
        if absolute:
            pred = pred.abs()
        loss = ((pred - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x = torch.tanh(z).double().numpy()
        w = torch.softmax(logits, dim=1).double().numpy()
        pred = (w[:, :, None] * x[members]).sum(axis=1)
        final = float(((np.abs(pred) if absolute else pred) - f).__pow__(2).mean())
    return x, w, final


def _refine_linear(f: np.ndarray, members: np.ndarray, w: np.ndarray, iters: int = 100, pull: float = 10.0
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Without the mask the model is linear: alternate exact least squares for the sources given the
    weights and for each encoding's weights given the sources (sum to 1 via a heavy constant row)."""
    e, k = members.shape
    n = int(members.max()) + 1
    rows = np.repeat(np.arange(e), k)
    x = None
    for _ in range(iters):
        mix = np.zeros((e, n))
        np.add.at(mix, (rows, members.ravel()), w.ravel())
        x = np.clip(np.linalg.lstsq(mix, f, rcond=None)[0], -1.0, 1.0)
        atoms = np.concatenate([x[members], np.full((e, k, 1), pull)], axis=2)  # (E, k, d+1)
        target = np.hstack([f, np.full((e, 1), pull)])
        gram = np.einsum("eid,ejd->eij", atoms, atoms) + 1e-9 * np.eye(k)
        w = np.linalg.solve(gram, np.einsum("eid,ed->ei", atoms, target)[..., None])[..., 0]
        w = np.clip(w, 0.0, None)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    pred = (w[:, :, None] * x[members]).sum(axis=1)
    return x, w, float(((pred - f) ** 2).mean())


# --------------------------------------------------------------------------- public API


def instahide_attack(
    encodings,
    *,
    n_sources: int,
    k: int,
    sign_mask: bool,
    seed: int,
    prior=None,
    rounds: int = 6,
    steps: int = 400,
    lr: float = 0.05,
) -> InstaHideAttackResult:
    """Recover the private sources of Inside-dataset InstaHide encodings (Carlini et al. 2020, simplified).

    Args:
        encodings: ``(E, *S)`` encodings in the ``[-1, 1]`` scale
            (:attr:`InstaHideEncoding.encodings`).
        n_sources: N, the number of private images mixed into them (>= k).
        k: private members per encoding (>= 2).
        sign_mask: treat the encodings as sign-masked (use ``|enc|``); False uses them signed.
        seed: seed of the k-means start (the rest is deterministic).
        prior: ``(P, *S)`` public images in ``[-1, 1]`` from the same
            distribution, P >= N; needed with ``sign_mask`` (first sources
            and the per-pixel sign), ignored without.
        rounds: membership/solve rounds (>= 1).
        steps: Adam steps per solve (>= 1).
        lr: Adam learning rate (> 0).

    Returns:
        An :class:`InstaHideAttackResult`.

    Raises:
        DataError: encodings/prior of the wrong shape or with NaN.
        ConfigError: k < 2, n_sources < k, missing or too small prior with ``sign_mask``.
    """
    f = _as_flat("encodings", encodings)
    shape = np.asarray(encodings).shape[1:]
    k = check_int(k, "k", low=2)
    n_sources = check_int(n_sources, "n_sources", low=k)
    rounds = check_int(rounds, "rounds")
    steps = check_int(steps, "steps")
    lr = check_number(lr, "lr", low=0.0, high=math.inf, open_low=True, open_high=True)
    sign_mask = check_bool(sign_mask, "sign_mask")
    seed = check_seed(seed)
    if n_sources > f.shape[0] * k:
        raise ConfigError(message("n_sources", f"at most the {f.shape[0] * k} member slots of {f.shape[0]} "
                                  f"encodings with k={k}", str(n_sources)))
    if sign_mask:
        if prior is None:
            raise ConfigError(message("prior", "public images of the same kind with sign_mask=True (shape "
                                      "(P, *input_shape), P >= n_sources)", "None"))
        pr = _as_flat("prior", prior)
        if pr.shape[1] != f.shape[1]:
            raise DataError(message("prior", f"images of {f.shape[1]} values like the encodings", str(pr.shape[1])))
        if pr.shape[0] < n_sources:
            raise ConfigError(message("prior", f"at least n_sources={n_sources} images", str(pr.shape[0])))
        a = np.abs(f)
        start = np.random.default_rng(derive_seed(seed, "instahide-attack", "prior")).choice(
            pr.shape[0], n_sources, replace=False)
        members = _pair_members(a, pr[start], k)
        x = w = None
        loss = float("nan")
        for r in range(rounds):
            x0 = _spectral_sources(a, members, n_sources)
            x, w, loss = _solve(a, members, x0, absolute=True, steps=steps, lr=lr)
            if r + 1 < rounds:
                members = _pair_members(a, x, k)
        # |.| leaves one sign per pixel shared by all sources: match the prior's mean image.
        sign = np.sign(x.mean(axis=0) * pr.mean(axis=0))
        sign[sign == 0] = 1.0
        x = x * sign
    else:
        members, labels = _kmeans_members(f, n_sources, k, seed)
        mean = f.mean(axis=0)
        # Cluster means of the signed encodings, pulled away from the overall mean (the dominant member
        # of a cluster carries a weight of about 0.6 of the mean mix).
        x0 = np.stack([f[labels == c].mean(axis=0) if (labels == c).any() else mean for c in range(n_sources)])
        x0 = np.clip(mean + (x0 - mean) / 0.6, -0.95, 0.95)
        x, w, loss = _solve(f, members, x0, absolute=False, steps=steps, lr=lr)
        for _ in range(rounds - 1):
            members = _omp_members(f, x, k)
            x, w, loss = _solve(f, members, x, absolute=False, steps=steps, lr=lr)
        x_lin, w_lin, loss_lin = _refine_linear(f, members, w)
        if loss_lin < loss:
            x, w, loss = x_lin, w_lin, loss_lin
    return InstaHideAttackResult(
        recovered=x.astype(np.float32).reshape((n_sources,) + tuple(shape)),
        members=members,
        weights=w,
        loss=loss,
        sign_mask=bool(sign_mask),
        rounds=rounds,
        seed=int(seed),
    )


def _as_images(name: str, a) -> np.ndarray:
    """``(n, H, W)``, ``(n, 1, H, W)`` or ``(n, C, H, W)`` -> ``(n, C, H, W)`` float64."""
    a = as_array(a, name).astype(np.float64)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] < 1:
        raise DataError(message(name, "images of shape (n, H, W) or (n, C, H, W)", f"shape {a.shape}"))
    return a


def _best_ssim(originals: np.ndarray, candidates: np.ndarray, data_range: float) -> np.ndarray:
    """``(n_orig, n_cand)`` SSIM, averaged over channels."""
    return np.mean([ssim_matrix(originals[:, c], candidates[:, c], data_range=data_range)
                    for c in range(originals.shape[1])], axis=0)


def recovery_scores(originals, recovered, *, threshold: float = 0.5, baseline=None,
                    data_range: float = 2.0) -> RecoveryScore:
    """Score recovered images against the originals by SSIM.

    Args:
        originals: ``(N, H, W)`` or ``(N, C, H, W)`` private images, same scale as ``recovered``.
        recovered: ``(M, ...)`` images of the same size.
        threshold: SSIM bar for "recovered", in ``(-1, 1]``.
        baseline: optional ``(B, ...)`` images (e.g. the attacker's prior) whose
            best SSIM to each original is the "guess without the encodings".
        data_range: pixel value span (2 for ``[-1, 1]``).

    Returns:
        A :class:`RecoveryScore`.
    """
    orig = _as_images("originals", originals)
    rec = _as_images("recovered", recovered)
    if rec.shape[1:] != orig.shape[1:]:
        raise DataError(message("recovered", f"images of shape {orig.shape[1:]} like originals", str(rec.shape[1:])))
    threshold = check_number(threshold, "threshold", low=-1.0, high=1.0, open_low=True)
    s = _best_ssim(orig, rec, data_range)
    best, match = s.max(axis=1), s.argmax(axis=1)
    base, beats = None, float("nan")
    if baseline is not None:
        b = _as_images("baseline", baseline)
        if b.shape[1:] != orig.shape[1:]:
            raise DataError(message("baseline", f"images of shape {orig.shape[1:]} like originals", str(b.shape[1:])))
        base = _best_ssim(orig, b, data_range).max(axis=1)
        beats = float((best > base).mean())
    return RecoveryScore(best_ssim=best, match=match, threshold=float(threshold),
                         recovery_rate=float((best >= threshold).mean()), mean_ssim=float(best.mean()),
                         baseline_ssim=base, beats_baseline_rate=beats)


def instahide_study(
    x,
    y,
    *,
    public,
    seed: int,
    ks=(2, 4, 6),
    masks=(False, True),
    n_private: int = 100,
    encodings_per_image: int = 10,
    max_weight: float = 0.65,
    thresholds=(0.5, 0.9),
    rounds: int = 6,
    steps: int = 400,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> pd.DataFrame:
    """Encode a private set with Inside-dataset InstaHide and attack it, for every (k, sign mask).

    The first ``n_private`` rows of ``x`` are the private set; each is encoded
    ``encodings_per_image`` times (that many epochs of encodings seen by an
    eavesdropper). ``public`` (disjoint from the private set) is the
    attacker's prior with the mask and the "guess" baseline of the score.

    Args:
        x: ``(n, *S)`` images in ``input_range``; ``y``: ``(n,)`` int labels.
        public: ``(P, *S)`` public images in ``input_range``, P >= n_private.
        seed: seed of encodings and attack.
        ks: values of k; masks: sign-mask settings.
        n_private: private set size; encodings_per_image: encodings per private image.
        max_weight: InstaHide weight cap; thresholds: SSIM bars for "recovered".
        rounds, steps: attack effort (see :func:`instahide_attack`).
        input_range: value range of ``x`` and ``public``.

    Returns:
        One row per (k, sign_mask): ``k, sign_mask, n_private, n_encodings``,
        ``recovery_rate@T`` for each threshold T, ``mean_ssim``,
        ``baseline_mean_ssim`` (best SSIM of each original to any public
        image, averaged), ``beats_baseline_rate``, ``member_accuracy``
        (fraction of true member slots found, after mapping each recovered
        source to its best-SSIM original), ``loss``.
    """
    x = np.asarray(x)
    n_private = check_int(n_private, "n_private", low=2, high=x.shape[0])
    t = check_int(encodings_per_image, "encodings_per_image")
    seed = check_seed(seed)
    xp, yp = x[:n_private], np.asarray(y)[:n_private]
    private_c = center_inputs(xp, input_range=input_range)
    public_c = center_inputs(public, input_range=input_range, name="public")
    rows = []
    for k in ks:
        for mask in masks:
            enc = instahide_encode(xp, yp, k=k, seed=derive_seed(seed, "study", k), sign_mask=bool(mask),
                                   max_weight=max_weight, n_encodings=t * n_private, input_range=input_range)
            res = instahide_attack(enc.encodings, n_sources=n_private, k=k, sign_mask=bool(mask),
                                   seed=derive_seed(seed, "attack", k, int(mask)),
                                   prior=public_c if mask else None, rounds=rounds, steps=steps)
            score = recovery_scores(private_c, res.recovered, threshold=thresholds[0], baseline=public_c)
            # Map each recovered source to the original it resembles most, then count true member slots found.
            orig_of = _best_ssim(_as_images("recovered", res.recovered), _as_images("originals", private_c),
                                 2.0).argmax(axis=1)
            found = np.mean([len(set(orig_of[m]) & set(s)) / k for m, s in zip(res.members, enc.sources)])
            rates = {f"recovery_rate@{t:g}": float((score.best_ssim >= t).mean()) for t in thresholds}
            rows.append(dict(k=int(k), sign_mask=bool(mask), n_private=n_private, n_encodings=enc.n_encodings,
                             **rates, mean_ssim=score.mean_ssim,
                             baseline_mean_ssim=float(score.baseline_ssim.mean()),
                             beats_baseline_rate=score.beats_baseline_rate,
                             member_accuracy=float(found), loss=res.loss))
    return pd.DataFrame(rows)
