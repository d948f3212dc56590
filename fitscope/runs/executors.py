"""Executors: run a job's independent tasks in this process (``local``) or as Ray tasks (``ray``).

A job (an audit, a study) splits its work into *tasks* (typically one
batched ensemble each) and hands them to an executor::

    from fitscope.runs import make_executor

    with make_executor(args.executor, address=args.address, threads_per_task=args.threads) as ex:
        todo = [t for t in tasks if not run.has_unit(t.key)]
        for i, result in ex.map_unordered(train_task, todo, shared={"x": x, "y": y}):
            run.save_unit(todo[i].key, result)     # stored at once: a crash loses only tasks in flight

Each call is ``fn(task, **shared)``; results come back as ``(index into
tasks, result)`` pairs in the order the tasks *finish* (``local``: in order).

The task function
-----------------
``fn`` must be a plain module-level function of its arguments: no lambdas,
no nested functions or closures, no bound methods, and no hidden globals
(module state it reads or writes). What a task computes must follow from
``task`` and ``shared`` alone: that is what lets the ``local`` and ``ray``
executors give the same bits, and what lets Ray ship the function to another
machine by name. The ``ray`` executor rejects lambdas, closures and methods
with a :class:`~fitscope.errors.ConfigError`; the ``local`` executor takes
any callable but a job should not rely on that. ``shared`` values reach the
task read-only (NumPy arrays in the Ray object store are read-only, and the
``local`` executor hands read-only views so a task that writes to them fails
the same way in both). Tasks must not write to the run directory; return
arrays and let the caller ``run.save_unit`` them.

Threads and identical results
-----------------------------
Floating-point results of torch can differ with the number of intra-op
threads (a different blocking of the same sums). So every task runs with a
fixed thread count, ``threads_per_task``, in *both* executors: the task
wrapper sets ``torch.set_num_threads(threads_per_task)`` and
``FITSCOPE_NUM_THREADS`` (which :func:`fitscope.train.configure_threads`,
called by every training function, reads at each call) for the duration of
the task and restores both afterwards (:func:`pinned_threads`). A Ray task reserves ``num_cpus=threads_per_task``,
so ``num_cpus // threads_per_task`` tasks run at once on each machine.
The default, the same for both executors, is ``FITSCOPE_NUM_THREADS`` if set,
else 1 (one thread per task and one task per core is the most throughput for
batched ensembles of small models under Ray; the ``local`` executor then
uses one core: pass ``threads_per_task=N`` to use N cores there, and run the
Ray side with the same N to get the same bits). Record
:attr:`Executor.threads_per_task` in the run's config: results are only
bitwise identical between runs with the same value.

Devices
-------
Every task also runs on one torch device, ``device``: ``"cpu"`` (default),
``"cuda"`` or ``"auto"`` (a GPU when one is found: by torch in this process
for ``local``, in the cluster's resources for ``ray``; else the CPU, so the
same command runs on a CPU-only cluster). The executor resolves it before
any task runs (:func:`fitscope.runs.devices.resolve_device`: a CUDA device
that is not there is a one-line error naming the devices found) and the task
wrapper pins it (:func:`fitscope.runs.devices.pinned_device`), so a training
or kernel call inside the task that is given no ``device`` uses it. Like the
threads, it is placement, recorded in :attr:`Executor.info`, not part of a
job's config. A Ray task on CUDA reserves ``gpus_per_task`` GPUs (Ray's
``num_gpus``, default 1; a fraction such as 0.25 lets four units share a
GPU) beside its ``num_cpus``; Ray then shows the task only its own GPU
(``CUDA_VISIBLE_DEVICES``), so ``"cuda"`` inside it is that GPU. Results
differ in their last bits between devices (other kernels, other dropout
generators); on one device they are the same whichever executor ran them.

On a cluster
------------
Install the same versions of fitscope, torch and ray (``pip install
'fitscope[ray]'``) on every machine, with the data reachable at the same path
(or built-in), then::

    ray start --head --num-cpus=<cores>            # on the head machine
    ray start --address=HEAD:6379                  # on every other machine
    fitscope audit ... --executor ray --address HEAD:6379   # on the head (or any machine of the cluster)

Without ``--address`` the ``ray`` executor starts a private Ray on this
machine with its cores (the CPU affinity mask is respected; ``num_cpus``
overrides) and shuts it down when the job ends; with ``--address`` it joins
the running cluster and leaves it running.

How far one machine goes
------------------------
Memory is bounded by the result arrays plus what is in flight: the shared
arrays are put into the Ray object store once (not once per task), at most
``max_in_flight`` tasks (default: twice the number that can run at once) are
submitted at a time, and each result is handed to the caller, who stores it
and drops it, as soon as it finishes. A K-model audit of n examples keeps
K x n correctness bits/bytes per stored unit; the training work is what
limits one machine: on 2 cores, about a thousand MLP-512x2 subset models on
digits (n ~ 1,300) take minutes; tens of thousands of models, or data sets of
~10^5 examples, call for a cluster.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import inspect
import math
import time
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from fitscope.errors import ConfigError, FitscopeError
from fitscope.runs.devices import pinned_device, resolve_device
from fitscope.validation import check_choice, check_int, check_number, message, shorten

EXECUTORS = ("local", "ray")
_THREADS_ENV = "FITSCOPE_NUM_THREADS"


class TaskError(RuntimeError):
    """A task raised an exception that is not a user error; names the task and keeps the cause.

    Attributes:
        index: the index of the failed task in the ``tasks`` sequence.
    """

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class TaskLost(FitscopeError):
    """A task could not finish because the machinery under it failed (a Ray worker or node died), retries spent.

    Not a bug in the task: its units are pure and idempotent, so running the job again
    (``--resume``) finishes it. Attributes: ``index``, the failed task's index.
    """

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def machine_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def env_threads() -> int | None:
    """``FITSCOPE_NUM_THREADS`` read now, as a positive int; None when it is not set (or empty).

    The one parser of that variable: the executors' default and the training
    functions' thread rule (:func:`fitscope.train.configure_threads`) both use it.

    Raises:
        ConfigError: it is set but not a positive integer.
    """
    env = os.environ.get(_THREADS_ENV)
    if not env:
        return None
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(message(_THREADS_ENV, "an integer >= 1", repr(env)))
    return value


def default_threads_per_task() -> int:
    """The thread count of a task when none is given: ``FITSCOPE_NUM_THREADS`` if set, else 1."""
    value = env_threads()
    return 1 if value is None else value


def takes_progress(fn: Callable) -> bool:
    """Whether ``fn`` accepts a ``progress`` keyword (then executors hand it a per-task progress callable)."""
    try:
        return "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _no_progress(done: int) -> None:
    """The progress callable of a task nobody watches."""


def run_task(fn: Callable, threads: int, task: Any, progress: Callable[[int], None] | None = None,
             device: str = "cpu", /, **shared: Any) -> Any:
    """Run ``fn(task, **shared)`` with torch pinned to ``threads`` intra-op threads on ``device``, then restore them.

    This is what both executors run for every task (the Ray executor runs it
    as a Ray task), so a task sees the same thread count wherever it runs.
    ``device`` (resolved, e.g. ``"cuda"``) is the placement's device:
    :func:`fitscope.runs.devices.pinned_device` makes it the default of every
    training and kernel call of the task that is given no ``device``.
    If ``fn`` takes a ``progress`` keyword it gets ``progress`` (or a no-op):
    a callable of one int, the work done so far in this task (e.g. model-epochs).
    Progress never changes what a task computes.
    """
    with pinned_threads(threads), pinned_device(device):
        with warnings.catch_warnings():
            # Shared arrays are read-only on purpose (see the module docstring); torch warns when it wraps one.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            if takes_progress(fn):
                return fn(task, progress=progress or _no_progress, **shared)
            return fn(task, **shared)


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[int]:
    """Set torch's intra-op threads and ``FITSCOPE_NUM_THREADS`` to ``threads`` inside the block; restore both.

    ``FITSCOPE_NUM_THREADS`` is set too so that a training call inside the
    block (which reads it at every call, see :mod:`fitscope.train.threads`)
    keeps the pinned count rather than a value from the caller's environment.
    """
    import torch  # lazily: fitscope.runs does not need torch otherwise

    threads = check_int(threads, "threads")
    before_threads = torch.get_num_threads()
    before_env = os.environ.get(_THREADS_ENV)
    os.environ[_THREADS_ENV] = str(threads)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before_threads)
        if before_env is None:
            os.environ.pop(_THREADS_ENV, None)
        else:
            os.environ[_THREADS_ENV] = before_env


def _task_failure(err: BaseException, index: int, n_tasks: int, fn: Callable) -> Exception:
    """The error to raise for task ``index``: user errors keep their class, others become TaskError."""
    text = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, FitscopeError):
        try:
            out = type(err)(f"task {index} of {n_tasks}: {text}")
        except Exception:  # noqa: BLE001 - an error class with another signature
            out = TaskError(f"task {index} of {n_tasks} ({_name(fn)}) failed: {type(err).__name__}: {text}", index)
        out.index = index  # type: ignore[attr-defined]
        return out
    what = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return TaskError(f"task {index} of {n_tasks} ({_name(fn)}) failed: {what}", index)


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


class ProgressBoard:
    """A Ray actor's class: tasks post their progress here, the driver drains it (latest count per task)."""

    def __init__(self) -> None:
        self._latest: dict[int, int] = {}

    def report(self, index: int, done: int) -> None:
        """Record that task ``index`` has done ``done`` units of work."""
        self._latest[index] = done

    def drain(self) -> dict[int, int]:
        """The counts posted since the last drain."""
        out, self._latest = self._latest, {}
        return out


class RayTicker:
    """The ``progress`` callable a Ray task gets: posts to a :class:`ProgressBoard`, at most twice a second."""

    def __init__(self, board: Any, index: int) -> None:
        self.board = board
        self.index = index
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5:
            self._last = now
            self.board.report.remote(self.index, int(done))


def _check_shared(shared: dict | None) -> dict:
    if shared is None:
        return {}
    if not isinstance(shared, dict) or not all(isinstance(k, str) and k.isidentifier() for k in shared):
        raise ConfigError(message("shared", "a dict of keyword-argument name -> value (names must be identifiers)",
                                  shorten(shared)))
    return shared


def check_task_function(fn: Any) -> Callable:
    """Check that ``fn`` is a plain module-level function (what a Ray task can run); return it.

    Raises:
        ConfigError: ``fn`` is a lambda, a nested function or closure, a
            method, or not a Python function at all.
    """
    ok = inspect.isfunction(fn) and "<" not in fn.__qualname__ and "." not in fn.__qualname__
    if ok:
        module = sys.modules.get(fn.__module__)
        ok = module is not None and getattr(module, fn.__qualname__, None) is fn
    if not ok:
        raise ConfigError(message("fn", "a plain module-level function of its arguments (no lambda, closure or "
                                  "method) so that it runs the same as a Ray task", repr(_name(fn))))
    return fn


class Executor(abc.ABC):
    """Runs independent tasks and yields their results as they finish.

    Subclasses: :class:`LocalExecutor` (in this process, in order) and
    :class:`RayExecutor` (Ray tasks, locally or on a cluster). Make one with
    :func:`make_executor`; use it as a context manager (or call
    :meth:`close`).

    Attributes:
        name: ``"local"`` or ``"ray"``.
        threads_per_task: torch intra-op threads every task runs with.
        device: the torch device every task computes on (resolved: ``"cpu"``,
            ``"cuda"``, ``"cuda:1"``); see :mod:`fitscope.runs.devices`.
    """

    name: str = "executor"
    device: str = "cpu"

    def __init__(self, *, threads_per_task: int | None = None) -> None:
        self.threads_per_task = (default_threads_per_task() if threads_per_task is None
                                 else check_int(threads_per_task, "threads_per_task"))

    @property
    def parallelism(self) -> int:
        """How many tasks run at once."""
        return 1

    @property
    def info(self) -> dict:
        """What to record about the executor in a run: name, threads per task, parallelism, device."""
        return {"name": self.name, "threads_per_task": self.threads_per_task, "parallelism": self.parallelism,
                "device": self.device}

    @abc.abstractmethod
    def map_unordered(self, fn: Callable, tasks: Sequence, *, shared: dict | None = None,
                      progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, Any]]:
        """Run ``fn(task, **shared)`` for every task; yield ``(index, result)`` as each finishes.

        Args:
            fn: a plain module-level function of its arguments (see the module docstring).
            tasks: the tasks; each is handed to ``fn`` as its first argument.
            shared: optional keyword arguments handed to every call (read-only);
                the Ray executor stores each value once in the object store.
            progress: optional ``progress(index, done)``, called in this process
                while task ``index`` runs with the work it has done so far, when
                ``fn`` takes a ``progress`` keyword (within a second or so under Ray).

        Yields:
            ``(index into tasks, result)``, one pair per task, in the order
            the tasks finish.

        Raises:
            TaskError: a task raised an exception (named by its index; the
                exception is the ``__cause__`` when it could be kept). A
                :class:`~fitscope.errors.FitscopeError` raised in a task keeps
                its class, with ``task i of n:`` before its message. Tasks not
                yet finished are cancelled; pairs already yielded stay valid.
        """

    def close(self) -> None:
        """Release what the executor holds (a Ray it started). Idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads_per_task={self.threads_per_task})"


def _for_object_store(value: Any) -> Any:
    """``value`` as ``ray.put`` stores it once and every task reads it without a copy.

    Ray hands a task a read-only NumPy view of the object store's shared
    memory only for a plain ``np.ndarray`` in C or Fortran order (pickled
    out of band). A subclass, ``np.memmap`` among them, and a strided view
    are pickled as bytes instead, and every task then unpickles its own
    writable copy. So a memory map is put as a plain view of its pages (read
    once, while Ray copies it into the store) and a strided view is made
    contiguous here, once, rather than in every task.
    """
    if isinstance(value, np.ndarray) and value.dtype != object:
        if type(value) is not np.ndarray:
            value = value.view(np.ndarray)
        if not (value.flags.c_contiguous or value.flags.f_contiguous):
            value = np.ascontiguousarray(value)
    return value


def _read_only(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.flags.writeable:
        value = value.view()
        value.flags.writeable = False
    return value


class LocalExecutor(Executor):
    """Runs the tasks in this process, one after another, in order.

    Args:
        threads_per_task: torch intra-op threads for every task (default:
            ``FITSCOPE_NUM_THREADS`` if set, else 1); restored after each task.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or ``"auto"`` (a GPU of
            this machine when torch finds one, else the CPU): every task's device.

    Raises:
        ConfigError: a device that is not found here (the message names those found).
    """

    name = "local"

    def __init__(self, *, threads_per_task: int | None = None, device: str = "cpu") -> None:
        super().__init__(threads_per_task=threads_per_task)
        self.device = resolve_device(device, "--device")

    def map_unordered(self, fn: Callable, tasks: Sequence, *, shared: dict | None = None,
                      progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, Any]]:
        """Run ``fn(task, **shared)`` for each task in order; see :meth:`Executor.map_unordered`."""
        if not callable(fn):
            raise ConfigError(message("fn", "a callable", type(fn).__name__))
        shared = {k: _read_only(v) for k, v in _check_shared(shared).items()}
        return self._iterate(fn, list(tasks), shared, progress)

    def _iterate(self, fn: Callable, tasks: list, shared: dict, progress) -> Iterator[tuple[int, Any]]:
        for index, task in enumerate(tasks):
            tick = functools.partial(progress, index) if progress is not None else None
            try:
                result = run_task(fn, self.threads_per_task, task, tick, self.device, **shared)
            except Exception as err:
                raise _task_failure(err, index, len(tasks), fn) from err
            yield index, result


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray': the ray package is not installed; pip install 'fitscope[ray]'") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast with a one-line error when ``HOST:PORT`` refuses connections (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
            pass
    except OSError as err:
        raise ConfigError(f"--address {address}: cannot connect ({err.strerror or err}); is `ray start --head` "
                          "running there, and is the port open?") from None


class RayExecutor(Executor):
    """Runs every task as a Ray task, on a local Ray or an existing cluster.

    Args:
        address: a running cluster's address (``HEAD:6379``, ``auto``,
            ``ray://HEAD:10001``). None: use the Ray this process already
            started, if any, else start a local Ray with ``num_cpus`` CPUs.
        num_cpus: CPUs of a Ray started here (default: this machine's CPUs,
            honouring the affinity mask). Not allowed with ``address``.
        threads_per_task: torch threads of every task, also the CPUs each task
            reserves (default: ``FITSCOPE_NUM_THREADS`` if set, else 1).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (``"cuda"`` when the cluster
            has GPUs, else ``"cpu"``: the same command runs on a CPU-only cluster).
        gpus_per_task: GPUs each task reserves (Ray's ``num_gpus``) with a CUDA
            device, in (0, 1]; a fraction lets several units share a GPU
            (``0.25``: four at once). Default 1 on CUDA, 0 on the CPU.
        max_in_flight: most tasks submitted at once (default: twice
            :attr:`parallelism`), which bounds the memory held by pending
            arguments and unread results.
        max_retries: times a task lost with its worker or node (not one that
            raised) is run again before :class:`TaskLost` is raised.

    If this process has already called ``ray.init`` (a test fixture, a
    notebook), that Ray is used whatever ``address`` says. Ray is shut down
    by :meth:`close` only if this executor started it (or connected to it).

    Raises:
        ConfigError: ray is not installed, ``num_cpus`` with ``address``, no
            machine of the cluster has ``threads_per_task`` CPUs, ``cuda`` on a
            cluster without GPUs, or ``gpus_per_task`` that does not fit the device.
    """

    name = "ray"
    gpus_per_task: float = 0.0

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        threads_per_task: int | None = None,
        device: str = "cpu",
        gpus_per_task: float | None = None,
        max_in_flight: int | None = None,
        max_retries: int = 3,
    ) -> None:
        super().__init__(threads_per_task=threads_per_task)
        if gpus_per_task is not None:
            gpus_per_task = check_number(gpus_per_task, "--gpus-per-task", low=0.0, high=1.0)
        ray = _import_ray()
        if address is not None and num_cpus is not None:
            raise ConfigError(message("address, num_cpus", "one of them, not both: --address joins a cluster, "
                                      "num_cpus starts a local Ray", "both"))
        num_cpus = check_int(num_cpus, "num_cpus", allow_none=True)
        max_in_flight = check_int(max_in_flight, "max_in_flight", allow_none=True)
        self._ray = ray
        self._started = False
        self.address = address
        if not ray.is_initialized():
            if address is None:
                num_cpus = machine_cpus() if num_cpus is None else num_cpus
                if self.threads_per_task > num_cpus:
                    raise ConfigError(message("threads_per_task", f"at most the {num_cpus} CPUs of the local Ray",
                                              str(self.threads_per_task)))
                # address="local": always a Ray of our own, never one that some other job left running here
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
            else:
                _check_reachable(address)
                try:
                    ray.init(address=address, include_dashboard=False)
                except (ConnectionError, ValueError, RuntimeError) as err:
                    text = str(err).splitlines()[0] if str(err) else type(err).__name__
                    raise ConfigError(f"--address {address}: cannot connect to a Ray cluster: {text}") from None
            self._started = True
        largest = max((node.get("Resources", {}).get("CPU", 0) for node in ray.nodes() if node.get("Alive")),
                      default=0)
        if self.threads_per_task > largest:
            self.close()
            raise ConfigError(message("threads_per_task", f"at most the {largest:g} CPUs of the largest machine in "
                                      "the Ray cluster (no task could run)", str(self.threads_per_task)))
        try:
            self.device, self.gpus_per_task = self._placement(device, gpus_per_task)
        except ConfigError:
            self.close()
            raise
        self._max_in_flight = max_in_flight
        self._max_retries = check_int(max_retries, "max_retries", low=0)
        # Units are pure and idempotent: a task lost with its worker or node is simply run again elsewhere.
        # Exceptions raised by the task itself are not retried (retry_exceptions=False): they would recur.
        #: the Ray options of every task: its CPUs and GPUs, and the retries
        self.task_options = dict(num_cpus=self.threads_per_task, num_gpus=self.gpus_per_task,
                                 max_retries=self._max_retries, retry_exceptions=False)
        self._remote = ray.remote(run_task).options(**self.task_options)

    def _placement(self, device: str, gpus_per_task: float | None) -> tuple[str, float]:
        """The device of the tasks (resolved against the cluster's GPUs) and the GPUs each reserves."""
        gpus = int(sum(node.get("Resources", {}).get("GPU", 0) for node in self._ray.nodes() if node.get("Alive")))
        resolved = resolve_device(device, "--device", gpus=gpus, cluster=True)
        if resolved == "cpu":
            if gpus_per_task and device != "auto":  # auto on a CPU-only cluster: the same command runs on CPUs
                raise ConfigError(message("--gpus-per-task", "0 with --device cpu (a unit on the CPU needs no GPU)",
                                          shorten(gpus_per_task)))
            return resolved, 0.0
        if gpus_per_task == 0:
            raise ConfigError(message("--gpus-per-task", "a number in (0, 1] with --device cuda (Ray hides every "
                                      "GPU from a task that reserves none)", "0"))
        return resolved, 1.0 if gpus_per_task is None else gpus_per_task

    @property
    def parallelism(self) -> int:
        """How many tasks can run at once: the sum over machines of ``CPUs // threads_per_task``
        (and at most ``GPUs // gpus_per_task`` there when the tasks reserve GPUs)."""
        if not self._ray.is_initialized():
            return 1
        total = 0
        for node in self._ray.nodes():
            if node.get("Alive"):
                resources = node.get("Resources", {})
                slots = int(resources.get("CPU", 0)) // self.threads_per_task
                if self.gpus_per_task > 0:
                    slots = min(slots, math.floor(resources.get("GPU", 0) / self.gpus_per_task + 1e-9))
                total += slots
        return max(1, total)

    @property
    def info(self) -> dict:
        """Name, threads per task, parallelism, device, GPUs per task and cluster address (None: a Ray here)."""
        return {**super().info, "gpus_per_task": self.gpus_per_task, "address": self.address}

    def map_unordered(self, fn: Callable, tasks: Sequence, *, shared: dict | None = None,
                      progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, Any]]:
        """Submit ``fn(task, **shared)`` as Ray tasks; yield ``(index, result)`` as they finish.

        ``shared`` values are ``ray.put`` once and resolved by Ray into every
        task's keyword arguments; a NumPy array reaches a task as a read-only
        view of the object store's shared memory, not a copy (a memory map or
        a strided view is made a plain contiguous array first, once). A task
        lost with its worker or node is run again (``max_retries`` times) on
        the machines still alive; once the retries are spent, :class:`TaskLost`
        is raised. ``progress`` reaches
        this process through a small Ray actor, polled about twice a second.
        See :meth:`Executor.map_unordered`.
        """
        check_task_function(fn)
        shared = _check_shared(shared)
        if not self._ray.is_initialized():
            raise ConfigError("executor 'ray': used after close()")
        tasks = list(tasks)
        return self._iterate(fn, tasks, shared, progress)

    def _iterate(self, fn: Callable, tasks: list, shared: dict, progress) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        refs_shared = {key: ray.put(_for_object_store(value)) for key, value in shared.items()}
        board = None
        if progress is not None and takes_progress(fn):
            # on this (the driver's) node: a worker node that dies must not take the progress with it
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # hard affinity: with soft=True Ray placed the board on another node of a two-node cluster (the driver's
            # node is alive by definition, so a hard constraint can always be met)
            here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
            board = ray.remote(num_cpus=0)(ProgressBoard).options(scheduling_strategy=here).remote()
        limit = self._max_in_flight or 2 * self.parallelism
        pending: dict[Any, int] = {}
        next_task = 0
        try:
            while next_task < len(tasks) or pending:
                while next_task < len(tasks) and len(pending) < limit:
                    ticker = RayTicker(board, next_task) if board is not None else None
                    ref = self._remote.remote(fn, self.threads_per_task, tasks[next_task], ticker, self.device,
                                              **refs_shared)
                    pending[ref] = next_task
                    next_task += 1
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5 if board is not None else None)
                if board is not None:
                    try:
                        posted = ray.get(board.drain.remote())
                    except ray.exceptions.RayError:  # progress lost; the work goes on
                        posted, board = {}, None
                    for index, count in posted.items():
                        progress(int(index), int(count))
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        cause = err.cause if isinstance(err.cause, BaseException) else err
                        raise _task_failure(cause, index, len(tasks), fn) from cause
                    except ray.exceptions.RayError as err:  # worker or node died, retries spent
                        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
                        raise TaskLost(f"task {index} of {len(tasks)} was lost after {self._max_retries} "
                                       f"retr{'y' if self._max_retries == 1 else 'ies'} "
                                       f"({type(err).__name__}{': ' + text[:200] if text else ''})",
                                       index) from None
                    del ref
                    yield index, result
        finally:
            for ref in pending:  # an error, or the caller stopped iterating: drop the rest
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            if board is not None:
                with contextlib.suppress(Exception):
                    ray.kill(board)
            del refs_shared

    def close(self) -> None:
        """Shut Ray down if this executor started it. Idempotent."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, threads_per_task={self.threads_per_task}, "
                f"device={self.device!r}, gpus_per_task={self.gpus_per_task:g})")


def check_executor_options(name: str, *, address: str | None = None, num_cpus: int | None = None,
                           gpus_per_task: float | None = None) -> str:
    """``name`` if it is one of :data:`EXECUTORS` and the Ray-only options are left out for ``local``.

    The one check of ``--executor`` and its options: :func:`make_executor` and the study
    runner (before anything is prepared) both call it.

    Raises:
        ConfigError: an unknown name, or ``address``/``num_cpus``/``gpus_per_task`` given with ``local``.
    """
    name = check_choice(name, "--executor", EXECUTORS)
    if name == "local":
        for flag, value in (("--address", address), ("num_cpus", num_cpus), ("--gpus-per-task", gpus_per_task)):
            if value is not None:
                raise ConfigError(message(flag, "none with --executor local (it is only used with --executor ray)",
                                          shorten(value)))
    return name


def make_executor(
    name: str = "local",
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    threads_per_task: int | None = None,
    device: str = "cpu",
    gpus_per_task: float | None = None,
    max_in_flight: int | None = None,
    max_retries: int = 3,
) -> Executor:
    """The executor called ``name`` (``"local"`` or ``"ray"``), as ``--executor`` chooses it.

    Args:
        name: ``"local"``: tasks run in this process, in order. ``"ray"``:
            tasks run as Ray tasks (see :class:`RayExecutor`).
        address: ``ray`` only: a running cluster's address, e.g. ``HEAD:6379``.
        num_cpus: ``ray`` only: CPUs of a local Ray (default: this machine's).
        threads_per_task: torch threads of every task, in both executors
            (default ``FITSCOPE_NUM_THREADS`` if set, else 1); record it: results
            are bitwise identical for the same value whichever executor ran them.
        device: every task's torch device: ``"cpu"`` (default), ``"cuda"``,
            ``"cuda:<index>"`` (``local`` only) or ``"auto"`` (a GPU when one is
            found, on this machine or in the Ray cluster; else the CPU).
        gpus_per_task: ``ray`` only: GPUs each task reserves with a CUDA device,
            in (0, 1] (default 1; a fraction shares a GPU between units).
        max_in_flight: ``ray`` only: most tasks submitted at once.
        max_retries: ``ray`` only: reruns of a task lost with its worker or node.

    Raises:
        ConfigError: an unknown name, ``address``/``num_cpus``/``gpus_per_task``
            given to the local executor, a device not found, or ray not installed.
    """
    name = check_executor_options(name, address=address, num_cpus=num_cpus, gpus_per_task=gpus_per_task)
    if name == "local":
        return LocalExecutor(threads_per_task=threads_per_task, device=device)
    return RayExecutor(address=address, num_cpus=num_cpus, threads_per_task=threads_per_task, device=device,
                       gpus_per_task=gpus_per_task, max_in_flight=max_in_flight, max_retries=max_retries)
