"""``fitscope dynamics``: the training-dynamics and loss-landscape studies, one subcommand each.

Each subcommand runs its study on the one study runner
(:func:`fitscope.cli.study_command.run_command`): ``--out``, ``--resume``,
``--executor``, ``--address``, ``--threads``, ``--device`` and
``--gpus-per-task`` mean the same as in every study command, and a flag left
out on ``--resume`` comes from the run. A study ``NAME`` of the group is
registered as ``dynamics-NAME`` in :data:`fitscope.experiments.STUDIES`
(module ``fitscope/experiments/dynamics_NAME.py``); a new one is one more
``@dynamics_app.command("NAME")`` function here that declares its flags and
calls :func:`_run`: sharpness, connectivity, layers, exp-lr, identity and
matrix-factorization.
"""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import parse_floats, parse_ints
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt, run_command,
)

dynamics_app = typer.Typer(
    help="Training dynamics and the loss landscape: sharpness (edge of stability), mode connectivity, critical "
         "layers, exponential learning rates, identity vs constant, deep matrix factorization.\n\n"
         "Example: fitscope dynamics sharpness --quick --out runs/sharpness",
    no_args_is_help=True,
)
app.add_typer(dynamics_app, name="dynamics")


def _run(name: str, values: dict, **runner) -> None:
    """Run the study ``dynamics-<name>`` with the user's ``values`` and the runner's flags."""
    from fitscope.experiments import get_study

    run_command(get_study(f"dynamics-{name}"), values, **runner)


def _floats_or_none(text: str | None, flag: str, example: str) -> list[float] | None:
    """None for no flag, [] for 'none', else the comma-separated numbers."""
    if text is None:
        return None
    return [] if text.strip().lower() == "none" else parse_floats(text, flag, example)


@dynamics_app.command("sharpness")
def sharpness(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default mnist1d)."),
    rows: Optional[int] = typer.Option(
        None, help="Training rows, a seeded subset; GD uses all of them (default 1000)."),
    model: Optional[str] = typer.Option(
        None, help="Model spec: mlp, cnn or cnn1d without dropout (default mlp:64x3)."),
    loss: Optional[str] = typer.Option(None, help="mse (the square loss of Cohen et al., default) or ce."),
    gd_lrs: Optional[str] = typer.Option(
        None, help="Learning rates of the full-batch GD runs, e.g. 0.05,0.2,0.3,0.4 (each finite and > 0)."),
    gd_steps: Optional[int] = typer.Option(None, help="Steps of each GD run (default 1000)."),
    every: Optional[int] = typer.Option(None, help="GD steps between two sharpness measurements (default 20)."),
    sgd_lrs: Optional[str] = typer.Option(
        None, help="Learning rates of the SGD runs, e.g. 0.05,0.1,0.2,0.4; 'none' for GD only."),
    batch_sizes: Optional[str] = typer.Option(None, help="SGD batch sizes, each in [1, --rows], e.g. 16,64."),
    sgd_time: Optional[float] = typer.Option(
        None, help="Training time lr x steps of every SGD run: each takes sgd_time / lr steps (default 400)."),
    sgd_measurements: Optional[int] = typer.Option(
        None, help="Hessian measurements per SGD run, evenly spaced (default 10)."),
    probes: Optional[int] = typer.Option(None, help="Rademacher probes per trace / Frobenius estimate (default 20)."),
    tol: Optional[float] = typer.Option(None, help="Relative tolerance of the Lanczos eigenvalue (default 0.001)."),
    max_iter: Optional[int] = typer.Option(None, help="Most Lanczos steps per estimate (default 100)."),
    memory_limit: Optional[float] = typer.Option(
        None, help="GiB a Hessian computation may take, estimated from the parameter count before anything runs "
                   "(default 4)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the initial weights, SGD batches and probes."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and the row subset."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(
        False, "--quick", help="A small setting for a demo: 500 rows, GD at lr 0.05, 0.3, 0.4 for 400 steps, SGD at "
                               "lr 0.1, 0.4 with batches 16, 64 for a time lr x steps of 100, 10 probes (mlp:64x3)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Track the sharpness (top Hessian eigenvalue) during full-batch GD and SGD against 2/lr: the edge of stability.

    Units: one per GD learning rate and one per SGD (learning rate, batch size).

    Example: fitscope dynamics sharpness --data mnist1d --gd-lrs 0.05,0.2,0.3,0.4 --sgd-lrs 0.1,0.4 --batch-sizes 16,64

    A quick demo: fitscope dynamics sharpness --quick --out runs/demo-sharpness
    """
    values = dict(
        data=data, rows=rows, model=model, loss=loss,
        gd_lrs=_floats_or_none(gd_lrs, "--gd-lrs", "0.03,0.1,0.2"), gd_steps=gd_steps, every=every,
        sgd_lrs=_floats_or_none(sgd_lrs, "--sgd-lrs", "0.05,0.1,0.2"),
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes", "16,64") if batch_sizes else None,
        sgd_time=sgd_time, sgd_measurements=sgd_measurements, probes=probes, tol=tol, max_iter=max_iter,
        memory_limit=memory_limit, seed=seed, data_seed=data_seed, label_column=label_column,
    )
    _run("sharpness", values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta, executor=executor,
         address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)


@dynamics_app.command("layers")
def layers(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    nets: Optional[str] = typer.Option(
        None, help="Model specs to train and probe, comma-separated (a spec's own options stay with it), e.g. "
                   "mlp:256x3,resnet:16x3,blocks=2 (the default)."),
    models: Optional[int] = typer.Option(None, help="Networks of each spec, each from its own seed (default 3)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs, 1 to 1000 (default 30)."),
    checkpoints: Optional[str] = typer.Option(
        None, help="Epochs whose weights a layer is reset to, each in [0, --epochs]; 0 is the initialisation "
                   "(default 0,1,2,3,5,10,20,30)."),
    batch_size: Optional[int] = typer.Option(None, help="Rows per SGD step (default 32)."),
    lr: Optional[float] = typer.Option(None, help="SGD learning rate (default 0.05)."),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum (default 0.9)."),
    weight_decay: Optional[float] = typer.Option(None, help="L2 penalty (default 0)."),
    draws: Optional[int] = typer.Option(None, help="Re-randomisations of each layer (default 1)."),
    critical: Optional[float] = typer.Option(
        None, help="A layer is critical when resetting it to the first checkpoint raises the test error by more "
                   "than this (default 0.05)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the initial weights, batch orders and re-randomisations."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(
        False, "--quick", help="A small setting for a demo: one network of each spec, 10 epochs, checkpoints at "
                               "epochs 0, 1, 2, 5, 10."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Reset each layer of a trained network alone to an earlier checkpoint, or re-randomise it: critical vs robust layers.

    Units: one per spec and network (each trained once, then probed layer by layer).

    Example: fitscope dynamics layers --nets mlp:256x3,resnet:16x3,blocks=2 --epochs 30 --checkpoints 0,1,2,5,10,30

    A quick demo: fitscope dynamics layers --quick --out runs/demo-layers
    """
    from fitscope.cli.lists import parse_settings

    values = dict(
        data=data, nets=parse_settings(nets) if nets is not None else None, models=models, epochs=epochs,
        checkpoints=parse_ints(checkpoints, "--checkpoints", "0,1,5,10") if checkpoints is not None else None,
        batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay, draws=draws, critical=critical,
        seed=seed, data_seed=data_seed, label_column=label_column,
    )
    _run("layers", values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta, executor=executor,
         address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)


@dynamics_app.command("exp-lr")
def exp_lr(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    rows: Optional[int] = typer.Option(None, help="Training rows, a seeded subset (default: all)."),
    nets: Optional[str] = typer.Option(
        None, help="Model specs, comma-separated: mlp:WxD and/or cnn:W1-W2, built scale-invariant (batch norm "
                   "without affine parameters after every bias-free layer, output layer fixed); default "
                   "mlp:64x2,cnn:16-32."),
    precisions: Optional[str] = typer.Option(None, help="float64 and/or float32 (default both)."),
    norm: Optional[str] = typer.Option(None, help="batch (default) or none (not scale-invariant: refused)."),
    head: Optional[str] = typer.Option(
        None, help="fixed (default: the output layer keeps its initial weights) or trained (not scale-invariant: "
                   "refused)."),
    schedule: Optional[str] = typer.Option(None, help="Learning-rate schedule of the weight-decay run: step "
                                                      "(default), constant or cosine."),
    lr: Optional[float] = typer.Option(None, help="Initial learning rate, finite and > 0 (default 0.1)."),
    weight_decay: Optional[float] = typer.Option(
        None, help="Weight decay >= 0 of the first run (default 0.005); lr x weight decay must leave a positive "
                   "shrink factor."),
    momentum: Optional[float] = typer.Option(None, help="Momentum in [0, 1) of both runs (default 0.9)."),
    steps: Optional[int] = typer.Option(None, help="SGD steps of each run (default 2000)."),
    milestones: Optional[str] = typer.Option(
        None, help="Step schedule: fractions of the steps where lr is multiplied by --decay (default 0.5,0.75)."),
    decay: Optional[float] = typer.Option(None, help="Step schedule: the factor of each drop, in (0, 1] "
                                                     "(default 0.1)."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size, the same batches in both runs (default 64)."),
    every: Optional[int] = typer.Option(None, help="Steps between two measurements of the predictions (default 10)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the initial weights and the minibatches."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and the row subset."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(
        False, "--quick", help="A small setting for a demo: mlp:64x2 alone, float64 and float32, 600 steps, "
                               "measured every 5."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Weight decay + step schedule against the equivalent exponential learning rate: the same function.

    Units: one per (model, precision), each training both runs in lockstep.

    Example: fitscope dynamics exp-lr --nets mlp:64x2 --lr 0.1 --weight-decay 0.005 --momentum 0.9 --steps 2000

    A quick demo: fitscope dynamics exp-lr --quick --out runs/demo-exp-lr
    """
    values = dict(
        data=data, rows=rows, nets=[m.strip() for m in nets.split(",") if m.strip()] if nets else None,
        precisions=[p.strip() for p in precisions.split(",") if p.strip()] if precisions else None, norm=norm,
        head=head, schedule=schedule, lr=lr, weight_decay=weight_decay, momentum=momentum, steps=steps,
        milestones=parse_floats(milestones, "--milestones", "0.5,0.75") if milestones else None, decay=decay,
        batch_size=batch_size, every=every, seed=seed, data_seed=data_seed, label_column=label_column,
    )
    _run("exp-lr", values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta, executor=executor,
         address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)


@dynamics_app.command("connectivity")
def connectivity(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    model: Optional[str] = typer.Option(
        None, help="Spec of network A: an mlp with hidden layers of even width (default mlp:1024x2)."),
    model_b: Optional[str] = typer.Option(
        None, help="Spec of network B (default: --model); its parameter names and shapes must match A's."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs of each network (default 20)."),
    batch_size: Optional[int] = typer.Option(None, help="Rows per SGD step, networks and curve (default 64)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the networks, momentum 0.9 (default 0.05)."),
    curve_epochs: Optional[int] = typer.Option(
        None, help="Training epochs of the Bezier curve's bend (default 100)."),
    curve_lr: Optional[float] = typer.Option(None, help="Learning rate of the curve's bend (default 0.05)."),
    points: Optional[int] = typer.Option(
        None, help="Evenly spaced points evaluated along the line and the curve, at least 3 (default 21)."),
    draws: Optional[int] = typer.Option(None, help="Seeded dropout draws per layer (default 5)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the networks, batches, curve and dropout draws."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(
        False, "--quick", help="A small setting for a demo: mlp:256x2, 10 epochs per network, 40 for the curve, "
                               "11 points, 3 dropout draws (on digits)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Loss barriers along the line, a trained Bezier curve and a dropout path between two networks (mode connectivity).

    Units: endpoint-a and endpoint-b (train one network, measure its dropout stability) and paths.

    Example: fitscope dynamics connectivity --data digits --model mlp:1024x2 --curve-epochs 100

    A quick demo: fitscope dynamics connectivity --quick --out runs/demo-connectivity
    """
    values = dict(data=data, model=model, model_b=model_b, epochs=epochs, batch_size=batch_size, lr=lr,
                  curve_epochs=curve_epochs, curve_lr=curve_lr, points=points, draws=draws, seed=seed,
                  data_seed=data_seed, label_column=label_column)
    _run("connectivity", values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta, executor=executor,
         address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)


@dynamics_app.command("identity")
def identity(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    size: Optional[int] = typer.Option(
        None, help="Side of the square images after bilinear resizing, in [0, 128]; 0 keeps them; must be 0 for "
                   "data that are not images (default 28: the 8x8 digits upsampled to MNIST's size)."),
    example: Optional[int] = typer.Option(None, help="Index of the one training example in the training split "
                                                     "(default 0)."),
    test_inputs: Optional[int] = typer.Option(None, help="New inputs from the test split, the first ones "
                                                         "(default 50)."),
    noise_inputs: Optional[int] = typer.Option(None, help="New inputs of uniform noise over the data's range "
                                                          "(default 20; 0 for none)."),
    architectures: Optional[str] = typer.Option(None, help="fc and/or cnn, comma-separated (default fc,cnn)."),
    depths: Optional[str] = typer.Option(
        None, help="Depths (weight layers) of the networks, each in [1, 50], e.g. 1,2,3,5,10,20 (the default)."),
    width: Optional[int] = typer.Option(None, help="Hidden units per layer of the fc nets (default 512)."),
    channels: Optional[int] = typer.Option(None, help="Channels per hidden layer of the cnn nets (default 32)."),
    kernel: Optional[int] = typer.Option(None, help="Odd convolution kernel size of the cnn nets (default 5)."),
    init: Optional[str] = typer.Option(
        None, help="he (default: N(0, 2/fan_in) weights, zero biases) or torch (PyTorch's default)."),
    lr: Optional[float] = typer.Option(None, help="Adam's learning rate, in (0, 1] (default 0.001)."),
    max_steps: Optional[int] = typer.Option(None, help="Most training steps per network (default 2000)."),
    tol: Optional[float] = typer.Option(
        None, help="Training stops when the square loss on the example (mean over pixels) is at most this "
                   "(default 0.0001)."),
    show: Optional[int] = typer.Option(None, help="Test inputs whose outputs the report shows (default 4)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the initial weights and the noise inputs."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(
        False, "--quick", help="A small setting for a demo: 16x16 images, depths 1, 3 and 20 of both "
                               "architectures, 20 test digits and 10 noise images, fc width 256, 16 channels."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Nets trained on ONE example to reproduce it: on new inputs, do they compute the identity or the constant?

    Units: one per (architecture, depth).

    Example: fitscope dynamics identity --architectures fc,cnn --depths 1,2,3,5,10,20 --init he

    A quick demo: fitscope dynamics identity --quick --out runs/demo-identity
    """
    values = dict(
        data=data, size=size, example=example, test_inputs=test_inputs, noise_inputs=noise_inputs,
        architectures=[a.strip() for a in architectures.split(",") if a.strip()] if architectures else None,
        depths=parse_ints(depths, "--depths", "1,2,3,5,10,20") if depths else None, width=width, channels=channels,
        kernel=kernel, init=init, lr=lr, max_steps=max_steps, tol=tol, show=show, seed=seed, data_seed=data_seed,
        label_column=label_column,
    )
    _run("identity", values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta, executor=executor,
         address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)


@dynamics_app.command("matrix-factorization")
def matrix_factorization(
    size: Optional[int] = typer.Option(None, help="Rows = columns of the ground-truth matrix (default 100)."),
    rank: Optional[int] = typer.Option(None, help="Rank of the ground truth, at most --size (default 5)."),
    observed: Optional[str] = typer.Option(
        None, help="Numbers of observed entries, each in [1, size^2], e.g. 1000,1500,2000,2500,3000,4000."),
    trials: Optional[int] = typer.Option(None, help="Random sets of observed entries per count (default 1)."),
    depths: Optional[str] = typer.Option(None, help="Depths of the factorization, each in [1, 10] (default 1,2,3)."),
    init_scales: Optional[str] = typer.Option(
        None, help="Standard deviations of the initial entries, each in (0, 1], e.g. 1e-3,1e-5 (default 1e-3)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of gradient descent, in (0, 1] (default 0.5)."),
    max_steps: Optional[int] = typer.Option(None, help="Step budget of each gradient-descent run (default 100000)."),
    tol: Optional[float] = typer.Option(None, help="Stop once the training loss is below this (default 1e-8)."),
    record_every: Optional[int] = typer.Option(
        None, help="Steps between two records of the loss and singular values (default 250)."),
    solver: Optional[str] = typer.Option(
        None, help="Nuclear-norm solver: scs (default), clarabel (exact, minutes at 100 x 100) or none."),
    solver_eps: Optional[float] = typer.Option(None, help="SCS's tolerance (default 1e-6)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the ground truth, the observed entries and the inits."),
    quick: bool = typer.Option(
        False, "--quick", help="A small setting for a demo: a 40 x 40 matrix of rank 2, 240 to 560 observed entries, "
                               "depths 1, 2, 3 against the nuclear norm."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Complete a low-rank matrix by gradient descent on a deep factorization and by nuclear-norm minimization.

    Arora et al. 2019 found that depth 2 and 3 give completions of lower effective rank and error than the nuclear
    norm when few entries are observed.
    Units: one per (observed count, trial, depth and init scale) and one per (count, trial) for the nuclear norm.

    Example: fitscope dynamics matrix-factorization --size 100 --rank 5 --observed 1000,2000,3000 --depths 1,2,3

    A quick demo: fitscope dynamics matrix-factorization --quick --out runs/demo-mf
    """
    values = dict(
        size=size, rank=rank, observed=parse_ints(observed, "--observed", "1000,2000,3000") if observed else None,
        trials=trials, depths=parse_ints(depths, "--depths", "1,2,3") if depths else None,
        init_scales=parse_floats(init_scales, "--init-scales", "1e-3,1e-5") if init_scales else None,
        lr=lr, max_steps=max_steps, tol=tol, record_every=record_every, solver=solver, solver_eps=solver_eps,
        seed=seed,
    )
    _run("matrix-factorization", values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
         executor=executor, address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)
