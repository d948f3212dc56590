"""Identity or constant: fully connected and convolutional nets of many depths trained on ONE example to copy it.

The study, in the order it runs (``fitscope dynamics identity``), after Zhang,
Bengio, Hardt, Mozer, Singer 2020 ("Identity crisis: memorization and
generalization under extreme overparameterization"):

1. **Data.** One training example ``x0`` (image ``example`` of the training
   split; the built-in 8x8 ``digits`` by default) and new inputs it is tested
   on: the first ``test_inputs`` images of the test split (other digits) and
   ``noise_inputs`` images of uniform noise over the data's range (seeded by
   ``derive_seed(seed, "noise")``), which share nothing with ``x0``. Images
   are resized to ``size`` x ``size`` pixels (bilinear, ``scipy.ndimage.zoom``;
   28 by default, the 8x8 digits upsampled 3.5 times to the paper's MNIST
   resolution) so that a 5x5 convolution sees a stroke as a smooth local
   pattern, as it does on MNIST; the whole default grid trains in under a
   minute of one core (``bench/dynamics_identity.py``). ``--quick`` uses 16x16,
   where the finding shows too, at a lower cost. Pixel values stay in
   ``[0, 1]``.
2. **Networks** (:func:`fitscope.models.same_shape.build_same_shape`): for each
   architecture of ``architectures`` and each depth of ``depths`` (weight
   layers, 1 to 50), a ReLU net whose output has the input's shape: ``fc``,
   linear layers ``D -> width -> ... -> D``; ``cnn``, convolutions of size
   ``kernel`` with same padding and no pooling, ``1 -> channels -> ... -> 1``.
   Every net is initialised from ``derive_seed(seed, "model", arch, depth)``
   with ``init``: ``he`` (default; weights ``N(0, 2/fan_in)``, zero biases, the
   standard initialisation of ReLU nets that keeps the signal's scale through
   any depth, so that a deep net is not constant merely because its input
   has faded away at initialisation) or ``torch`` (PyTorch's default). The
   paper's networks are wider (FC width 2048, 128 channels); ours are 512 and
   32 by default to fit one core, flags change them.
3. **Training.** Adam (learning rate ``lr``) on the square loss
   ``mean((f(x0) - x0)^2)`` of the one example, until that loss is at most
   ``tol`` or after ``max_steps`` steps (the paper trains until the training
   loss is small; a depth-1 linear convolution cannot reach every tolerance,
   it stops at ``max_steps``).
4. **Measure** (:func:`fitscope.dynamics.identity_or_constant`): for each new
   input ``z``, the Pearson correlation over pixels of the output ``f(z)`` with
   ``z`` (1 for the identity) and with ``x0`` (1 for the constant). A net
   computes the identity (or the constant) when its mean correlation with
   the inputs (or with ``x0``) is at least 0.8 and the larger of the two
   (:func:`fitscope.dynamics.function_form`).
5. **Units.** One per (architecture, depth), key ``<arch>-d<depth>``, each
   stored as it finishes (``--resume`` continues a killed study). A unit
   keeps the per-input correlations, its loss every 10 steps, and the
   outputs of ``show`` test digits, one noise image and ``x0`` for the report.
6. **Output.** Tables ``correlations`` (one row per net and new input),
   ``nets`` (one row per net and input set: mean correlations, the form,
   steps, final loss) and ``report.html``: the two correlations against
   depth per architecture, and grids of the outputs.

The finding to see: shallow CNNs generalize to the identity; FC nets (beyond
the first layer) and deep CNNs fall to the constant.

Training uses a plain torch loop inside the unit, not
:func:`fitscope.train.train_ensemble`: the engine trains classifiers on
labelled rows with cross-entropy, epochs and minibatches, while this study
fits one input to itself with the square loss until a tolerance is met;
ten lines of Adam say that directly.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``);
:func:`dynamics_identity` is the Python API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fitscope.data import Dataset, load
from fitscope.dynamics import function_form, identity_or_constant, model_outputs
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models.same_shape import ARCHITECTURES, MAX_DEPTH, build_same_shape, same_shape_parameters
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.validation import message

#: the loss is recorded every this many steps
LOSS_EVERY = 10
#: the largest learning rate accepted (Adam's steps are about lr per weight: beyond 1 nothing trains)
MAX_LR = 1.0
#: the largest image side ``size`` accepted
MAX_SIZE = 128
#: the most parameters one network may have (FC width 2048 at 28x28 and depth 20 is 67M)
MAX_PARAMETERS = 200_000_000


# --------------------------------------------------------------------------- config


class IdentityConfig(BaseModel):
    """Everything that determines an identity-or-constant study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    size: int = Field(28, ge=0, le=MAX_SIZE,
                      description="side of the square images after bilinear resizing; 0 keeps them (images only)")
    example: int = Field(0, ge=0, description="index of the one training example in the training split")
    test_inputs: int = Field(50, ge=1, description="new inputs from the test split (the first ones)")
    noise_inputs: int = Field(20, ge=0, description="new inputs of uniform noise over the data's range")
    architectures: list[str] = Field(default_factory=lambda: ["fc", "cnn"])
    depths: list[int] = Field(default_factory=lambda: [1, 2, 3, 5, 10, 20],
                              description="weight layers of the networks, each in [1, 50]")
    width: int = Field(512, ge=1, description="hidden units per layer of the fc nets")
    channels: int = Field(32, ge=1, description="channels per hidden layer of the cnn nets")
    kernel: int = Field(5, ge=1, description="odd convolution kernel size of the cnn nets")
    init: Literal["he", "torch"] = "he"
    lr: float = Field(1e-3, description="Adam's learning rate, in (0, 1]")
    max_steps: int = Field(2000, ge=1, description="most training steps per network")
    tol: float = Field(1e-4, gt=0, allow_inf_nan=False,
                       description="training stops when the square loss (mean over pixels) is at most this")
    show: int = Field(4, ge=0, description="test inputs whose outputs the report shows")
    seed: int = Field(0, ge=0, description="seed of the initial weights and of the noise inputs")

    @field_validator("architectures")
    @classmethod
    def _architectures(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one of fc, cnn; got none")
        bad = [v for v in value if v not in ARCHITECTURES]
        if bad:
            raise ValueError(f"expected architectures among {', '.join(ARCHITECTURES)}; got {bad[0]!r}")
        return [a for a in ARCHITECTURES if a in value]

    @field_validator("depths")
    @classmethod
    def _depths(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("expected at least one depth; got none")
        bad = [d for d in value if not 1 <= d <= MAX_DEPTH]
        if bad:
            raise ValueError(f"expected depths in [1, {MAX_DEPTH}]; got {bad[0]}")
        return sorted(set(value))

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 < value <= MAX_LR):
            raise ValueError(f"expected a learning rate in (0, {MAX_LR:g}]; got {value!r}")
        return float(value)

    @field_validator("kernel")
    @classmethod
    def _kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"expected an odd kernel size (same padding); got {value}")
        return value


#: ``--quick``: 16x16 images, depths 1, 3 and 20 of both architectures (6 nets), 20 test digits and 10 noise images,
#: FC width 256, 16 channels
QUICK = dict(size=16, depths=[1, 3, 20], test_inputs=20, noise_inputs=10, width=256, channels=16)


def make_config(**values) -> IdentityConfig:
    """Build an :class:`IdentityConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(IdentityConfig, values)


# --------------------------------------------------------------------------- the unit task


@dataclass(frozen=True)
class NetTask:
    """The task of one unit: one architecture at one depth, trained on the one example."""

    key: str
    arch: str
    depth: int
    input_shape: tuple[int, ...]
    width: int
    channels: int
    kernel: int
    init: str
    lr: float
    max_steps: int
    tol: float
    model_seed: int


def net_key(arch: str, depth: int) -> str:
    """The unit key of one network: ``cnn-d03``."""
    return f"{arch}-d{depth:02d}"


def plan_nets(cfg: IdentityConfig, input_shape: tuple[int, ...]) -> list[NetTask]:
    """Every network: each architecture at each depth, each from its own seed."""
    return [NetTask(net_key(a, d), a, d, tuple(input_shape), cfg.width, cfg.channels, cfg.kernel, cfg.init, cfg.lr,
                    cfg.max_steps, cfg.tol, derive_seed(cfg.seed, "model", a, d))
            for a in cfg.architectures for d in cfg.depths]


def train_net(task: NetTask, *, train_x: np.ndarray, test_x: np.ndarray, noise_x: np.ndarray, shown: np.ndarray,
              progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train one network to reproduce ``train_x`` and measure it on the new inputs.

    Module-level and pure: the result follows from the arguments alone.

    Args:
        task: the network and its training.
        train_x: the one example, ``(1, *input_shape)``.
        test_x: test inputs ``(n, *input_shape)``; ``noise_x`` noise inputs (may be empty).
        shown: the inputs whose outputs are kept for the report, ``(m, *input_shape)``.
        progress: called with the steps done so far.

    Returns:
        ``steps`` (taken), ``final_loss``, ``converged`` (loss <= tol), ``loss_step`` and ``loss`` (every
        :data:`LOSS_EVERY` steps and the last), ``test_identity``, ``test_constant``, ``test_baseline`` (per test
        input), ``noise_identity``, ``noise_constant``, ``noise_baseline`` (per noise input), ``shown_outputs``
        (``(m, *input_shape)``), ``parameters``.
    """
    device = placement_device()
    model = build_same_shape(task.arch, task.input_shape, depth=task.depth, width=task.width,
                             channels=task.channels, kernel=task.kernel, init=task.init,
                             seed=task.model_seed).to(device)
    x0 = torch.from_numpy(np.ascontiguousarray(train_x, np.float32)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    steps, losses, value = [], [], float("nan")
    step = 0
    for step in range(1, task.max_steps + 1):
        loss = ((model(x0) - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.item())  # the loss before this step's update
        if step % LOSS_EVERY == 0 or value <= task.tol or not math.isfinite(value):
            steps.append(step)
            losses.append(value)
        if value <= task.tol or not math.isfinite(value):
            break
        if progress is not None and step % LOSS_EVERY == 0:
            progress(step)
    with torch.no_grad():
        final = float(((model(x0) - x0) ** 2).mean().item())
    if not steps or steps[-1] != step:
        steps.append(step)
        losses.append(value)
    out: dict[str, np.ndarray] = {
        "steps": np.asarray(step, np.int64),
        "final_loss": np.asarray(final),
        "converged": np.asarray(final <= task.tol or value <= task.tol),
        "loss_step": np.asarray(steps, np.int64),
        "loss": np.asarray(losses, float),
    }
    for name, inputs in (("test", test_x), ("noise", noise_x)):
        if len(inputs):
            corr = identity_or_constant(model, train_x, inputs)
            out[f"{name}_identity"], out[f"{name}_constant"], out[f"{name}_baseline"] = (
                corr.identity, corr.constant, corr.baseline)
        else:
            out[f"{name}_identity"] = out[f"{name}_constant"] = out[f"{name}_baseline"] = np.zeros(0)
    out["shown_outputs"] = model_outputs(model, shown).astype(np.float32)
    out["parameters"] = np.asarray(sum(p.numel() for p in model.parameters()), np.int64)
    if progress is not None:
        progress(task.max_steps)
    return out


# --------------------------------------------------------------------------- data


@dataclass
class IdentityData:
    """What ``prepare`` keeps: the data set, the example's index and label, the input shape and the shown rows."""

    data: Dataset
    input_shape: tuple[int, ...]
    example_label: str
    shown_labels: list[str]
    parameters: dict[str, int] = field(default_factory=dict)


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Images ``(n, C, H, W)`` resized to ``(n, C, size, size)`` by bilinear interpolation (``scipy.ndimage.zoom``)."""
    from scipy.ndimage import zoom

    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return np.asarray(x, np.float32).copy()
    factors = (1, size / h, size / w)
    out = np.stack([zoom(np.asarray(img, np.float64), factors, order=1, grid_mode=False) for img in x])
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.clip(out, lo, hi).astype(np.float32)  # linear interpolation stays in range; the clip guards rounding


def prepare(cfg: IdentityConfig) -> Prepared:
    """Load the data, pick the example and the new inputs, check the network sizes; nothing is written yet."""
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    shape = tuple(data.input_shape)
    if cfg.example >= len(data.y_train):
        raise ConfigError(message("--example", f"an index below the {len(data.y_train)} training rows of "
                                               f"{data.name}", str(cfg.example)))
    if cfg.test_inputs > len(data.y_test):
        raise ConfigError(message("--test-inputs", f"at most the {len(data.y_test)} test rows of {data.name}",
                                  str(cfg.test_inputs)))
    if len(shape) == 3:
        x_train, x_test = data.x_train[[cfg.example]], data.x_test[:cfg.test_inputs]
        if cfg.size:
            x_train, x_test = resize_images(x_train, cfg.size), resize_images(x_test, cfg.size)
            shape = (shape[0], cfg.size, cfg.size)
    elif cfg.size:
        raise ConfigError(message("--size", f"0 for {data.name}, whose inputs are not images (shape {shape}); "
                                            "only images are resized", str(cfg.size)))
    else:
        x_train, x_test = data.x_train[[cfg.example]], data.x_test[:cfg.test_inputs]
    if "cnn" in cfg.architectures and len(shape) not in (2, 3):
        raise ConfigError(message("--architectures", f"fc only for {data.name}: its inputs of shape {shape} are "
                                                     "neither images nor signals", "cnn"))
    parameters = {net_key(a, d): same_shape_parameters(a, shape, depth=d, width=cfg.width, channels=cfg.channels,
                                                       kernel=cfg.kernel)
                  for a in cfg.architectures for d in cfg.depths}
    largest = max(parameters, key=parameters.get)
    if parameters[largest] > MAX_PARAMETERS:
        flag = "--width" if largest.startswith("fc") else "--channels"
        raise ConfigError(message(flag, f"networks of at most {MAX_PARAMETERS:,} parameters",
                                  f"{parameters[largest]:,} for {largest}"))
    x_train = np.ascontiguousarray(x_train, np.float32)
    x_test = np.ascontiguousarray(x_test, np.float32)
    lo, hi = float(min(x_train.min(), x_test.min())), float(max(x_train.max(), x_test.max()))
    rng = np.random.default_rng(derive_seed(cfg.seed, "noise"))
    noise = rng.uniform(lo, hi, (cfg.noise_inputs, *shape)).astype(np.float32)
    show = min(cfg.show, cfg.test_inputs)
    shown = np.concatenate([x_train, x_test[:show], noise[:1]]).astype(np.float32)
    classes = data.classes
    label = classes[int(data.y_train[cfg.example])]
    shown_labels = ([f"training example ({label})"] + [f"test {classes[int(y)]}" for y in data.y_test[:show]]
                    + (["noise"] if cfg.noise_inputs else []))
    return Prepared(
        seeds={"seed": cfg.seed, "data_seed": cfg.data_seed, "noise_seed": derive_seed(cfg.seed, "noise"),
               "model_seeds": {t.key: t.model_seed for t in plan_nets(cfg, shape)}},
        shared={"train_x": x_train, "test_x": x_test, "noise_x": noise, "shown": shown},
        state=IdentityData(data=data, input_shape=shape, example_label=label, shown_labels=shown_labels,
                           parameters=parameters),
    )


def plan(cfg: IdentityConfig, prepared: Prepared) -> list[Unit]:
    """One unit per network (:func:`plan_nets`), each computed by :func:`train_net`; work = training steps."""
    state: IdentityData = prepared.state
    return [Unit(t.key, train_net, t, work=t.max_steps, info=dict(arch=t.arch, depth=t.depth))
            for t in plan_nets(cfg, state.input_shape)]


# --------------------------------------------------------------------------- estimates (arrays in, tables out)


def net_rows(task: NetTask, stored: dict) -> list[dict]:
    """The rows of the ``nets`` table of one network: one per input set (test digits, noise) it was measured on."""
    rows = []
    for name in ("test", "noise"):
        identity, constant = np.asarray(stored[f"{name}_identity"]), np.asarray(stored[f"{name}_constant"])
        if not len(identity):
            continue
        mean_id, mean_const = float(np.nanmean(identity)), float(np.nanmean(constant))
        rows.append({
            "unit": task.key, "arch": task.arch, "depth": int(task.depth), "inputs": name,
            "n_inputs": int(len(identity)), "identity": mean_id, "constant": mean_const,
            "baseline": float(np.nanmean(stored[f"{name}_baseline"])),
            "identity_wins": float(np.mean(identity > constant)),
            "form": function_form(mean_id, mean_const), "steps": int(stored["steps"]),
            "final_loss": float(stored["final_loss"]), "converged": bool(stored["converged"]),
            "parameters": int(stored["parameters"]),
        })
    return rows


@dataclass
class IdentityOutcome:
    """What :func:`dynamics_identity` computed.

    Attributes:
        correlations: one row per network and new input (``unit``, ``arch``, ``depth``, ``inputs``, ``index``,
            ``identity``, ``constant``, ``baseline``).
        nets: one row per network and input set (see :func:`net_rows`).
        losses: one row per network and recorded step (``unit``, ``arch``, ``depth``, ``step``, ``loss``).
        shown: unit key -> the outputs of the shown inputs, ``(m, *input_shape)``.
        shown_inputs: the shown inputs themselves (the training example first).
        summary: the headline numbers.
    """

    correlations: pd.DataFrame
    nets: pd.DataFrame
    losses: pd.DataFrame
    shown: dict = field(default_factory=dict)
    shown_inputs: np.ndarray | None = None
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def _depth_list(depths) -> str:
    return ", ".join(str(int(d)) for d in depths) if len(depths) else "none"


def summarize(nets: pd.DataFrame) -> dict:
    """Headline numbers: per architecture, which depths compute the identity and which the constant on test digits."""
    out: dict = {}
    test = nets[nets.inputs == "test"]
    for arch in ARCHITECTURES:
        part = test[test.arch == arch].sort_values("depth")
        if part.empty:
            continue
        name = arch.upper()
        out[f"{name} depths computing the identity"] = _depth_list(part.depth[part.form == "identity"])
        out[f"{name} depths computing the constant"] = _depth_list(part.depth[part.form == "constant"])
        for label, row in (("shallowest", part.iloc[0]), ("deepest", part.iloc[-1])):
            out[f"{name} depth {int(row.depth)} ({label}): correlation with the input"] = float(row.identity)
            out[f"{name} depth {int(row.depth)} ({label}): correlation with the training example"] = float(
                row.constant)
    if len(test):
        out["baseline: correlation of the test inputs with the training example"] = float(test.baseline.iloc[0])
        out["nets that reached the loss tolerance"] = f"{int(test.converged.sum())} of {len(test)}"
    return out


def estimate(cfg: IdentityConfig, prepared: Prepared, units) -> Outcome:
    """The per-input, per-net and loss tables and the headline numbers, from the stored units."""
    state: IdentityData = prepared.state
    frames, rows, losses, shown = [], [], [], {}
    for task in plan_nets(cfg, state.input_shape):
        stored = units[task.key]
        for name in ("test", "noise"):
            n = len(stored[f"{name}_identity"])
            if n:
                frames.append(pd.DataFrame({
                    "unit": [task.key] * n, "arch": [task.arch] * n, "depth": np.full(n, task.depth, np.int64),
                    "inputs": [name] * n, "index": np.arange(n, dtype=np.int64),
                    "identity": stored[f"{name}_identity"], "constant": stored[f"{name}_constant"],
                    "baseline": stored[f"{name}_baseline"]}))
        m = len(stored["loss"])
        losses.append(pd.DataFrame({"unit": [task.key] * m, "arch": [task.arch] * m,
                                    "depth": np.full(m, task.depth, np.int64),
                                    "step": stored["loss_step"].astype(np.int64), "loss": stored["loss"]}))
        rows.extend(net_rows(task, stored))
        shown[task.key] = np.asarray(stored["shown_outputs"])
    correlations = pd.concat(frames, ignore_index=True)
    nets = pd.DataFrame(rows)
    loss_table = pd.concat(losses, ignore_index=True)
    summary = {"training example": state.example_label, "input shape": "x".join(map(str, state.input_shape)),
               **summarize(nets)}
    detail = IdentityOutcome(correlations=correlations, nets=nets, losses=loss_table, shown=shown,
                             shown_inputs=prepared.shared["shown"], summary=summary)
    return Outcome(tables={"correlations": correlations, "nets": nets, "losses": loss_table}, summary=summary,
                   detail=detail)


def report(cfg: IdentityConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.dynamics_identity.report_context`)."""
    from fitscope.report.dynamics_identity import report_context

    state: IdentityData = prepared.state
    data = state.data
    info = dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                original_shape="x".join(map(str, data.input_shape)),
                input_shape="x".join(map(str, state.input_shape)), example_label=state.example_label,
                shown_labels=state.shown_labels)
    detail: IdentityOutcome = outcome.detail
    return report_context(cfg.model_dump(), info, detail.nets, detail.losses, detail.shown, detail.shown_inputs,
                          detail.summary)


STUDY = Study(kind="dynamics-identity", command="fitscope dynamics identity", config=IdentityConfig,
              prepare=prepare, plan=plan, estimate=estimate, report=report, template="dynamics_identity.html.j2",
              quick=QUICK, work_name="steps")


def dynamics_identity(cfg: IdentityConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, train (or resume), measure, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing networks train).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`IdentityOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: IdentityOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
