"""Backdoor trigger inversion on any ``torch.nn.Module``: Neural Cleanse (with its anomaly index) and SmoothInv.

Notation as in :mod:`fitscope.robustness.backdoor`: inputs ``(n, *input_shape)``, ``input_shape`` =
``(C_in, H, W)`` or ``(C_in, L)``, a trigger is a mask over the positions (``(H, W)`` / ``(L,)``, shared
by the channels) and an input-shaped pattern; inputs live in ``bounds = (low, high)``.

**Neural Cleanse** (Wang et al. 2019, "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in
Neural Networks"). For every class ``c``, find the smallest trigger that sends a support set of clean
inputs to ``c``: minimise ``CE(f((1 - m) x + m p), c) + lambda_c ||m||_1`` over ``m = (tanh(a) + 1) / 2``
and ``p = low + (high - low) (tanh(b) + 1) / 2`` with Adam (lr 0.1, betas (0.5, 0.9), as the authors'
code). ``lambda_c`` starts at ``init_cost`` and is scheduled as in the paper: after ``patience``
consecutive steps with the attack success on the support set at least ``threshold`` it is multiplied by
1.5, after ``patience`` steps below it divided by 1.5^1.5; the mask kept is the smallest-L1 one seen with
success >= ``threshold`` (the last one if none reached it). The optimisation runs until it has converged,
with the authors' early stop: a class stops once lambda has been both raised and lowered and its best
norm has not improved by more than 1% (``early_stop_threshold`` 0.99) for ``early_stop_patience`` steps
(default ``20 patience``: the authors count ``5 patience`` in epochs of about 30 mini-batches, and a
step here is one full batch), or after ``steps`` (1000, their ``STEPS``).
Simplifications, said here: every step is one full batch of the support set (the paper iterates over
mini-batches of a clean set and counts patience in epochs), and all classes are optimised at once in one
batched forward pass (their parameters and losses are separate, Adam is per-parameter, and a class's kept
trigger and lambda freeze once it stops, so this equals one run per class). A backdoored class needs a
much smaller mask than the others: its L1 norm is an outlier on the small side. The **anomaly index** of a class is
``|norm - median| / (1.4826 median(|norm - median|))`` (the median absolute deviation with the normal
consistency constant); a class is flagged when its index exceeds 2 and its norm is below the median.

**SmoothInv** (Sun & Kolter 2023, "Single Image Backdoor Inversion via Robust Smoothed Classifiers",
seed 004). From one clean input ``x``, optimise an additive perturbation ``delta`` towards the target
class through the randomized-smoothing version of the classifier, ``g(x) = E_eps softmax(f(x + eps))``,
``eps ~ N(0, sigma^2 I)`` (a Monte Carlo mean over ``noise_samples`` draws per step): minimise
``-log g(x + delta)[target]`` under a large L2 budget ``||delta||_2 <= eps`` with ``x + delta`` kept in
``bounds``. As the authors' code: SGD with momentum 0.9 on the L2-normalised gradient, a step of
``step_size`` halved every 300 steps, projection (clip to the bounds, then onto the L2 ball) after each
step, 400 steps. A robust (smoothed) classifier's gradients point at features of the class it was taught,
and for a backdoored class those include the trigger, so the perturbation that emerges is the backdoor
pattern rather than imperceptible adversarial noise. Simplification, said here: the paper smooths the
classifier behind a diffusion denoiser (denoised smoothing, Carlini et al. 2022) so that ImageNet
classifiers stay accurate under the noise; we smooth the classifier itself with Gaussian noise (the
authors' ``--no_diffusion`` setting), which small models on 8x8 digits tolerate at the noise levels used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fitscope.errors import ConfigError
from fitscope.robustness.backdoor import check_bounds
from fitscope.seeding import derive_seed
from fitscope.train.modes import eval_mode
from fitscope.validation import check_fraction, check_int, check_number, check_seed, message

__all__ = ["ANOMALY_THRESHOLD", "AnomalyResult", "MAD_CONSISTENCY", "NeuralCleanseResult", "SmoothInvResult",
           "anomaly_index", "neural_cleanse", "smoothed_probs", "smoothinv"]

#: the median absolute deviation's consistency constant for normal data (1 / Phi^-1(3/4))
MAD_CONSISTENCY = 1.4826
#: a class is flagged when its anomaly index exceeds this (on the small side)
ANOMALY_THRESHOLD = 2.0
#: Neural Cleanse's cost schedule: up by this factor, down by its 1.5th power (Wang et al.'s code)
COST_UP = 1.5
COST_DOWN = 1.5 ** 1.5


@dataclass
class AnomalyResult:
    """The anomaly index of each class from its trigger's L1 norm (:func:`anomaly_index`).

    Attributes:
        index: ``(C,)`` ``|norm - median| / (1.4826 MAD)``.
        flagged: ``(C,)`` bool: index > threshold and norm below the median.
        median: the median norm; mad: the scaled median absolute deviation.
    """

    index: np.ndarray
    flagged: np.ndarray
    median: float
    mad: float


def anomaly_index(norms, *, threshold: float = ANOMALY_THRESHOLD) -> AnomalyResult:
    """Neural Cleanse's outlier test on the L1 norms of the reversed triggers, one per class.

    Args:
        norms: ``(C,)`` L1 norms of each class's mask, C >= 3.
        threshold: a class is flagged when its index exceeds this and its norm is below the median.

    Returns:
        An :class:`AnomalyResult`. With a MAD of 0 (half the norms equal) a norm off the median has an
        infinite index.
    """
    norms = np.asarray(norms, float)
    if norms.ndim != 1 or len(norms) < 3 or not np.isfinite(norms).all():
        raise ConfigError(message("norms", "a 1-D array of at least 3 finite norms", f"shape {norms.shape}"))
    threshold = check_number(threshold, "threshold", low=0.0)
    median = float(np.median(norms))
    mad = MAD_CONSISTENCY * float(np.median(np.abs(norms - median)))
    dev = np.abs(norms - median)
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.where(dev == 0, 0.0, dev / mad if mad > 0 else np.inf)
    return AnomalyResult(index=index, flagged=(index > threshold) & (norms < median), median=median, mad=mad)


@dataclass
class NeuralCleanseResult:
    """Reversed triggers, one per class (:func:`neural_cleanse`).

    Attributes:
        masks: ``(K, *positions)`` float32 in [0, 1], the kept mask of each class.
        patterns: ``(K, *input_shape)`` float32 in ``bounds``.
        norms: ``(K,)`` L1 norms of the masks.
        success: ``(K,)`` attack success of the kept trigger on the support set (rows not of the class).
        reached: ``(K,)`` bool: the kept trigger reached ``threshold``.
        costs: ``(K,)`` the final lambda of each class.
        classes: ``(K,)`` the classes inverted.
        steps_run: ``(K,)`` the steps each class ran before its early stop (``steps`` where it never stopped).
        converged: ``(K,)`` bool: the class stopped early (its norm settled) rather than at ``steps``.
        anomaly: the anomaly index over the classes (when all C classes were inverted).
    """

    masks: np.ndarray
    patterns: np.ndarray
    norms: np.ndarray
    success: np.ndarray
    reached: np.ndarray
    costs: np.ndarray
    classes: np.ndarray
    anomaly: AnomalyResult | None = None
    steps_run: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    converged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def _check_support(model: nn.Module, x, name: str) -> torch.Tensor:
    if not isinstance(model, nn.Module):
        raise ConfigError(message("model", "a torch.nn.Module mapping inputs to logits", type(model).__name__))
    x = np.asarray(x, np.float32)
    if x.ndim not in (3, 4) or len(x) == 0:
        raise ConfigError(message(name, "(n, channels, length) or (n, channels, height, width) inputs, n >= 1",
                                  f"shape {x.shape}"))
    if not np.isfinite(x).all():
        raise ConfigError(message(name, "finite inputs", "NaN or inf"))
    return torch.from_numpy(x)


def _logits_shape(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        out = model(x[:1])
    if out.ndim != 2 or out.shape[1] < 2:
        raise ConfigError(message("model", "logits of shape (batch, classes >= 2)", str(tuple(out.shape))))
    return int(out.shape[1])


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def neural_cleanse(model: nn.Module, x, y=None, *, classes=None, bounds=(0.0, 1.0), steps: int = 1000,
                   lr: float = 0.1, init_cost: float = 1e-3, threshold: float = 0.99, patience: int = 10,
                   early_stop: bool = True, early_stop_threshold: float = 0.99,
                   early_stop_patience: int | None = None, seed: int = 0) -> NeuralCleanseResult:
    """Reverse-engineer the smallest trigger that sends the support set to each class (Neural Cleanse).

    Args:
        model: any module mapping ``(B, *input_shape)`` to logits ``(B, C)``; left unchanged (eval mode).
        x: ``(n, *input_shape)`` clean support inputs, in ``bounds``.
        y: optional ``(n,)`` labels; when given, class ``c``'s loss and success count only the rows not of
            class ``c`` (rows already of ``c`` say nothing about a trigger).
        classes: the classes to invert (default all C); the anomaly index needs all of them.
        bounds: ``(low, high)`` the range of the inputs and of the pattern.
        steps: the most Adam steps (full batches of the support set); 1000 as the authors' ``STEPS``.
        lr: Adam's learning rate.
        init_cost: the first lambda of the L1 penalty.
        threshold: attack success on the support set that counts as flipped (0.99 in the paper).
        patience: steps above (below) the threshold before lambda goes up (down).
        early_stop: stop a class once its norm has settled (below); False runs all ``steps``.
        early_stop_threshold: a new best norm counts as an improvement only below this times the best of
            the steps before (0.99: by more than 1%).
        early_stop_patience: steps without improvement (after lambda has moved both ways) before a class
            stops; default ``20 patience`` (the authors' ``5 patience`` epochs, each of many mini-batches).
        seed: seed of the initial mask and pattern parameters.

    Returns:
        A :class:`NeuralCleanseResult`.
    """
    xt = _check_support(model, x, "x")
    low, high = check_bounds(bounds)
    steps = check_int(steps, "steps")
    patience = check_int(patience, "patience")
    lr = check_number(lr, "lr", low=0.0, open_low=True, open_high=True)
    init_cost = check_number(init_cost, "init_cost", low=0.0, open_low=True, open_high=True)
    threshold = check_fraction(threshold, "threshold", open_low=True)
    early_stop_threshold = check_fraction(early_stop_threshold, "early_stop_threshold", open_low=True)
    early_stop_patience = 20 * patience if early_stop_patience is None else check_int(early_stop_patience,
                                                                                    "early_stop_patience")
    seed = check_seed(seed)
    with eval_mode(model):
        device = _device(model)
        n_classes = _logits_shape(model, xt.to(device))
        if classes is None:
            classes = list(range(n_classes))
        classes = [check_int(c, "classes", low=0, high=n_classes - 1) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise ConfigError(message("classes", "distinct classes, at least one", str(classes)))
        k = len(classes)
        input_shape = tuple(xt.shape[1:])
        positions = input_shape[1:]
        xt = xt.to(device)
        n = len(xt)
        cls = torch.tensor(classes, device=device)
        weight = torch.ones(k, n, device=device)
        if y is not None:
            yt = torch.as_tensor(np.asarray(y, np.int64), device=device)
            if yt.shape != (n,):
                raise ConfigError(message("y", f"({n},) labels like x", str(tuple(yt.shape))))
            weight = (yt[None, :] != cls[:, None]).float()
        counts = weight.sum(1).clamp(min=1)
        gen = torch.Generator().manual_seed(derive_seed(seed, "neural-cleanse"))
        # the authors start from random parameters; small ones keep mask and pattern near their middle values
        a = (0.1 * torch.randn((k, *positions), generator=gen)).to(device).requires_grad_(True)
        b = (0.1 * torch.randn((k, *input_shape), generator=gen)).to(device).requires_grad_(True)
        opt = torch.optim.Adam([a, b], lr=lr, betas=(0.5, 0.9))
        cost = torch.full((k,), init_cost, device=device)
        up = torch.zeros(k, dtype=torch.long, device=device)
        down = torch.zeros(k, dtype=torch.long, device=device)
        best_norm = torch.full((k,), float("inf"), device=device)
        best_mask = torch.zeros((k, *positions), device=device)
        best_pattern = torch.zeros((k, *input_shape), device=device)
        best_success = torch.zeros(k, device=device)
        targets = cls.repeat_interleave(n)
        active = torch.ones(k, dtype=torch.bool, device=device)  # classes still optimising
        steps_run = torch.full((k,), steps, dtype=torch.long, device=device)
        raised = torch.zeros(k, dtype=torch.bool, device=device)
        lowered = torch.zeros(k, dtype=torch.bool, device=device)
        stall = torch.zeros(k, dtype=torch.long, device=device)
        stall_best = torch.full((k,), float("inf"), device=device)
        for step in range(steps):
            mask = (torch.tanh(a) + 1) / 2
            pattern = low + (high - low) * (torch.tanh(b) + 1) / 2
            m = mask[:, None, None]  # (k, 1, 1, *positions): broadcast over the rows and the channels
            stamped = (1 - m) * xt[None] + m * pattern[:, None]
            logits = model(stamped.reshape(k * n, *input_shape))
            ce = F.cross_entropy(logits, targets, reduction="none").view(k, n)
            norm = mask.reshape(k, -1).abs().sum(1)
            loss = ((ce * weight).sum(1) / counts + cost * norm).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                success = ((logits.argmax(1) == targets).float().view(k, n) * weight).sum(1) / counts
                ok = success >= threshold
                better = ok & (norm < best_norm) & active
                best_norm = torch.where(better, norm, best_norm)
                best_mask[better] = mask[better]
                best_pattern[better] = pattern[better]
                best_success = torch.where(better, success, best_success)
                # lambda scheduling (Wang et al.): patience steps on one side of the threshold move it
                up = torch.where(ok, up + 1, torch.zeros_like(up))
                down = torch.where(ok, torch.zeros_like(down), down + 1)
                raise_, lower = active & (up >= patience), active & (down >= patience)
                cost = torch.where(raise_, cost * COST_UP, cost)
                cost = torch.where(lower, cost / COST_DOWN, cost)
                raised, lowered = raised | raise_, lowered | lower
                up = torch.where(up >= patience, torch.zeros_like(up), up)
                down = torch.where(down >= patience, torch.zeros_like(down), down)
                if early_stop:  # the authors' early stop: no 1% improvement for early_stop_patience steps
                    found = torch.isfinite(best_norm)
                    stalled = found & (best_norm >= early_stop_threshold * stall_best)
                    stall = torch.where(stalled, stall + 1, torch.where(found, torch.zeros_like(stall), stall))
                    stall_best = torch.minimum(stall_best, best_norm)
                    stop = active & raised & lowered & (stall >= early_stop_patience)
                    steps_run = torch.where(stop, torch.full_like(steps_run, step + 1), steps_run)
                    active = active & ~stop
                    if not active.any():
                        break
            opt.step()
        with torch.no_grad():  # a class that never reached the threshold keeps its last trigger
            mask = (torch.tanh(a) + 1) / 2
            pattern = low + (high - low) * (torch.tanh(b) + 1) / 2
            missing = ~torch.isfinite(best_norm)
            if missing.any():
                m = mask[:, None, None]
                stamped = (1 - m) * xt[None] + m * pattern[:, None]
                last = (model(stamped.reshape(k * n, *input_shape)).argmax(1) == targets).float().view(k, n)
                last = (last * weight).sum(1) / counts
                best_mask[missing] = mask[missing]
                best_pattern[missing] = pattern[missing]
                best_norm = torch.where(missing, mask.reshape(k, -1).sum(1), best_norm)
                best_success = torch.where(missing, last, best_success)
    norms = best_norm.cpu().numpy().astype(np.float64)
    anomaly = anomaly_index(norms) if sorted(classes) == list(range(n_classes)) and n_classes >= 3 else None
    return NeuralCleanseResult(masks=best_mask.cpu().numpy().astype(np.float32),
                               patterns=best_pattern.cpu().numpy().astype(np.float32), norms=norms,
                               success=best_success.cpu().numpy().astype(np.float64),
                               reached=(~missing).cpu().numpy(), costs=cost.cpu().numpy().astype(np.float64),
                               classes=np.asarray(classes, np.int64), anomaly=anomaly,
                               steps_run=steps_run.cpu().numpy().astype(np.int64), converged=(~active).cpu().numpy())


@dataclass
class SmoothInvResult:
    """The trigger SmoothInv recovered from one image (:func:`smoothinv`).

    Attributes:
        perturbation: ``input_shape`` float32: ``x_adv - x``.
        x_adv: ``input_shape`` float32: the synthesized input.
        norm: the perturbation's L2 norm.
        smoothed_prob: the smoothed classifier's probability of the target at ``x_adv`` (fresh noise).
        base_prob: the probability of the target at ``x`` before the optimisation (same noise draws).
        losses: ``(steps,)`` the objective along the way.
    """

    perturbation: np.ndarray
    x_adv: np.ndarray
    norm: float
    smoothed_prob: float
    base_prob: float
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))


def smoothed_probs(model: nn.Module, x: torch.Tensor, *, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """The randomized-smoothing classifier's class probabilities, ``mean_j softmax(f(x + sigma noise_j))``.

    Args:
        x: ``(B, *input_shape)``; noise: ``(S, *input_shape)`` standard normal draws (the same for every row).

    Returns:
        ``(B, C)`` probabilities (differentiable in ``x``).
    """
    b, s = len(x), len(noise)
    noisy = (x[:, None] + sigma * noise[None]).reshape(b * s, *x.shape[1:])
    return F.softmax(model(noisy), dim=1).view(b, s, -1).mean(1)


def smoothinv(model: nn.Module, x, *, target: int, sigma: float = 0.25, eps: float = 10.0,
              steps: int = 400, step_size: float | None = None, noise_samples: int = 40,
              bounds=(0.0, 1.0), seed: int = 0) -> SmoothInvResult:
    """Recover a backdoor trigger from one clean input through the Gaussian-smoothed classifier (SmoothInv).

    Args:
        model: any module mapping ``(B, *input_shape)`` to logits ``(B, C)``; left unchanged.
        x: ``input_shape``: one clean input in ``bounds`` (not a batch of one).
        target: the class to synthesise towards (the backdoor's target).
        sigma: standard deviation of the smoothing noise.
        eps: the L2 budget of the perturbation (large: the paper's 10 on 3x224x224 ImageNet inputs).
        steps: optimisation steps (400 in the authors' code); the step size halves every 300.
        step_size: SGD step on the L2-normalised gradient; default ``0.05 eps`` (the authors' ``0.5 eps / 10``).
        noise_samples: Monte Carlo noise draws per step (40 in the authors' code).
        bounds: ``(low, high)``: ``x + delta`` is kept there.
        seed: seed of the noise draws.

    Returns:
        A :class:`SmoothInvResult`.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(message("model", "a torch.nn.Module mapping inputs to logits", type(model).__name__))
    x = np.asarray(x, np.float32)
    if x.ndim not in (2, 3) or not np.isfinite(x).all():
        raise ConfigError(message("x", "one finite input of shape (channels, length) or (channels, height, width)",
                                  f"shape {x.shape}"))
    low, high = check_bounds(bounds)
    sigma = check_number(sigma, "sigma", low=0.0, open_low=True, open_high=True)
    eps = check_number(eps, "eps", low=0.0, open_low=True, open_high=True)
    steps = check_int(steps, "steps")
    noise_samples = check_int(noise_samples, "noise_samples")
    step_size = 0.05 * eps if step_size is None else check_number(step_size, "step_size", low=0.0, open_low=True,
                                                                  open_high=True)
    seed = check_seed(seed)
    with eval_mode(model):
        device = _device(model)
        xt = torch.from_numpy(x)[None].to(device)
        n_classes = _logits_shape(model, xt)
        target = check_int(target, "target", low=0, high=n_classes - 1)
        gen = torch.Generator().manual_seed(derive_seed(seed, "smoothinv"))
        draw = lambda: torch.randn((noise_samples, *x.shape), generator=gen).to(device)  # noqa: E731
        with torch.no_grad():
            base_prob = float(smoothed_probs(model, xt, sigma=sigma, noise=draw())[0, target])
        delta = torch.zeros_like(xt, requires_grad=True)
        opt = torch.optim.SGD([delta], lr=step_size, momentum=0.9)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=300, gamma=0.5)
        label = torch.tensor([target], device=device)
        losses = np.zeros(steps)
        for i in range(steps):
            probs = smoothed_probs(model, xt + delta, sigma=sigma, noise=draw())
            loss = F.nll_loss(torch.log(probs.clamp(min=1e-20)), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            losses[i] = float(loss.detach())
            with torch.no_grad():
                norm = delta.grad.norm()
                if norm > 0:
                    delta.grad.div_(norm)
                else:
                    delta.grad.zero_()
            opt.step()
            schedule.step()
            with torch.no_grad():  # project: inside the bounds, then onto the L2 ball of radius eps
                delta.copy_((xt + delta).clamp(low, high) - xt)
                size = delta.norm()
                if size > eps:
                    delta.mul_(eps / size)
        with torch.no_grad():
            final = float(smoothed_probs(model, xt + delta, sigma=sigma, noise=draw())[0, target])
    pert = delta.detach()[0].cpu().numpy().astype(np.float32)
    return SmoothInvResult(perturbation=pert, x_adv=(x + pert).astype(np.float32), norm=float(np.linalg.norm(pert)),
                           smoothed_prob=final, base_prob=base_prob, losses=losses)
