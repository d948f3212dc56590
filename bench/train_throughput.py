"""Training throughput of the ensemble engine against plain PyTorch recipes and the matmul peak.

    python bench/train_throughput.py [--quick] [--specs mlp:512x2,mlp:64x1] [--epochs E] [--models K]
                                     [--repeats R] [--threads N]

Workloads (``--specs``, default both): K = 16 models ``mlp:512x2`` (64 -> 512
-> 512 -> 10) and K = 16 models ``mlp:64x1`` (64 -> 64 -> 10, small enough
that per-op overhead dominates) on scikit-learn's digits (x / 16, float32,
80% stratified train split with seed 0: 1437 rows), batch 128, SGD (lr 0.05,
momentum 0.9), E = 20 epochs. Model ``k`` of every method uses seed ``k``
(initial weights and batch order), every model sees its own shuffled batches.

Measured in the same process, at the same torch thread count, interleaved (the
order of the methods rotates from repeat to repeat), best of R repeats of every
method; wall seconds (``time.perf_counter``) AND process CPU seconds
(``time.process_time``: all threads of the process, so torch's intra-op
threads count, spinning ones included):

- engine: ``fitscope.train.train_ensemble`` training all K models at once,
  WITH its per-epoch record pass (eval-mode logits of all K models on all
  train + test rows, per-example loss, correctness, margin). The training
  steps and the record pass are timed apart (the engine's own
  ``train_seconds`` / ``eval_seconds`` for wall time; the CPU time by marks at
  the start of each epoch's batch draw and of each record pass, set by this
  script around ``fitscope.train.ensemble``'s sampler and ``predict_logits``).
- (a) a plain PyTorch loop, ``nn.Sequential`` MLP, ``DataLoader(TensorDataset,
  shuffle=True, batch_size=128)``, ``torch.optim.SGD``, the K models one after
  another; training steps only.
- (a') the same loop plus the engine's per-epoch work (eval-mode logits on all
  train + test rows, per-row loss / correctness / margin), to compare with the
  engine's training steps + record pass (skip with ``--skip-eval-baseline``).
- (c) PyTorch's own ensemble recipe (the "model ensembling" tutorial):
  ``torch.func.stack_module_state`` of the K ``nn.Sequential`` models, a
  functional forward ``functional_call(base model on the meta device, (params,
  buffers), (x,))``, gradients by ``vmap(grad(loss), in_dims=(0, 0, 0, 0))``
  on per-model batches ``(K, B, 64)``, and a hand-written SGD with momentum
  on the stacked tensors (``torch._foreach_*`` under ``torch.no_grad``; the
  same update as ``torch.optim.SGD``); training steps only.
- (c') the same recipe with the gradients by autograd instead: the vmapped
  forward, its per-model mean losses summed, ``torch.autograd.grad`` on the
  stacked params (the same gradients; faster than (c) on some workloads).
- (d) a plain slicing loop: the K models one after another, each epoch a
  ``torch.randperm`` of the in-memory train tensors and ``x[perm[i:i+B]]``,
  ``torch.optim.SGD``, no DataLoader; training steps only. (c) and (d) draw
  the same batches for model ``k`` (a generator seeded ``k``) from the same
  initial weights, so they train the same models up to float rounding.
- (b) peak: best fp32 GFLOP/s of square 1024 and 2048 ``torch.mm`` (best of 5
  runs each), same thread count.

Every method's models are evaluated after training (outside the timed part):
the mean test accuracy of each method is printed and recorded, so a broken
baseline that trains nothing cannot pass for a fast one.

Targets (issue 11): on 16 x mlp:512x2 the engine's training steps at least
1.3x faster than the vmap recipe (judged against the faster of (c) and (c'),
separately for wall and CPU time); on 16 x mlp:64x1 at least 3x faster than
(d); judged on wall time and on CPU time separately. Speed-ups are ratios of model-examples
per second (= ratios of seconds when both train the same models).

FLOPs counted: training steps only, 6 x multiply-adds of the linear layers per
model-example (forward 2x + backward 4x; bias, ReLU, softmax and optimizer not
counted). The engine's record pass (2 x MACs per row) is not in the GFLOP/s
columns; the "all FLOPs / wall" figure adds it.

Threads: every method runs at ``torch.get_num_threads()`` after
``fitscope.train.configure_threads(--threads)`` (without ``--threads``:
``FITSCOPE_NUM_THREADS`` if set, else torch's default); the engine applies the
same rule on entry and leaves the count alone. DataLoader uses no workers.

Writes ``bench/results/train_throughput.json`` through ``bench/_results.py``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import CpuMonitor, matmul_peak, wait_for_quiet_cpu  # noqa: E402
from _results import start_run  # noqa: E402

import fitscope.train.ensemble as _ensemble  # noqa: E402
from fitscope.models import flops_per_example, parse_spec  # noqa: E402
from fitscope.train import TrainConfig, configure_threads, train_ensemble  # noqa: E402

SPEC = "mlp:512x2"
SPECS = ("mlp:512x2", "mlp:64x1")
LR, MOMENTUM = 0.05, 0.9
RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
# spec -> (baseline the engine's training steps are compared with, least speed-up)
TARGETS = {"mlp:512x2": ("c", 1.3), "mlp:64x1": ("d", 3.0)}
METHODS = {
    "engine": "engine (fitscope.train.train_ensemble): training steps + per-epoch record pass",
    "a": "(a) plain loop, DataLoader, one model at a time",
    "a_eval": "(a') = (a) + the same per-epoch eval pass + records",
    "c": "(c) torch.func recipe: stack_module_state + functional_call + vmap(grad), functional SGD",
    "c_autograd": "(c') = (c) with autograd through the vmapped forward instead of vmap(grad)",
    "d": "(d) plain slicing loop, in-memory tensors, one model at a time",
}


LABELS = {"a": "(a)", "a_eval": "(a')", "c": "(c)", "c_autograd": "(c')", "d": "(d)"}
SHORT = {"engine_train": "engine: training steps", "engine_record": "engine: per-epoch record pass",
         "engine_total": "engine: steps + record pass", "a": "(a) DataLoader loop", "a_eval": "(a') (a) + record pass",
         "c": "(c) torch.func vmap(grad)", "c_autograd": "(c') vmap + autograd", "d": "(d) slicing loop"}


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as (n, 64) float32 in [0, 1], 80/20 stratified split with seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=0.8, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


def plain_mlp(spec: str, seed: int, in_features: int = 64, n_classes: int = 10) -> nn.Sequential:
    """One ``nn.Sequential`` MLP of an ``mlp:`` spec without dropout, initialised under ``torch.manual_seed(seed)``."""
    parsed = parse_spec(spec)
    if parsed.family != "mlp" or parsed.dropout:
        raise ValueError(f"spec: expected an mlp spec without dropout, got {spec!r}")
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = in_features
    for w in parsed.widths:
        layers += [nn.Linear(width, w), nn.ReLU()]
        width = w
    return nn.Sequential(*layers, nn.Linear(width, n_classes))


class Clock:
    """Accumulated wall (``perf_counter``) and process CPU (``process_time``) seconds of timed blocks."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    @contextmanager
    def timing(self):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.cpu += time.process_time() - c0
            self.wall += time.perf_counter() - w0


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


# --------------------------------------------------------------------------- engine


@contextmanager
def _engine_marks(marks: list[tuple[str, float, float]]):
    """Mark (wall, CPU) at the start of every epoch's batch draw and of every record pass of the engine.

    Swaps ``fitscope.train.ensemble``'s ``EpochSampler`` and ``predict_logits``
    for thin subclasses / wrappers for the duration (the engine looks both up
    at call time); nothing else changes.
    """
    sampler_cls, predict = _ensemble.EpochSampler, _ensemble.predict_logits

    class MarkedSampler(sampler_cls):
        def epoch(self):
            marks.append(("train", time.perf_counter(), time.process_time()))
            return super().epoch()

    def marked_predict(*args, **kwargs):
        if not marks or marks[-1][0] != "record":  # the pass starts at its first call (train rows, then test rows)
            marks.append(("record", time.perf_counter(), time.process_time()))
        return predict(*args, **kwargs)

    _ensemble.EpochSampler, _ensemble.predict_logits = MarkedSampler, marked_predict
    try:
        yield
    finally:
        _ensemble.EpochSampler, _ensemble.predict_logits = sampler_cls, predict


def run_engine(x, y, x_te, y_te, *, models: int, epochs: int, batch: int, spec: str = SPEC) -> dict:
    """Train ``models`` MLPs at once with the engine; returns wall / CPU times (steps, record pass), accuracies."""
    config = TrainConfig(epochs=epochs, batch_size=batch, optimizer="sgd", lr=LR, momentum=MOMENTUM, record=True)
    marks: list[tuple[str, float, float]] = []

    def progress(_info: dict) -> None:  # called after each epoch's record pass
        marks.append(("end", time.perf_counter(), time.process_time()))

    w0, c0 = time.perf_counter(), time.process_time()
    with _engine_marks(marks):
        r = train_ensemble(spec, x, y, config=config, seeds=list(range(models)), x_test=x_te, y_test=y_te,
                           progress=progress)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    kinds = [m[0] for m in marks]
    if kinds != ["train", "record", "end"] * r.epochs_run:
        raise RuntimeError(f"engine timing marks: expected train/record/end per epoch, got {kinds[:9]}...")
    span = lambda a, b, i: sum(marks[3 * e + b][i] - marks[3 * e + a][i] for e in range(r.epochs_run))  # noqa: E731
    train_wall_marks, record_wall_marks = span(0, 1, 1), span(1, 2, 1)
    return dict(
        wall=wall, cpu=cpu,
        train=r.train_seconds, eval=r.eval_seconds,  # the engine's own wall figures
        train_cpu=span(0, 1, 2), eval_cpu=span(1, 2, 2),  # from the marks
        train_wall_marks=train_wall_marks, eval_wall_marks=record_wall_marks,
        examples=r.examples_seen, eval_rows=models * (len(x) + len(x_te)) * r.epochs_run,
        train_acc=float(r.train_acc[:, -1].mean()), test_acc=float(r.test_acc[:, -1].mean()),
    )


# --------------------------------------------------------------------------- (a), (a')


def run_baseline(x, y, x_te, y_te, *, models: int, epochs: int, batch: int, eval_each_epoch: bool = False,
                 spec: str = SPEC) -> dict:
    """Train ``models`` MLPs one after another with a plain DataLoader loop: (a), or (a') with ``eval_each_epoch``.

    With ``eval_each_epoch`` the loop also does what the engine's record pass
    does after every epoch: eval-mode logits on all train + test rows, per-row
    loss, correctness and margin kept as float16 / bool arrays. Timed: the
    epochs of every model (model construction and the final accuracy check
    are not). ``wall`` / ``train``: wall seconds, ``cpu``: process CPU seconds.
    """
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    x_all = torch.from_numpy(np.concatenate([x, x_te]))
    y_all = torch.from_numpy(np.concatenate([y, y_te]))
    dataset = TensorDataset(xt, yt)
    examples, train_acc, test_acc, records = 0, [], [], []
    clock = Clock()
    for seed in range(models):
        model = plain_mlp(spec, seed)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))
        with clock.timing():
            for _ in range(epochs):
                for xb, yb in loader:
                    loss = F.cross_entropy(model(xb), yb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    examples += len(yb)
                if eval_each_epoch:
                    model.eval()
                    with torch.no_grad():
                        logits = model(x_all)
                        loss = F.cross_entropy(logits, y_all, reduction="none")
                        given = logits.gather(1, y_all[:, None])[:, 0]
                        margin = given - logits.scatter(1, y_all[:, None], float("-inf")).amax(1)
                        records.append((loss.half().numpy(), (logits.argmax(1) == y_all).numpy(),
                                        margin.half().numpy()))
                    model.train()
        with torch.no_grad():  # accuracy check only, outside the timed part
            train_acc.append(_accuracy(model(xt), yt))
            test_acc.append(_accuracy(model(torch.from_numpy(x_te)), torch.from_numpy(y_te)))
    return dict(wall=clock.wall, train=clock.wall, cpu=clock.cpu, eval=0.0, examples=examples,
                train_acc=float(np.mean(train_acc)), test_acc=float(np.mean(test_acc)))


# --------------------------------------------------------------------------- (c) torch.func recipe


def run_vmap_recipe(x, y, x_te, y_te, *, models: int, epochs: int, batch: int, spec: str = SPEC,
                    grads: str = "func", keep: bool = False, device: str = "cpu", net=None) -> dict:
    """Train ``models`` MLPs with PyTorch's ensemble recipe: stacked params, vmapped functional_call, functional SGD.

    ``grads="func"``: ``vmap(grad(loss))`` (per-model gradients of each
    model's mean batch loss); ``"autograd"``: the vmapped forward, summed over
    models, and ``torch.autograd.grad`` on the stacked params (the same
    gradients). The update is SGD with momentum, as ``torch.optim.SGD`` does
    it (``buf = m * buf + g``, ``p -= lr * buf``; the first ``buf`` is ``g``),
    on the stacked tensors with foreach ops. Model ``k``: weights from
    ``plain_mlp(spec, k)``, batches from ``torch.randperm`` with a generator
    seeded ``k``, one fresh permutation per epoch (the batches of (d)).
    Timed: the epochs (stacking and the accuracy check are not). ``keep``:
    also return the trained stacked parameters (``params``). ``device``: where
    the stacked models and the data live (the batch order is drawn on the CPU;
    on CUDA the timed part ends with ``torch.cuda.synchronize``). ``net``:
    ``net(k) -> nn.Module``, model ``k`` (default ``plain_mlp(spec, k)``; any
    module without running statistics, e.g. a CNN after
    ``torch.func.replace_all_batch_norm_modules_``), as ``bench/device.py`` uses it.
    """
    from torch.func import functional_call, grad, stack_module_state, vmap

    if grads not in ("func", "autograd"):
        raise ValueError(f"grads: expected 'func' or 'autograd', got {grads!r}")
    dev = torch.device(device)
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    nets = [(plain_mlp(spec, seed) if net is None else net(seed)).to(dev) for seed in range(models)]
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    names = list(params)
    plist = [params[name] for name in names]

    def loss_fn(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    grad_fn = vmap(grad(loss_fn), in_dims=(0, 0, 0, 0))
    loss_fn_all = vmap(loss_fn, in_dims=(0, 0, 0, 0))
    momentum_bufs = [torch.zeros_like(p) for p in plist]
    gens = [torch.Generator().manual_seed(seed) for seed in range(models)]
    n, examples = len(x), 0
    clock = Clock()
    with clock.timing():
        for _ in range(epochs):
            index = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)
            for i in range(0, n, batch):
                idx = index[:, i : i + batch]
                xb, yb = xt[idx], yt[idx]
                if grads == "func":
                    g = grad_fn(params, buffers, xb, yb)
                    glist = [g[name] for name in names]
                else:
                    glist = torch.autograd.grad(loss_fn_all(params, buffers, xb, yb).sum(), plist)
                with torch.no_grad():
                    torch._foreach_mul_(momentum_bufs, MOMENTUM)
                    torch._foreach_add_(momentum_bufs, glist)
                    torch._foreach_add_(plist, momentum_bufs, alpha=-LR)
                examples += idx.numel()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    with torch.no_grad():  # accuracy check only, outside the timed part
        predict = vmap(lambda p, b, xs: functional_call(base, (p, b), (xs,)), in_dims=(0, 0, None))
        train_acc = _accuracy(predict(params, buffers, xt), yt)
        test_acc = _accuracy(predict(params, buffers, torch.from_numpy(x_te).to(dev)), torch.from_numpy(y_te).to(dev))
    out = dict(wall=clock.wall, train=clock.wall, cpu=clock.cpu, eval=0.0, examples=examples,
               train_acc=train_acc, test_acc=test_acc)
    if keep:
        out["params"] = {name: p.detach().clone() for name, p in params.items()}
    return out


# --------------------------------------------------------------------------- (d) slicing loop


def run_slicing(x, y, x_te, y_te, *, models: int, epochs: int, batch: int, spec: str = SPEC,
                keep: bool = False) -> dict:
    """Train ``models`` MLPs one after another, slicing a fresh ``torch.randperm`` of the in-memory tensors.

    Model ``k``: ``plain_mlp(spec, k)``, ``torch.optim.SGD``, per epoch
    ``perm = torch.randperm(n, generator)`` (generator seeded ``k``) and
    batches ``x[perm[i:i+B]]``. Timed: the epochs. ``keep``: also return the
    trained parameters stacked over models (``params``, named like (c)'s).
    """
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n, examples, train_acc, test_acc, kept = len(x), 0, [], [], []
    clock = Clock()
    for seed in range(models):
        model = plain_mlp(spec, seed)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        gen = torch.Generator().manual_seed(seed)
        with clock.timing():
            for _ in range(epochs):
                perm = torch.randperm(n, generator=gen)
                for i in range(0, n, batch):
                    j = perm[i : i + batch]
                    loss = F.cross_entropy(model(xt[j]), yt[j])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    examples += len(j)
        with torch.no_grad():  # accuracy check only, outside the timed part
            train_acc.append(_accuracy(model(xt), yt))
            test_acc.append(_accuracy(model(torch.from_numpy(x_te)), torch.from_numpy(y_te)))
        if keep:
            kept.append({name: p.detach().clone() for name, p in model.named_parameters()})
    out = dict(wall=clock.wall, train=clock.wall, cpu=clock.cpu, eval=0.0, examples=examples,
               train_acc=float(np.mean(train_acc)), test_acc=float(np.mean(test_acc)))
    if keep:
        out["params"] = {name: torch.stack([k[name] for k in kept]) for name in kept[0]}
    return out


# --------------------------------------------------------------------------- the run


def _r(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(float(v), digits)


def _best(runs: list[dict], key: str) -> float:
    return min(r[key] for r in runs)


def summarize(spec: str, runs: dict[str, list[dict]], *, k: int, k_base: int, n: int, n_test: int, epochs: int,
              peak: float) -> dict:
    """Rows, ratios, targets and accuracies of one workload from its per-repeat runs (best of repeats)."""
    flops_ex = flops_per_example(spec, (64,), 10)  # forward FLOPs = 2 x MACs
    train_flops_ex = 3 * flops_ex  # = 6 x MACs
    e = runs["engine"]
    examples = {m: runs[m][0]["examples"] for m in runs}
    # (name, key, model-examples, best wall, best CPU, extra FLOPs (eval pass))
    rows_in = [
        ("engine, training steps", "engine_train", examples["engine"], _best(e, "train"), _best(e, "train_cpu"), 0),
        ("engine, per-epoch record pass (not training)", "engine_record", None, _best(e, "eval"),
         _best(e, "eval_cpu"), None),
        ("engine, steps + record pass (train_ensemble call)", "engine_total", examples["engine"], _best(e, "wall"),
         _best(e, "cpu"), e[0]["eval_rows"] * flops_ex),
    ]
    for m in ("a", "a_eval", "c", "c_autograd", "d"):
        if runs.get(m):
            extra = k_base * (n + n_test) * epochs * flops_ex if m == "a_eval" else 0
            rows_in.append((METHODS[m], m, examples[m], _best(runs[m], "wall"), _best(runs[m], "cpu"), extra))
    rows = []
    for name, key, ex, wall, cpu, extra in rows_in:
        row = dict(method=name, key=key, wall_seconds=_r(wall), cpu_seconds=_r(cpu),
                   cpu_per_wall=_r(cpu / wall, 2), model_examples=ex)
        if ex is not None:
            g = train_flops_ex * ex / wall / 1e9
            row.update(examples_per_s=_r(ex / wall, 1), examples_per_cpu_s=_r(ex / cpu, 1), gflops=_r(g, 2),
                       fraction_of_peak=_r(g / peak, 3))
            if extra:
                all_g = (train_flops_ex * ex + extra) / wall / 1e9
                row.update(all_flops_gflops=_r(all_g, 2), all_flops_fraction_of_peak=_r(all_g / peak, 3))
        rows.append(row)
    by_key = {r["key"]: r for r in rows}

    def speedup(engine_key: str, base_key: str) -> dict:
        eng, base = by_key[engine_key], by_key[base_key]
        return dict(engine=engine_key, baseline=base_key,
                    wall=_r(eng["examples_per_s"] / base["examples_per_s"]),
                    cpu=_r(eng["examples_per_cpu_s"] / base["examples_per_cpu_s"]))

    ratios = [speedup("engine_train", b) for b in ("a", "c", "c_autograd", "d") if b in by_key]
    if "a" in by_key:
        ratios.append(speedup("engine_total", "a"))
    if "a_eval" in by_key:
        ratios.append(speedup("engine_total", "a_eval"))
    targets = []
    if spec in TARGETS and TARGETS[spec][0] in by_key:
        base, least = TARGETS[spec]
        # the vmap recipe: the faster of its two gradient variants, by each measure
        group = [b for b in ((base, "c_autograd") if base == "c" else (base,)) if b in by_key]
        s = [speedup("engine_train", b) for b in group]
        wall, cpu = min(s, key=lambda v: v["wall"]), min(s, key=lambda v: v["cpu"])
        targets.append(dict(workload=f"{k} x {spec}", engine="engine_train", baselines=group,
                            target=f">= {least}x", least=least,
                            reached_wall=wall["wall"], against_wall=wall["baseline"],
                            reached_cpu=cpu["cpu"], against_cpu=cpu["baseline"],
                            met_wall=bool(wall["wall"] >= least), met_cpu=bool(cpu["cpu"] >= least)))
    accuracy = {m: dict(train=_r(runs[m][0]["train_acc"], 4), test=_r(runs[m][0]["test_acc"], 4),
                        test_per_repeat=[_r(r["test_acc"], 4) for r in runs[m]])
                for m in runs if runs[m]}
    eng_test = accuracy["engine"]["test"]
    accuracy_check = dict(rule="every baseline's mean test accuracy within 0.03 of the engine's",
                          ok=bool(all(abs(a["test"] - eng_test) <= 0.03 for a in accuracy.values())))
    # Engine CPU marks vs its own wall figures: the marks bracket the same code.
    mark_gap = max(max(abs(r["train_wall_marks"] - r["train"]), abs(r["eval_wall_marks"] - r["eval"])) for r in e)
    return dict(spec=spec, models=k, baseline_models=k_base, flops_per_model_example=train_flops_ex,
                rows=rows, speedups=ratios, targets=targets, accuracy=accuracy, accuracy_check=accuracy_check,
                engine_mark_vs_own_wall_max_gap_seconds=_r(mark_gap, 4),
                runs={m: [{key: v for key, v in r.items() if key != "params"} for r in rs] for m, rs in runs.items()})


def print_workload(w: dict, peak: float) -> None:
    """The table of one workload: seconds, CPU seconds, rates, FLOP/s, speed-ups, targets, accuracies."""
    print()
    print(f"{w['models']} x {w['spec']} (baselines (a), (a'), (d): {w['baseline_models']} models); "
          f"FLOPs per model-example per training step: {w['flops_per_model_example']:,}")
    header = (f"{'method':30s} {'wall s':>8s} {'CPU s':>8s} {'CPU/wall':>8s} {'ex/s':>9s} {'GFLOP/s':>8s} "
              f"{'of (b)':>7s} {'test acc':>8s}")
    print(header)
    print("-" * len(header))
    acc_key = {"engine_train": "engine", "engine_record": "engine", "engine_total": "engine"}
    for r in w["rows"]:
        acc = w["accuracy"].get(acc_key.get(r["key"], r["key"]), {}).get("test")
        rate = f"{r['examples_per_s']:9,.0f}" if "examples_per_s" in r else f"{'-':>9s}"
        g = f"{r['gflops']:8.1f} {100 * r['fraction_of_peak']:6.1f}%" if "gflops" in r else f"{'-':>8s} {'-':>7s}"
        print(f"{SHORT[r['key']]:30s} {r['wall_seconds']:8.3f} {r['cpu_seconds']:8.3f} {r['cpu_per_wall']:8.2f} "
              f"{rate} {g} {acc if acc is not None else '-':>8}")
    print("engine speed-up (model-examples per second, engine / baseline):")
    for s in w["speedups"]:
        label = LABELS[s["baseline"]]
        print(f"  {s['engine']:13s} vs {label:5s}: wall {s['wall']:6.2f}x   "
              f"CPU {s['cpu']:6.2f}x")
    for t in w["targets"]:
        print(f"TARGET {t['workload']}: engine training steps {t['target']} faster than "
              f"{' / '.join(LABELS[b] for b in t['baselines'])}: "
              f"wall {t['reached_wall']:.2f}x vs {LABELS[t['against_wall']]} {'PASS' if t['met_wall'] else 'FAIL'}, "
              f"CPU {t['reached_cpu']:.2f}x vs {LABELS[t['against_cpu']]} {'PASS' if t['met_cpu'] else 'FAIL'}")
    if not w["accuracy_check"]["ok"]:
        print(f"WARNING: {w['accuracy_check']['rule']} does not hold: a baseline may be broken", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the tables, write the JSON; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs, 4 baseline models, 1 repeat (smoke test)")
    parser.add_argument("--specs", default=",".join(SPECS), help="comma-separated mlp specs (default: both)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--models", type=int, default=16, help="K, models in the ensemble (engine, (c))")
    parser.add_argument("--baseline-models", type=int, default=None,
                        help="models the one-at-a-time loops (a), (a'), (d) train (default K)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats; best of them is reported")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every method (default: FITSCOPE_NUM_THREADS, else torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip-eval-baseline", action="store_true",
                        help="do not measure (a'), the plain loop with the same per-epoch eval pass")
    parser.add_argument("--max-wait", type=float, default=300.0,
                        help="seconds to wait for other processes to go quiet before each measurement (0: never)")
    args = parser.parse_args(argv)
    run = start_run(__file__, argv)
    specs = [s.strip() for s in args.specs.split(",") if s.strip()]
    for spec in specs:
        plain_mlp(spec, 0)  # an mlp spec without dropout, or a clear error now
    epochs = args.epochs or (3 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    k = args.models
    k_base = args.baseline_models or (min(4, k) if args.quick else k)

    threads = configure_threads(args.threads)
    x, y, x_te, y_te = load_digits_split()
    common = dict(epochs=epochs, batch=args.batch)
    methods = {
        "engine": lambda spec, **kw: run_engine(x, y, x_te, y_te, models=k, spec=spec, **kw),
        "a": lambda spec, **kw: run_baseline(x, y, x_te, y_te, models=k_base, spec=spec, **kw),
        "a_eval": lambda spec, **kw: run_baseline(x, y, x_te, y_te, models=k_base, spec=spec,
                                                  eval_each_epoch=True, **kw),
        "c": lambda spec, **kw: run_vmap_recipe(x, y, x_te, y_te, models=k, spec=spec, grads="func", **kw),
        "c_autograd": lambda spec, **kw: run_vmap_recipe(x, y, x_te, y_te, models=k, spec=spec, grads="autograd",
                                                         **kw),
        "d": lambda spec, **kw: run_slicing(x, y, x_te, y_te, models=k_base, spec=spec, **kw),
    }
    if args.skip_eval_baseline:
        del methods["a_eval"]

    # Warm-up: first calls pay for thread pools, MKL, lazy imports and vmap's first trace.
    for spec in specs:
        for m, fn in methods.items():
            fn(spec, epochs=1, batch=args.batch)
    matmul_peak(runs=1, min_seconds=0.05)

    def measured(fn, *a, **kw) -> dict:
        # Other processes on a shared machine distort timings: wait for a quiet
        # moment, then record how busy the other processes kept the CPUs.
        gc.collect()
        quiet = wait_for_quiet_cpu(timeout=args.max_wait) if args.max_wait > 0 else None
        with CpuMonitor() as mon:
            out = fn(*a, **kw)
        out["other_cpu_load_before"] = quiet
        out["other_cpu_load_during"] = mon.other_load
        return out

    runs = {spec: {m: [] for m in methods} for spec in specs}
    peaks = []
    order = [(spec, m) for spec in specs for m in methods]
    for rep in range(repeats):
        shift = rep % len(order)
        for spec, m in order[shift:] + order[:shift]:  # rotate: no method always runs first or after another
            runs[spec][m].append(measured(methods[m], spec, **common))
        peaks.append(measured(matmul_peak))
        loads = [r["other_cpu_load_during"] for spec in specs for m in methods for r in runs[spec][m][-1:]]
        print(f"repeat {rep + 1}/{repeats}: " + "; ".join(
            f"{spec}: " + ", ".join(f"{m} {runs[spec][m][-1]['train']:.2f}s" for m in methods) for spec in specs)
            + f"; peak {peaks[-1]['gflops']:.0f} GFLOP/s; other processes' CPU load during them: up to "
            + (f"{max(v for v in loads if v is not None):.2f}" if any(v is not None for v in loads) else "?"),
            file=sys.stderr, flush=True)
    peak = max(p["gflops"] for p in peaks)

    workloads = {spec: summarize(spec, runs[spec], k=k, k_base=k_base, n=len(x), n_test=len(x_te), epochs=epochs,
                                 peak=peak) for spec in specs}
    print()
    print(f"digits ({len(x)} train rows, {len(x_te)} test rows), {epochs} epochs, batch {args.batch}, "
          f"SGD lr {LR} momentum {MOMENTUM}; torch {torch.__version__}, {threads} threads for every method; "
          f"best of {repeats} interleaved repeats (wall and CPU minimised separately)")
    print(f"(b) fp32 matmul peak: {peak:.1f} GFLOP/s (square 1024/2048 torch.mm, best of 5 runs x {repeats})")
    for spec in specs:
        print_workload(workloads[spec], peak)
    others = [r["other_cpu_load_during"] for spec in specs for m in methods for r in runs[spec][m]
              if r["other_cpu_load_during"] is not None]
    if others and max(others) > 0.1:
        print(f"WARNING: other processes used up to {100 * max(others):.0f}% of the CPUs during a measurement; "
              "timings are distorted", file=sys.stderr)

    targets = [t for spec in specs for t in workloads[spec]["targets"]]
    result = dict(
        benchmark="train_throughput",
        workload=dict(specs=specs, models=k, baseline_models=k_base,
                      dataset="sklearn digits, x/16, 80% stratified train split seed 0", n_train=len(x),
                      n_test=len(x_te), epochs=epochs, batch_size=args.batch,
                      optimizer=f"sgd lr={LR} momentum={MOMENTUM}", repeats=repeats,
                      statistic="best (minimum) of interleaved repeats, wall and CPU seconds minimised separately",
                      seeds="model k: seed k (initial weights and batch order) in every method"),
        threads=dict(torch_threads=threads, rule="fitscope.train.configure_threads(--threads) once, before any "
                     "method; the same count for every method (DataLoader without workers)"),
        timing="wall: time.perf_counter; cpu: time.process_time of the whole process (all torch threads)",
        methods=METHODS,
        flops_counted="training steps only: 6 x multiply-adds of the linear layers per model-example; the engine's "
                      "per-epoch record pass is timed apart and not in 'gflops' ('all_flops_gflops' adds it)",
        peak=dict(gflops=round(peak, 2), method="square fp32 torch.mm 1024 and 2048, best of 5 runs per repeat",
                  per_repeat=[round(p["gflops"], 2) for p in peaks],
                  other_cpu_load_during=[p["other_cpu_load_during"] for p in peaks]),
        workloads=workloads,
        targets=targets,
        all_targets_met=bool(targets) and all(t["met_wall"] and t["met_cpu"] for t in targets),
    )
    result = run.write(args.out, result)
    la = result["provenance"]["load_average"]
    print(f"load average (1, 5, 15 min) before {la['before']}, after {la['after']} on {la['cores']} cores; "
          f"noisy: {result['provenance']['noisy']}")
    if result["provenance"]["noisy"]:
        print("WARNING: the load average exceeded the cores: these figures are marked noisy", file=sys.stderr)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
