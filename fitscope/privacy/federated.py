"""Federated training, FedAvg and FedSGD (McMahan et al. 2017), on Flower's simulation engine.

Notation: ``n_clients`` clients each hold a part of the training set (see
:mod:`fitscope.privacy.partition`); every round the server picks
``m = max(1, floor(client_fraction * n_clients))`` of them, sends them the
global weights ``w``, each runs ``E`` local epochs of plain SGD with
minibatches of ``B`` examples (learning rate ``lr``) on its own ``n_k``
examples and returns its weights ``w_k``; the server sets
``w = sum_k n_k w_k / sum_k n_k`` (Flower's ``FedAvg`` aggregation) and
evaluates ``w`` on the held-out test set (centralized evaluation).

- **FedAvg**: ``E`` epochs of minibatch SGD per round (McMahan: ``E = 5``,
  ``B = 10``).
- **FedSGD**: each selected client takes exactly one gradient step on *all*
  its data (``E = 1``, ``B = infinity``). The weighted average of
  ``w - lr * g_k`` is ``w - lr * sum_k n_k g_k / n``: one step of full-batch
  gradient descent on the union of the selected clients' data, which is how
  McMahan et al. define FedSGD. It runs through the same Flower ``FedAvg``
  strategy; only the client's local work differs.

How it runs on Flower (flwr 1.2x/1.4x Message API): a ``ServerApp`` whose
``main`` drives the rounds itself with the strategy's ``configure_train`` /
``aggregate_train`` (so it can stop as soon as the target accuracy is
reached, and report every round), and a ``ClientApp`` with ``@train`` (local
SGD) and ``@query`` (reports the client's partition id) handlers, run by
``flwr.simulation.run_simulation`` on Ray: ``n_clients`` virtual SuperNodes, one Ray
actor per CPU (``num_cpus``), each ``ClientApp`` call pinned to one torch
thread. The training arrays are ``ray.put`` once; a client reads its rows
from Ray's object store (messages carry only weights and a small config).

Determinism. Flower's own ``FedAvg`` samples clients with Python's global
``random`` over node ids that the simulation draws at random (``secrets``),
and averages the replies in the order they arrive. :class:`SeededFedAvg`
(a subclass that changes only those two things) asks every node for its
partition id once (a ``query`` message), samples clients from a NumPy
generator seeded by ``(seed, round)`` over partition ids, and sorts the
replies by partition id before Flower's weighted average. Local training is
seeded by ``(seed, round, partition id)`` and runs with one torch thread, and
the initial model by ``seed``. So a run is repeatable bit for bit on one
machine; nothing else that Flower or Ray do (actor placement, message
timing) enters the numbers.

Side effects: Flower's Ray backend calls ``ray.shutdown()`` when the
simulation ends, also for a Ray this process had started before (so each
:func:`run_federated` starts and stops its own Ray: a few seconds). Flower's
telemetry is switched off (``FLWR_TELEMETRY_ENABLED=0``) unless the user set
that variable, and its log is quietened to errors during the run.

Without Flower: :func:`run_federated_in_process` runs the same rounds as a
plain loop in the calling process (no Ray; usable inside a Ray task, where
Flower's simulation cannot run) and reproduces :func:`run_federated`'s
numbers bit for bit, Flower's weighted-average order included.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fitscope.errors import ConfigError, DataError
from fitscope.models import build, check_input_shape, parse_spec
from fitscope.privacy.partition import iid_partition, shard_partition
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.validation import (
    as_array,
    check_choice,
    check_finite,
    check_fraction,
    check_int,
    check_labels,
    check_number,
    check_seed,
    message,
)

ALGORITHMS = ("fedavg", "fedsgd")
PARTITIONS = ("iid", "noniid")
#: Seconds the server waits for the selected clients of one round before it gives up.
ROUND_TIMEOUT_S = 900.0
_EVAL_CHUNK = 4096


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class FederatedResult:
    """What one federated run measured.

    Attributes:
        algorithm: ``"fedavg"`` or ``"fedsgd"``.
        partition: ``"iid"`` or ``"noniid"``.
        accuracy: ``(R + 1,)`` test accuracy of the global model; ``[0]`` is the
            initial model, ``[r]`` the model after round ``r``.
        loss: ``(R + 1,)`` mean test cross-entropy, same indexing.
        train_loss: ``(R,)`` mean local training loss of the selected clients
            (weighted by their example counts) in each round.
        round_seconds: ``(R,)`` wall seconds of each round (send, local training,
            aggregation, server-side evaluation).
        clients: ``(R, m)`` partition ids of the clients selected in each round.
        rounds_to_target: the first round whose accuracy reached
            ``target_accuracy``, or None (no target, or not reached in ``R``).
        target_accuracy: the target, or None.
        wall_seconds: the whole call, Ray start and stop included.
        startup_seconds: from the call to the start of round 1 (Ray, actors,
            asking the clients for their partition ids).
        client_sizes: ``(n_clients,)`` examples per client.
        weights: the final global weights (parameter name -> array), loadable
            into ``fitscope.models.build(spec, input_shape, n_classes, seeds=[0])``.
        settings: the effective settings (``local_epochs``/``batch_size`` of
            FedSGD are 1 and None), seeds and versions of the run.
        engine: ``"flower"``: the rounds ran on Flower's simulation engine
            (:func:`run_federated`); ``"in-process"``: on the plain loop of
            :func:`run_federated_in_process`.
    """

    algorithm: str
    partition: str
    accuracy: np.ndarray
    loss: np.ndarray
    train_loss: np.ndarray
    round_seconds: np.ndarray
    clients: np.ndarray
    rounds_to_target: int | None
    target_accuracy: float | None
    wall_seconds: float
    startup_seconds: float
    client_sizes: np.ndarray
    weights: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    engine: str = "flower"

    @property
    def rounds(self) -> int:
        """Rounds run (fewer than asked when the target was reached early)."""
        return int(len(self.accuracy) - 1)

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round."""
        return float(self.accuracy[-1])


# --------------------------------------------------------------------------- local work (pure functions)


def _model(spec: str, input_shape: tuple[int, ...], n_classes: int, state: dict[str, np.ndarray] | None,
           seed: int = 0, device: torch.device | None = None) -> torch.nn.Module:
    # One model as a 1-model ensemble of fitscope.models: (1, B, *input_shape) -> (1, B, n_classes),
    # built and loaded on the CPU, then moved to ``device``.
    model = build(spec, input_shape, n_classes, seeds=[seed])
    if state is not None:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
    return model.to(device) if device is not None else model


def _on(a, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``a`` (NumPy, or a tensor) as a ``dtype`` tensor on ``device``: copied there once, or not at all."""
    if not isinstance(a, torch.Tensor):
        a = torch.as_tensor(np.ascontiguousarray(a))
    return a.to(device, dtype)


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def initial_state(spec: str, input_shape: tuple[int, ...], n_classes: int, *, seed: int) -> dict[str, np.ndarray]:
    """The initial global weights: a fresh model of ``spec`` built with ``seed`` (name -> array)."""
    return _state(_model(spec, input_shape, n_classes, None, seed))


def local_update(state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, spec: str, n_classes: int,
                 epochs: int, batch_size: int | None, lr: float, seed: int,
                 device: str | None = None) -> tuple[dict[str, np.ndarray], float]:
    """One client's work in a round: ``epochs`` passes of plain SGD over its data, from the weights ``state``.

    Each epoch visits the ``n_k`` examples in a fresh random order (seeded)
    in minibatches of ``batch_size`` (the last one may be smaller), so an
    epoch takes ``ceil(n_k / B)`` steps. ``batch_size=None`` means B =
    infinity: one full-batch step per epoch (FedSGD with ``epochs=1``).

    Args:
        state: the global weights, name -> array.
        x: ``(n_k, *input_shape)`` float32 inputs of this client (NumPy, or a tensor
            already on the device).
        y: ``(n_k,)`` int labels (likewise).
        spec, n_classes: the model.
        epochs: local epochs E >= 1.
        batch_size: B >= 1, or None for the whole client data.
        lr: SGD learning rate (no momentum, no weight decay).
        seed: seed of the example order (and of any draw from torch's global generator, which runs
            inside ``torch.random.fork_rng``: the caller's global RNG state is unchanged).
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            The model and the rows are copied there once; the example order is drawn
            on the CPU (the same on every device).

    Returns:
        ``(new weights, mean training loss over the steps)``, as NumPy and a float.

    Raises:
        ConfigError: a device that is not found here.
    """
    # The caller's global torch RNG is left as it was: the example order draws from ``gen``, the model's
    # init and dropout from its own generators (fitscope.models), and anything else that might draw from
    # the global generator does so inside fork_rng, seeded here and restored on return.
    dev = placement_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return _local_sgd(state, x, y, spec=spec, n_classes=n_classes, epochs=epochs, batch_size=batch_size,
                          lr=lr, gen=torch.Generator().manual_seed(int(seed)), device=dev)


def _local_sgd(state: dict[str, np.ndarray], x, y, *, spec: str, n_classes: int, epochs: int,
               batch_size: int | None, lr: float, gen: torch.Generator,
               device: torch.device) -> tuple[dict[str, np.ndarray], float]:
    """The SGD loop of :func:`local_update` on ``device``, the example order drawn from ``gen`` (on the CPU)."""
    model = _model(spec, tuple(x.shape[1:]), n_classes, state, device=device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = _on(x, torch.float32, device), _on(y, torch.int64, device)
    n = len(yt)
    step = n if batch_size is None else int(batch_size)
    losses = []
    for _ in range(int(epochs)):
        order = (torch.randperm(n, generator=gen) if step < n else torch.arange(n)).to(device)
        for start in range(0, n, step):
            idx = order[start:start + step]
            logits = model(xt[idx].unsqueeze(0))[0]
            loss = F.cross_entropy(logits, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    if not losses:
        return _state(model), float("nan")
    # the step losses come back once; their float64 mean is that of the losses as Python floats
    return _state(model), float(np.mean(torch.stack(losses).cpu().numpy().astype(np.float64)))


def evaluate_state(state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, spec: str,
                   n_classes: int, device: str | None = None) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of the weights ``state`` on ``x`` ``(n, *input_shape)``, ``y`` ``(n,)``.

    ``x`` and ``y``: NumPy, or tensors already on the device (copied there once).
    ``device``: torch device; None: the placement's, see :mod:`fitscope.train.device`.
    """
    dev = placement_device(device)
    model = _model(spec, tuple(x.shape[1:]), n_classes, state, device=dev)
    model.eval()
    xt, yt = _on(x, torch.float32, dev), _on(y, torch.int64, dev)
    # summed on the device in float64 (what adding the chunks' float32 sums as Python floats gives): 2 numbers back
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    total_loss = torch.zeros((), dtype=torch.float64, device=dev)
    with torch.no_grad():
        for start in range(0, len(yt), _EVAL_CHUNK):
            yb = yt[start:start + _EVAL_CHUNK]
            logits = model(xt[start:start + _EVAL_CHUNK].unsqueeze(0))[0]
            total_loss += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(1) == yb).sum()
    return int(correct) / len(yt), float(total_loss) / len(yt)


def clients_per_round(n_clients: int, client_fraction: float) -> int:
    """``m = max(1, floor(client_fraction * n_clients))``, the clients selected per round (McMahan et al.'s
    ``max(C K, 1)``; 1e-9 absorbs rounding)."""
    return max(1, int(math.floor(client_fraction * n_clients + 1e-9)))


def select_clients(n_clients: int, m: int, *, seed: int, server_round: int) -> np.ndarray:
    """The sorted partition ids of the ``m`` of ``n_clients`` clients that train in ``server_round`` (seeded)."""
    rng = np.random.default_rng(derive_seed(seed, "select", server_round))
    return np.sort(rng.choice(n_clients, size=m, replace=False)).astype(np.int64)


# --------------------------------------------------------------------------- validation


def _check_arrays(x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n, *input_shape)``, finite, and their ``(n,)`` class labels; as float32 and int64."""
    x = as_array(x, x_name)
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(message(x_name, "inputs of shape (n, *input_shape) with n >= 1", f"shape {x.shape}"))
    if x.dtype.kind not in "iuf":
        raise DataError(message(x_name, "numeric inputs", f"dtype {x.dtype}"))
    check_finite(x, x_name)
    y = check_labels(y, y_name, len(x), like=x_name)
    return x.astype(np.float32, copy=False), y


def check_settings(*, algorithm: str, partition: str, n_clients: int, n_train: int, client_fraction: float,
                   local_epochs: int, batch_size: int | None, lr: float, rounds: int,
                   target_accuracy: float | None, shards_per_client: int) -> None:
    """Raise a one-line ConfigError for the first bad setting (names the argument, expected, got)."""
    check_choice(algorithm, "algorithm", ALGORITHMS)
    check_choice(partition, "partition", PARTITIONS)
    for name, value in (("n_clients", n_clients), ("local_epochs", local_epochs), ("rounds", rounds),
                        ("shards_per_client", shards_per_client)):
        check_int(value, name)
    if n_clients > n_train:
        raise ConfigError(message("n_clients", f"at most the {n_train} training examples", str(n_clients)))
    if partition == "noniid" and n_clients * shards_per_client > n_train:
        raise ConfigError(message("shards_per_client", f"at most {n_train // n_clients} with {n_clients} clients "
                                  f"(no more shards than the {n_train} training examples)",
                                  f"{shards_per_client} ({n_clients * shards_per_client} shards)"))
    check_fraction(client_fraction, "client_fraction", open_low=True)
    check_int(batch_size, "batch_size", allow_none=True)
    check_number(lr, "lr", low=0.0, high=math.inf, open_low=True, open_high=True)
    check_number(target_accuracy, "target_accuracy", low=0.0, high=1.0, open_low=True, allow_none=True)


def make_partition(y: np.ndarray, *, partition: str, n_clients: int, shards_per_client: int,
                   seed: int) -> list[np.ndarray]:
    """The clients' index arrays: :func:`iid_partition` or :func:`shard_partition` ("noniid")."""
    if partition == "iid":
        return iid_partition(len(y), n_clients, seed=seed)
    return shard_partition(y, n_clients, shards_per_client, seed=seed)


# --------------------------------------------------------------------------- Flower wiring


@contextlib.contextmanager
def _quiet_flower():
    """Flower logs every round at INFO and warns that run_simulation is deprecated: keep errors only."""
    logger = logging.getLogger("flwr")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _import_flower():
    # Flower reads FLWR_TELEMETRY_ENABLED when it is first imported; respect a value the user set.
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"federated training needs Flower's simulation engine: pip install 'fitscope[federated]' "
                          f"({err})") from None


def make_client_app(*, spec: str, n_classes: int, data_ref: Any, parts_ref: Any, device: str | None = None):
    """The ``ClientApp`` every virtual client runs.

    ``@train``: read the client's rows (partition id from the node config)
    out of Ray's object store, run :func:`local_update` with the round's
    ``lr``/``local-epochs``/``batch-size``/``seed`` from the message's config,
    reply with the new weights and ``num-examples`` (Flower's FedAvg weight).
    ``@query``: reply with the partition id and example count.

    Args:
        spec, n_classes: the model.
        data_ref: Ray object ref of ``(x_train, y_train)``.
        parts_ref: Ray object ref of the list of per-client index arrays.
        device: the clients' torch device (``"cpu"`` or ``"cuda"``: the GPU Ray gives the
            client's actor); None: the placement's in the actor's process, see
            :mod:`fitscope.train.device`. Resolved at every call, in the actor.
    """
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    def _rows(context):
        import ray

        pid = int(context.node_config["partition-id"])
        (x, y), parts = ray.get(data_ref), ray.get(parts_ref)
        return pid, x[parts[pid]], y[parts[pid]]

    @app.train()
    def train(msg, context):
        torch.set_num_threads(1)  # one actor per CPU; also fixes the float summation order
        pid, x, y = _rows(context)
        cfg = msg.content["config"]
        state = {k: v.numpy() for k, v in msg.content["arrays"].items()}
        batch = int(cfg["batch-size"])
        new_state, loss = local_update(
            state, x, y, spec=spec, n_classes=n_classes, epochs=int(cfg["local-epochs"]),
            batch_size=None if batch <= 0 else batch, lr=float(cfg["lr"]),
            seed=derive_seed(int(cfg["seed"]), "client", int(cfg["server-round"]), pid), device=device)
        arrays = ArrayRecord({k: _array(new_state[k]) for k in state})
        metrics = MetricRecord({"train-loss": loss, "num-examples": len(y)})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @app.query()
    def query(msg, context):
        pid, _, y = _rows(context)
        info = ConfigRecord({"partition-id": pid, "num-examples": len(y)})
        return Message(RecordDict({"info": info}), reply_to=msg)

    return app


def _array(value: np.ndarray):
    from flwr.app import Array

    return Array(np.ascontiguousarray(value))


def _seeded_fedavg_class():
    # Made on first use: Flower is an optional dependency, imported only when a simulation runs.
    from flwr.app import MessageType, RecordDict
    from flwr.serverapp.strategy import FedAvg

    class SeededFedAvg(FedAvg):
        """Flower's FedAvg with seeded client selection and a fixed aggregation order.

        Only ``configure_train`` (which clients) and the order of the replies
        handed to ``FedAvg.aggregate_train`` (the weighted average itself is
        Flower's) differ from the parent class; see the module docstring.
        """

        def __init__(self, *, partition_of: dict[int, int], seed: int, fraction_train: float) -> None:
            super().__init__(fraction_train=fraction_train, min_train_nodes=1,
                             min_available_nodes=len(partition_of))
            self.partition_of = dict(partition_of)
            self.node_of = {pid: node for node, pid in partition_of.items()}
            self.seed = int(seed)
            self.last_selected: np.ndarray = np.zeros(0, np.int64)

        def configure_train(self, server_round, arrays, config, grid):
            m = clients_per_round(len(self.node_of), self.fraction_train)
            self.last_selected = select_clients(len(self.node_of), m, seed=self.seed, server_round=server_round)
            config["server-round"] = server_round
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            nodes = [self.node_of[int(p)] for p in self.last_selected]
            return self._construct_messages(record, nodes, MessageType.TRAIN)

        def aggregate_train(self, server_round, replies):
            replies = sorted(replies, key=lambda r: self.partition_of.get(r.metadata.src_node_id, -1))
            return super().aggregate_train(server_round, replies)

    return SeededFedAvg


def _wait_for_nodes(grid, n: int, timeout: float = 300.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Flower simulation: only {len(nodes)} of {n} virtual clients registered "
                               f"after {timeout:.0f} s")
        time.sleep(0.05)
    return nodes


def _failed(replies: list, expected: int, what: str) -> None:
    errors = [r for r in replies if r.has_error()]
    if errors or len(replies) < expected:
        reason = errors[0].error.reason if errors else f"{expected - len(replies)} replies timed out"
        raise RuntimeError(f"Flower simulation: {what}: {len(errors)} of {expected} clients failed: {reason}")


def _client_gpus(device: torch.device) -> float:
    """The GPUs each client's Ray actor reserves: none on the CPU; on a GPU, the share of Ray's GPUs that lets
    an actor run on every CPU at once (Ray sets each actor's ``CUDA_VISIBLE_DEVICES`` to the GPU it gets; where
    Ray finds none, the clients fail with the one-line error of a device not found)."""
    if device.type != "cuda":
        return 0.0
    import ray

    resources = ray.cluster_resources()
    return float(resources.get("GPU", 0)) / max(1.0, float(resources.get("CPU", 1)))


# --------------------------------------------------------------------------- the API


def run_federated(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    algorithm: str = "fedavg",
    n_clients: int = 100,
    partition: str = "iid",
    shards_per_client: int = 2,
    client_fraction: float = 0.1,
    local_epochs: int = 5,
    batch_size: int | None = 10,
    lr: float = 0.3,
    rounds: int = 100,
    target_accuracy: float | None = None,
    seed: int = 0,
    spec: str = "mlp:200x2",
    n_classes: int | None = None,
    num_cpus: int | None = None,
    progress: Callable[[dict], None] | None = None,
    device: str | None = None,
) -> FederatedResult:
    """Train one global model with FedAvg or FedSGD on Flower's simulation engine; accuracy per round.

    Args:
        x: ``(n, *input_shape)`` training inputs, split among the clients.
        y: ``(n,)`` integer training labels.
        x_test: ``(n_test, *input_shape)`` inputs of the server-side evaluation.
        y_test: ``(n_test,)`` labels.
        algorithm: ``"fedavg"`` (``local_epochs`` epochs of minibatch SGD of
            ``batch_size`` per round) or ``"fedsgd"`` (one full-batch gradient
            step per round; ``local_epochs``/``batch_size`` are not used).
        n_clients: virtual clients (1 <= n_clients <= n).
        partition: ``"iid"`` (:func:`~fitscope.privacy.partition.iid_partition`)
            or ``"noniid"`` (:func:`~fitscope.privacy.partition.shard_partition`
            with ``shards_per_client`` shards each).
        shards_per_client: shards per client of the non-IID split (McMahan: 2).
        client_fraction: in (0, 1] (McMahan's C); ``max(1, floor(client_fraction * n_clients))`` clients
            train per round.
        local_epochs: E >= 1 (FedAvg).
        batch_size: B >= 1, or None for the client's whole data (FedAvg).
        lr: client SGD learning rate.
        rounds: most rounds to run.
        target_accuracy: stop after the first round whose test accuracy
            reaches it (None: run all ``rounds``).
        seed: seeds the partition, initial model, client selection and local training.
        spec: model spec (``fitscope models list``); McMahan's "2NN" is ``mlp:200x2``.
        n_classes: number of classes (default: largest label + 1).
        num_cpus: CPUs of the local Ray (default: this machine's); one client
            trains per CPU at a time.
        progress: called after every round with ``{"round", "rounds",
            "accuracy", "seconds"}`` (from Flower's server thread).
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            The server evaluates there (the test set copied there once); on a GPU each
            client's Ray actor reserves a share of the GPUs Ray finds (all the actors
            fit at once) and trains on its GPU. Example orders are drawn on the CPU.

    Returns:
        A :class:`FederatedResult`.

    Raises:
        DataError: bad arrays. ConfigError: a bad setting, a bad spec, a device not found,
            or Flower not installed.
        RuntimeError: the simulation failed (a client raised; the message names it).
    """
    t0 = time.perf_counter()
    x, y = _check_arrays(x, y, "x", "y")
    x_test, y_test = _check_arrays(x_test, y_test, "x_test", "y_test")
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(message("x_test", f"inputs of shape (n, {', '.join(map(str, x.shape[1:]))}) like x",
                                f"shape {x_test.shape}"))
    seed = check_seed(seed)
    check_settings(algorithm=algorithm, partition=partition, n_clients=n_clients, n_train=len(y),
                   client_fraction=client_fraction, local_epochs=local_epochs, batch_size=batch_size, lr=lr,
                   rounds=rounds, target_accuracy=target_accuracy, shards_per_client=shards_per_client)
    largest = int(max(y.max(), y_test.max())) + 1
    n_classes = largest if n_classes is None else check_int(n_classes, "n_classes")
    if n_classes < largest:
        raise DataError(message("n_classes", f"at least {largest} (the labels go up to {largest - 1})", str(n_classes)))
    input_shape = tuple(int(s) for s in x.shape[1:])
    check_input_shape(parse_spec(spec), input_shape)
    num_cpus = check_int(num_cpus, "num_cpus", allow_none=True)
    dev = placement_device(device)
    if algorithm == "fedsgd":
        local_epochs, batch_size = 1, None
    _import_flower()
    xt_test, yt_test = _on(x_test, torch.float32, dev), _on(y_test, torch.int64, dev)

    parts = make_partition(y, partition=partition, n_clients=n_clients, shards_per_client=shards_per_client,
                           seed=derive_seed(seed, "partition"))
    init = initial_state(spec, input_shape, n_classes, seed=derive_seed(seed, "model"))
    m = clients_per_round(n_clients, client_fraction)
    settings = dict(algorithm=algorithm, partition=partition, n_clients=n_clients, clients_per_round=m,
                    client_fraction=client_fraction, shards_per_client=shards_per_client,
                    local_epochs=local_epochs, batch_size=batch_size, lr=lr, rounds=rounds,
                    target_accuracy=target_accuracy, seed=seed, spec=spec, n_classes=n_classes,
                    n_train=len(y), n_test=len(y_test))

    history: dict[str, list] = {"accuracy": [], "loss": [], "train_loss": [], "seconds": [], "clients": [],
                                "weights": []}
    marks: dict[str, float] = {}
    train_config = {"lr": float(lr), "local-epochs": int(local_epochs),
                    "batch-size": 0 if batch_size is None else int(batch_size), "seed": int(seed)}

    import ray
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    SeededFedAvg = _seeded_fedavg_class()
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        nodes = _wait_for_nodes(grid, n_clients)
        queries = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
        replies = list(grid.send_and_receive(queries, timeout=ROUND_TIMEOUT_S))
        _failed(replies, len(nodes), "asking the clients for their partition ids")
        partition_of = {r.metadata.src_node_id: int(r.content["info"]["partition-id"]) for r in replies}
        strategy = SeededFedAvg(partition_of=partition_of, seed=seed, fraction_train=client_fraction)
        state = dict(init)
        arrays = ArrayRecord({k: _array(v) for k, v in state.items()})
        acc, loss = evaluate_state(state, xt_test, yt_test, spec=spec, n_classes=n_classes, device=dev)
        history["accuracy"].append(acc)
        history["loss"].append(loss)
        marks["start"] = time.perf_counter()
        for server_round in range(1, rounds + 1):
            t_round = time.perf_counter()
            messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(dict(train_config)), grid))
            replies = list(grid.send_and_receive(messages, timeout=ROUND_TIMEOUT_S))
            _failed(replies, len(messages), f"round {server_round}")
            arrays, metrics = strategy.aggregate_train(server_round, replies)
            state = {k: v.numpy() for k, v in arrays.items()}
            acc, loss = evaluate_state(state, xt_test, yt_test, spec=spec, n_classes=n_classes, device=dev)
            seconds = time.perf_counter() - t_round
            history["accuracy"].append(acc)
            history["loss"].append(loss)
            history["train_loss"].append(float(metrics["train-loss"]) if metrics is not None else float("nan"))
            history["seconds"].append(seconds)
            history["clients"].append(strategy.last_selected.copy())
            history["weights"] = [state]
            if progress is not None:
                progress({"round": server_round, "rounds": rounds, "accuracy": acc, "seconds": seconds})
            if target_accuracy is not None and acc >= target_accuracy:
                break

    with _quiet_flower():
        if not ray.is_initialized():
            from fitscope.runs.executors import machine_cpus

            ray.init(address="local", num_cpus=num_cpus or machine_cpus(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        data_ref = ray.put((x, y))
        parts_ref = ray.put(parts)
        client_app = make_client_app(spec=spec, n_classes=n_classes, data_ref=data_ref, parts_ref=parts_ref,
                                     device=dev.type)
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": _client_gpus(dev)}})
    if len(history["accuracy"]) < 2:
        raise RuntimeError("Flower simulation ended before the first round finished (see Flower's log above)")

    accuracy = np.asarray(history["accuracy"], dtype=np.float64)
    reached = np.flatnonzero(accuracy[1:] >= target_accuracy) if target_accuracy is not None else np.zeros(0)
    import flwr

    settings["versions"] = {"flwr": flwr.__version__, "ray": ray.__version__, "torch": torch.__version__}
    settings["seeds"] = {"partition": derive_seed(seed, "partition"), "model": derive_seed(seed, "model")}
    return FederatedResult(
        algorithm=algorithm,
        partition=partition,
        accuracy=accuracy,
        loss=np.asarray(history["loss"], dtype=np.float64),
        train_loss=np.asarray(history["train_loss"], dtype=np.float64),
        round_seconds=np.asarray(history["seconds"], dtype=np.float64),
        clients=np.stack(history["clients"]).astype(np.int64),
        rounds_to_target=int(reached[0]) + 1 if len(reached) else None,
        target_accuracy=target_accuracy,
        wall_seconds=time.perf_counter() - t0,
        startup_seconds=marks.get("start", t0) - t0,
        client_sizes=np.asarray([len(p) for p in parts], dtype=np.int64),
        weights={k: np.array(v) for k, v in history["weights"][0].items()},
        settings=settings,
    )


# --------------------------------------------------------------------------- the in-process engine (no Flower)


def run_federated_in_process(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    algorithm: str = "fedavg",
    n_clients: int = 100,
    partition: str = "iid",
    shards_per_client: int = 2,
    client_fraction: float = 0.1,
    local_epochs: int = 5,
    batch_size: int | None = 10,
    lr: float = 0.3,
    rounds: int = 100,
    target_accuracy: float | None = None,
    seed: int = 0,
    spec: str = "mlp:200x2",
    n_classes: int | None = None,
    progress: Callable[[dict], None] | None = None,
    device: str | None = None,
) -> FederatedResult:
    """:func:`run_federated` as a plain loop in this process, reproducing Flower's weighted-average order.

    No Flower, no Ray: the same algorithm with the same numbers bit for bit
    (what a unit runs where Flower cannot, e.g. inside a Ray task). The same
    seeded partition, initial model and client selection; each selected
    client's :func:`local_update` with one torch thread (as a Flower client
    runs it), in partition-id order (the order :func:`run_federated`'s
    strategy sorts the replies into); Flower's weighted average in Flower's
    order (``w = n_1/n w_1``, then ``+= n_k/n w_k``, in float32:
    :func:`_flower_average`) and the weighted mean of the clients' training
    losses; the test-set evaluation with this process's torch threads (as
    Flower's server runs it). Arguments and result as :func:`run_federated`
    (no ``num_cpus``; ``result.engine == "in-process"``); the clients train
    one after another.

    ``device``: torch device; None: the placement's, see :mod:`fitscope.train.device`.
    The training and test arrays are copied there once and each client's rows
    gathered there; the weights go through NumPy between rounds (as a Flower
    message carries them); the random draws are made on the CPU, so they are
    the same on every device.
    """
    t0 = time.perf_counter()
    x = np.asarray(x).astype(np.float32, copy=False)
    y = np.asarray(y).astype(np.int64, copy=False)
    x_test = np.asarray(x_test).astype(np.float32, copy=False)
    y_test = np.asarray(y_test).astype(np.int64, copy=False)
    check_settings(algorithm=algorithm, partition=partition, n_clients=n_clients, n_train=len(y),
                   client_fraction=client_fraction, local_epochs=local_epochs, batch_size=batch_size, lr=lr,
                   rounds=rounds, target_accuracy=target_accuracy, shards_per_client=shards_per_client)
    seed = check_seed(seed)
    dev = placement_device(device)
    n_classes = int(max(y.max(), y_test.max())) + 1 if n_classes is None else int(n_classes)
    input_shape = tuple(int(s) for s in x.shape[1:])
    check_input_shape(parse_spec(spec), input_shape)
    if algorithm == "fedsgd":
        local_epochs, batch_size = 1, None
    parts = make_partition(y, partition=partition, n_clients=n_clients, shards_per_client=shards_per_client,
                           seed=derive_seed(seed, "partition"))
    state = initial_state(spec, input_shape, n_classes, seed=derive_seed(seed, "model"))
    m = clients_per_round(n_clients, client_fraction)
    xt, yt = _on(x, torch.float32, dev), _on(y, torch.int64, dev)
    xt_test, yt_test = _on(x_test, torch.float32, dev), _on(y_test, torch.int64, dev)
    rows = [torch.from_numpy(np.asarray(part, np.int64)).to(dev) for part in parts]
    acc, loss = evaluate_state(state, xt_test, yt_test, spec=spec, n_classes=n_classes, device=dev)
    accuracy, losses, train_losses, seconds, chosen_all = [acc], [loss], [], [], []
    start = time.perf_counter()
    for server_round in range(1, rounds + 1):
        t_round = time.perf_counter()
        chosen = select_clients(n_clients, m, seed=seed, server_round=server_round)
        replies = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a Flower client trains with one thread: the same float summation order
        try:
            for pid in chosen:
                new, client_loss = local_update(
                    state, xt[rows[pid]], yt[rows[pid]], spec=spec, n_classes=n_classes, epochs=local_epochs,
                    batch_size=batch_size, lr=lr, seed=derive_seed(seed, "client", server_round, int(pid)),
                    device=dev)
                replies.append((new, client_loss, len(parts[pid])))
        finally:
            torch.set_num_threads(threads)
        state, round_loss = _flower_average(replies)
        acc, loss = evaluate_state(state, xt_test, yt_test, spec=spec, n_classes=n_classes, device=dev)
        accuracy.append(acc)
        losses.append(loss)
        train_losses.append(round_loss)
        seconds.append(time.perf_counter() - t_round)
        chosen_all.append(chosen)
        if progress is not None:
            progress({"round": server_round, "rounds": rounds, "accuracy": acc, "seconds": seconds[-1]})
        if target_accuracy is not None and acc >= target_accuracy:
            break
    acc_arr = np.asarray(accuracy, dtype=np.float64)
    reached = np.flatnonzero(acc_arr[1:] >= target_accuracy) if target_accuracy is not None else np.zeros(0)
    settings = dict(algorithm=algorithm, partition=partition, n_clients=n_clients, clients_per_round=m,
                    client_fraction=client_fraction, shards_per_client=shards_per_client,
                    local_epochs=local_epochs, batch_size=batch_size, lr=lr, rounds=rounds,
                    target_accuracy=target_accuracy, seed=seed, spec=spec, n_classes=n_classes,
                    n_train=len(y), n_test=len(y_test), versions={"torch": torch.__version__},
                    seeds={"partition": derive_seed(seed, "partition"), "model": derive_seed(seed, "model")})
    return FederatedResult(
        algorithm=algorithm, partition=partition, accuracy=acc_arr,
        loss=np.asarray(losses, dtype=np.float64), train_loss=np.asarray(train_losses, dtype=np.float64),
        round_seconds=np.asarray(seconds, dtype=np.float64), clients=np.stack(chosen_all).astype(np.int64),
        rounds_to_target=int(reached[0]) + 1 if len(reached) else None, target_accuracy=target_accuracy,
        wall_seconds=time.perf_counter() - t0, startup_seconds=start - t0,
        client_sizes=np.asarray([len(p) for p in parts], dtype=np.int64),
        weights={k: np.array(v) for k, v in state.items()}, settings=settings, engine="in-process")


def _flower_average(replies: list[tuple[dict, float, int]]) -> tuple[dict, float]:
    """Flower's ``aggregate_arrayrecords`` / ``aggregate_metricrecords`` on ``(weights, loss, examples)`` replies."""
    total = sum(n for _, _, n in replies)
    factors = [n / total for _, _, n in replies]
    merged: dict[str, np.ndarray] = {}
    loss = 0.0
    for i, ((state, client_loss, _), factor) in enumerate(zip(replies, factors)):
        for key, value in state.items():
            if key not in merged:
                merged[key] = np.array(value) * factor
            else:
                merged[key] += np.array(value) * factor
        loss = client_loss * factor if i == 0 else loss + client_loss * factor
    return {k: np.asarray(v) for k, v in merged.items()}, float(loss)
