"""Run per-video work on Ray: stage 1 as tasks, batch prediction on a pool of model actors.

Ray is an optional extra (`pip install 'deepfake-detect[ray]'`). The driver connects to a
cluster (`address="auto"` or `"ray://host:port"`) or starts a quiet local instance, submits
at most `max_in_flight` tasks at a time (so a 100k-video run never queues 100k tasks) and
hands results back as they finish. Ray retries a task whose worker died; a task that kills
its worker again comes back as a `WorkerCrash`, and the run goes on. What the results mean
(journal, tables, outputs) stays with the caller: this module only moves work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.extras import import_extra

Item = TypeVar("Item")

# How many times Ray runs a task again after its worker died (a decoder segfault, the OOM
# killer, a lost node): one retry, so a video that kills its worker twice is a worker_crash.
MAX_RETRIES = 1


class RayError(DeepfakeDetectError, RuntimeError):
    """Ray could not be started or reached, or a task failed in Ray itself (one line)."""


@dataclass
class WorkerCrash:
    """A task whose worker died on every try; `message` says how, in one line."""

    message: str


def connect(address: str | None = None, num_cpus: int | None = None) -> ModuleType:
    """The `ray` module, connected: to `address` (auto, ray://host:port) or, without one, to a
    new local instance of `num_cpus` CPUs (default: all) with no dashboard. Reuses a
    connection this process already has."""
    ray = import_extra("ray", "ray", "--executor ray")
    if ray.is_initialized():
        return ray
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayError(f"cannot start or reach {where}: {one_line(error)}") from None
    return ray


def one_line(error: BaseException) -> str:
    """An exception as `Type: first line` (Ray's messages run over many lines)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _cluster_cpus(ray: ModuleType) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _crash_errors(ray: ModuleType) -> tuple[type[BaseException], ...]:
    """The exceptions that mean the worker (or its node) died, not that the function raised."""
    found = ray.exceptions
    return (
        found.WorkerCrashedError,
        found.NodeDiedError,
        found.ObjectLostError,
        found.RayActorError,
        found.OutOfMemoryError,
    )


def _task_failure(ray: ModuleType, error: BaseException) -> RayError:
    """A function that raised on a worker (the package missing on a node, say): one line."""
    cause = getattr(error, "cause", None) or error
    return RayError(f"a Ray task failed: {one_line(cause)}")


def map_tasks(
    ray: ModuleType,
    function: Callable[..., Any],
    items: Iterable[Item],
    *args: Any,
    num_cpus: float = 1,
    max_in_flight: int | None = None,
    max_retries: int = MAX_RETRIES,
) -> Iterator[tuple[Item, Any]]:
    """Run `function(item, *args)` as a Ray task per item and yield `(item, result)` as each
    finishes (in any order); the result is a `WorkerCrash` when the worker died on every try.

    At most `max_in_flight` tasks are submitted at once (default: two per CPU slot of the
    cluster), each reserving `num_cpus`. `args` are put in the object store once.
    """
    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries)(function)
    shared = [ray.put(arg) for arg in args]
    limit = max_in_flight or max(1, 2 * int(_cluster_cpus(ray) / num_cpus))
    crashes = _crash_errors(ray)
    running: dict[Any, Item] = {}
    queue = iter(items)
    while True:
        for item in queue:
            running[remote.remote(item, *shared)] = item
            if len(running) >= limit:
                break
        if not running:
            return
        finished, _ = ray.wait(list(running), num_returns=1)
        for ref in finished:
            item = running.pop(ref)
            try:
                yield item, ray.get(ref)
            except crashes as error:
                yield item, WorkerCrash(one_line(error))
            except ray.exceptions.RayTaskError as error:
                raise _task_failure(ray, error) from None


class ActorPool:
    """`size` actors of `actor_class(*args)` (each loads its model once), fed one item at a
    time each; `map` calls a method on every item and yields results as they finish.

    An actor that dies is restarted and the call retried once (`MAX_RETRIES`); an item that
    kills it again comes back as a `WorkerCrash` and a fresh actor takes the dead one's place.
    """

    def __init__(
        self,
        ray: ModuleType,
        actor_class: type,
        args: tuple[Any, ...] = (),
        *,
        size: int | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
    ) -> None:
        self.ray = ray
        self.remote_class = ray.remote(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=MAX_RETRIES,
            max_task_retries=MAX_RETRIES,
        )(actor_class)
        self.args = args
        if size is None:
            resources = ray.cluster_resources()
            slots = (
                resources.get("GPU", 0) / num_gpus if num_gpus else _cluster_cpus(ray) / num_cpus
            )
            size = max(1, int(slots))
        self.actors = [self.remote_class.remote(*args) for _ in range(size)]

    def map(self, method: str, items: Iterable[Item]) -> Iterator[tuple[Item, Any]]:
        """Call `actor.method(item)` for every item, one item per actor at a time."""
        crashes = _crash_errors(self.ray)
        idle = list(range(len(self.actors)))
        running: dict[Any, tuple[int, Item]] = {}
        queue = iter(items)
        while True:
            for item in queue:
                slot = idle.pop()
                running[getattr(self.actors[slot], method).remote(item)] = (slot, item)
                if not idle:
                    break
            if not running:
                return
            finished, _ = self.ray.wait(list(running), num_returns=1)
            for ref in finished:
                slot, item = running.pop(ref)
                idle.append(slot)
                try:
                    yield item, self.ray.get(ref)
                except crashes as error:
                    if getattr(error, "actor_init_failed", False):  # its __init__ raised
                        last = str(error).strip().splitlines()[-1].strip()
                        raise RayError(f"a Ray actor could not start: {last}") from None
                    self.actors[slot] = self.remote_class.remote(*self.args)
                    yield item, WorkerCrash(one_line(error))
                except self.ray.exceptions.RayTaskError as error:
                    raise _task_failure(self.ray, error) from None

    def shutdown(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


class PredictorActor:
    """A Ray actor holding one loaded model (a `Predictor`), for batch prediction."""

    def __init__(self, model: str, options: dict[str, Any]) -> None:
        from deepfake_detect.inference import Predictor

        self.predictor = Predictor(Path(model), **options)

    def predict(self, job: tuple[int, str, bool]) -> Any:
        _, path, keep_crops = job
        return self.predictor.predict(Path(path), keep_crops)

    def probabilities(self, job: tuple[int, str]) -> Any:
        _, path = job
        return next(self.predictor.probabilities_all([Path(path)]))[1]


class RayPredictors:
    """Batch prediction on Ray: `actors` copies of the model (default one per CPU slot, or one
    per GPU share with `gpus_per_actor`), with the batch methods of a local `Predictor`
    (`predict_all`, `probabilities_all`), yielding results as they finish, in any order.

    A video that kills its actor twice is a worker_crash; the others go on.
    """

    def __init__(
        self,
        model: Path,
        options: dict[str, Any],
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        gpus_per_actor: float = 0,
        actors: int | None = None,
    ) -> None:
        ray = connect(address, num_cpus)
        self.pool = ActorPool(
            ray,
            PredictorActor,
            (str(Path(model).resolve()), options),
            size=actors,
            num_gpus=gpus_per_actor,
        )

    def predict_all(self, paths: Sequence[Path], keep_crops: bool = False) -> Iterator[Any]:
        from deepfake_detect.inference import VideoPrediction
        from deepfake_detect.status import Status

        jobs = [(index, str(path), keep_crops) for index, path in enumerate(paths)]
        for (index, path, _), result in self.pool.map("predict", jobs):
            if isinstance(result, WorkerCrash):
                message = f"{path}: the worker judging it died ({result.message})"
                result = VideoPrediction(path=path, status=Status.WORKER_CRASH, error=message)
            yield index, result

    def probabilities_all(self, npy_paths: Sequence[Path]) -> Iterator[tuple[int, Any]]:
        """`(position, probabilities)`, or `(position, WorkerCrash)` for a crashed scoring."""
        jobs = [(index, str(path)) for index, path in enumerate(npy_paths)]
        for (index, _), result in self.pool.map("probabilities", jobs):
            yield index, result

    def close(self) -> None:
        self.pool.shutdown()
