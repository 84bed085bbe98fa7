"""Executing a job: on Ray (the cluster connection, the detector actors, the dispatch
loop), or on threads of this process.

Detectors (`geodet.detector.TileDetector`), each holding one ONNX Runtime session
and reading its own tiles on reader threads, are fed chunks of tile specs; only
detections come back. On Ray they are plain actors with at most `CHUNKS_IN_FLIGHT`
chunks outstanding each, so memory is bounded by the tiles in flight, never by the
scene size; on few cores this measured faster than Ray Data's per-block machinery
(benchmarks/engines.py). On a machine alone the same detectors run as threads of
the calling process (`run_threads`), without Ray's start-up and services
(benchmarks/compare.py): `choose_engine` decides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import math
import os
import queue
import signal
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import ray
from ray._common.utils import get_default_ray_temp_dir

from geodet.detections import ChunkResult, Detections, TileStatus
from geodet.detector import TileDetector
from geodet.errors import GeodetError, InputError, Stopped, one_line
from geodet.model import fallback_warning
from geodet.options import Options
from geodet.reaper import reaped
from geodet.settings import Settings
from geodet.tiling import TileSpec

log = logging.getLogger("geodet")

#: The loopback address the embedded local cluster binds to. Ray rewrites 127.0.0.1
#: to the machine's external address, but keeps other loopback addresses as given.
LOCAL_NODE_IP = "127.0.0.2"
CHUNKS_IN_FLIGHT = 2
TILES_PER_CHUNK_BATCHES = 4
CHUNK_ATTEMPTS = 3
#: After this long without every detector started, say that the run is waiting.
NOTICE_AFTER_S = 10.0


#: What a private local cluster turns off: Ray's metrics exporter, and (through the
#: ports they read, made unusable) the Prometheus servers of the autoscaler monitor and
#: the dashboard head, which have no switch and would serve metrics to anyone on
#: 0.0.0.0. Token authentication stays on (Ray's default for a new local cluster).
LOCAL_CLUSTER = {"address": "local", "_node_ip_address": LOCAL_NODE_IP,
                 "include_dashboard": False,
                 "_system_config": {"enable_metrics_collection": False}}
NO_METRICS_SERVERS = {"AUTOSCALER_METRIC_PORT": "-1", "DASHBOARD_METRIC_PORT": "-1"}


@contextlib.contextmanager
def ray_cluster(address: str | None) -> Iterator[None]:
    """Connect to Ray for the duration of a run.

    ``None``: join ``RAY_ADDRESS`` if it is set, else start a private local cluster
    on a loopback address, with no endpoint that answers without Ray's token off
    loopback; its processes and session folder go when the run ends, however it ends
    (`geodet.reaper`). ``"auto"`` or an address: join that cluster. An already
    connected driver is reused as it is.
    """
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"logging_level": logging.ERROR, "log_to_driver": True}
    if address is None or address == "local":
        with reaped() as remove_after:
            # Ray names the session folder after the driver's PID.
            remove_after(os.path.join(get_default_ray_temp_dir(), f"session_*_{os.getpid()}"))
            _init(**kwargs, **LOCAL_CLUSTER)
            try:
                yield
            finally:
                ray.shutdown()
        return
    kwargs.update(address=address)
    host = address.rsplit(":", 1)[0].removeprefix("ray://")
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:  # a cluster on this machine:
            kwargs.update(_node_ip_address=host)  # attach to its node, on loopback
    try:
        _init(**kwargs)
    except ConnectionError as e:
        raise InputError(
            f"cannot connect to the Ray cluster at {address!r} ({e}): start one with "
            "'ray start --head', or leave out --address to run locally"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _init(**kwargs) -> None:
    """`ray.init`, keeping this process's signal handlers: Ray replaces the SIGTERM
    handler with ``sys.exit(15)``, which would skip the run's own clean stop. A
    SIGTERM during start-up (Ray's handler, then) stops the run as one after it;
    whatever interrupts the start, what was started is stopped."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    env = NO_METRICS_SERVERS if kwargs.get("address") == "local" else {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ray.init(**kwargs)
    except SystemExit as e:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if e.code == signal.SIGTERM:
            raise Stopped(signal.SIGTERM) from None
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
        if threading.current_thread() is threading.main_thread():
            for s, handler in handlers.items():
                if handler is not None:
                    signal.signal(s, handler)


@dataclass(frozen=True)
class ActorPlan:
    """How many detectors, with which Ray resources, device, ONNX Runtime threads and
    reader threads."""

    count: int
    resources: dict
    device: str  # "cpu" or "cuda"
    threads: int
    waits_for: str = ""  # why the cluster must grow before the actors fit, if it must
    readers: int = 1  # a GPU detector reads on the CPUs it has; a CPU one infers on them


@dataclass(frozen=True)
class Execution:
    """What running tiles gave: how many ended how, and every kept detection."""

    counts: dict[TileStatus, int]  # tiles run, by outcome
    detections: Detections  # scene pixels, before the global merge
    seconds: dict[str, float]  # summed over detectors: "read", "infer"
    providers: tuple[str, ...]  # ONNX Runtime execution providers that ran
    workers: int
    engine: str  # "threads" or "ray"


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of each live node of the connected cluster."""
    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


def can_add_gpu_nodes() -> bool | None:
    """Whether the cluster may add GPU nodes: never for a cluster this process
    started (the embedded local one); else from the node types its autoscaler
    reports (autoscaler v2); None when it reports none (autoscaler v1, or none)."""
    # Both through Ray's private modules (Ray Data reads the node types the same way).
    node = ray._private.worker._global_node  # None through Ray Client (ray://)
    if node is not None and node.head:
        return False
    limits = ray._private.state.state.get_max_resources_from_cluster_config()
    return None if limits is None else limits.get("GPU", 0) > 0


def plan_actors(device: str, workers: int | None, nodes: list[dict[str, float]],
                can_add_gpus: bool | None = False) -> ActorPlan:
    """Detectors sized from what single nodes have (an actor lives on one node).

    GPUs: one actor per GPU (``workers`` actors sharing them evenly, if given).
    Each GPU actor takes its share of its node's CPUs and reads tiles on as many
    threads, so that decoding keeps the GPU fed. Without a GPU node yet, ``cuda``
    (and ``auto`` on a cluster that declares GPU node types) asks for ``workers``
    (else one) one-GPU actors: the pending actors make an autoscaler add GPU nodes.
    CPUs: actors of up to 4 threads each, or ``workers`` actors as large as the nodes
    can hold.
    """
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= 1]
    if device == "cuda" and not gpu_nodes and can_add_gpus is False:
        raise InputError("--device cuda, but the Ray cluster has no GPU and cannot add "
                         "GPU nodes: use --device cpu or auto, or join a cluster with GPU "
                         "nodes (--address)")
    if gpu_nodes and device in ("auto", "cuda"):
        gpus = sum(int(n["GPU"]) for n in gpu_nodes)
        count = workers or gpus
        per_gpu = math.ceil(count / gpus)
        cpus = _down(min(n.get("CPU", 0) / (int(n["GPU"]) * per_gpu) for n in gpu_nodes))
        return ActorPlan(count, {"num_gpus": 1 / per_gpu, "num_cpus": cpus}, "cuda", 2,
                         readers=max(1, int(cpus)))
    if device == "cuda" or (device == "auto" and can_add_gpus):
        return ActorPlan(workers or 1, {"num_gpus": 1, "num_cpus": 1}, "cuda", 2,
                         waits_for="the cluster has no GPU node yet")
    cpus = [n["CPU"] for n in nodes if n.get("CPU", 0) >= 1]
    if not cpus:
        return ActorPlan(workers or 1, {"num_cpus": 1}, "cpu", 1,
                         waits_for="the cluster has no node with a CPU yet")
    if workers:
        size = max(c / k for c in cpus for k in range(1, workers + 1)
                   if sum(math.floor(x / (c / k) + 1e-9) for x in cpus) >= workers)
        size = min(size, sum(cpus) / workers)
        return ActorPlan(workers, {"num_cpus": _down(size)}, "cpu", max(1, int(size)))
    threads = int(min(4, *cpus))
    return ActorPlan(int(sum(c // threads for c in cpus)), {"num_cpus": threads}, "cpu",
                     threads)


def _down(cpus: float) -> float:
    """Rounded down to Ray's resource precision (1e-4), so that shares add up."""
    return math.floor(cpus * 1e4 + 1e-6) / 1e4


def describe_nodes(nodes: list[dict[str, float]]) -> str:
    """``"1 x {CPU: 0, GPU: 0}, 2 x {CPU: 1, GPU: 1}"``: the nodes' CPUs and GPUs, grouped."""
    shapes = Counter((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes)
    return ", ".join(f"{count} x {{CPU: {cpu:g}, GPU: {gpu:g}}}"
                     for (cpu, gpu), count in sorted(shapes.items())) or "no node"


def start_detectors(model: ray.ObjectRef | bytes, settings: Settings, options: Options,
                    plan: ActorPlan) -> tuple[list, list[str]]:
    """Start the planned actors; return them and the execution provider each runs.

    Waits up to ``options.wait_timeout`` seconds for the cluster to place them (an
    autoscaler may be adding nodes), saying so after `NOTICE_AFTER_S` seconds, then
    gives up with one line saying what was asked and what the cluster has.
    """
    # No actor restarts: a dead actor's chunks go to the survivors (see run_tiles), so
    # a lost node never leaves work waiting for resources that may not come back.
    # Its chunks in flight run on as many threads, so that reads cross chunk borders.
    remote = ray.remote(TileDetector).options(max_restarts=0,
                                              max_concurrency=CHUNKS_IN_FLIGHT,
                                              **plan.resources)
    actors = [remote.remote(model, settings, options, plan.device, plan.threads,
                            plan.readers) for _ in range(plan.count)]
    started = [a.provider_name.remote() for a in actors]
    asked = f"{plan.count} detector(s) with {_resources(plan.resources)} each"
    ready, _ = ray.wait(started, num_returns=len(started),
                        timeout=0 if plan.waits_for else NOTICE_AFTER_S)
    if len(ready) < len(started):
        log.warning("waiting up to %g s (--wait-timeout) for the Ray cluster to place %s%s",
                    options.wait_timeout, asked,
                    f": {plan.waits_for}; an autoscaler adds nodes for them"
                    if plan.waits_for else "")
        ready, _ = ray.wait(started, num_returns=len(started), timeout=options.wait_timeout)
    if len(ready) < len(started):
        for actor in actors:
            ray.kill(actor)
        raise GeodetError(
            f"the Ray cluster could not place {asked} within {options.wait_timeout:g} s "
            f"({len(ready)} started); its nodes have {describe_nodes(cluster_nodes())}: "
            "give --workers, --device or a longer --wait-timeout, or add nodes")
    try:
        providers = ray.get(started)
    except ray.exceptions.RayActorError as e:
        raise GeodetError(f"the detector workers could not start: {e}") from None
    warn_on_fallback(plan, options, providers)
    return actors, providers


def warn_on_fallback(plan: ActorPlan, options: Options, providers: list[str]) -> None:
    """ONNX Runtime falls back silently: say so when the detectors do not run the GPU or
    TensorRT that was asked for."""
    if warning := fallback_warning(plan.device, options.trt, providers):
        log.warning("%s", warning)


def _resources(resources: dict) -> str:
    names = {"num_cpus": "CPU", "num_gpus": "GPU"}
    return "{" + ", ".join(f"{names.get(k, k)}: {v:g}" for k, v in resources.items()) + "}"


def choose_engine(options: Options) -> str:
    """Where the detectors run: ``options.engine``, or for ``auto``, threads of this
    process on a machine alone (no cluster named, no connected driver, no GPU for
    ONNX Runtime to use), else Ray. On one machine, threads skip Ray's start-up and
    services (benchmarks/compare.py); Ray spreads work over nodes and GPUs."""
    if options.engine != "auto":
        return options.engine
    if options.address or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return "ray"
    if options.device == "cuda" or (options.device == "auto" and _ort_has_cuda()):
        return "ray"
    return "threads"


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def local_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def execute(model: bytes, settings: Settings, options: Options, todo: Iterable[TileSpec],
            on_chunk: Callable[[ChunkResult], None] = lambda result: None) -> Execution:
    """Run the tiles ``todo`` on detectors (`choose_engine`: Ray actors or threads of
    this process), calling ``on_chunk`` as each chunk completes. Only detections and
    counts are kept: memory follows the objects found and the tiles in flight, not
    the number of tiles. ``model``: the ONNX file's bytes (on Ray, put once into the
    object store for all actors)."""
    chunk = TILES_PER_CHUNK_BATCHES * settings.batch_size
    engine = choose_engine(options)
    with contextlib.ExitStack() as stack:
        if engine == "threads":
            plan = with_readers(plan_threads(options.device, options.workers, local_cpus()),
                                options.readers)
            detectors = [TileDetector(model, settings, options, plan.device, plan.threads,
                                      plan.readers) for _ in range(plan.count)]
            providers = [d.provider for d in detectors]
            warn_on_fallback(plan, options, providers)
            results = run_threads(detectors, todo, chunk)
        else:
            stack.enter_context(ray_cluster(options.address))
            plan = with_readers(plan_actors(options.device, options.workers, cluster_nodes(),
                                            can_add_gpu_nodes()), options.readers)
            actors, providers = start_detectors(ray.put(model), settings, options, plan)
            results = run_tiles(actors, todo, chunk)
        return _gather(results, on_chunk, engine, plan.count, providers)


def with_readers(plan: ActorPlan, readers: int | None) -> ActorPlan:
    """The plan with ``readers`` reader threads per detector, where given."""
    return plan if readers is None else dataclasses.replace(plan, readers=readers)


def _gather(results: Iterator[ChunkResult], on_chunk: Callable[[ChunkResult], None],
            engine: str, workers: int, providers: list[str]) -> Execution:
    """Consume the chunk results: hand each on, keep detections, counts and times."""
    parts, counts = [], Counter()
    seconds, used = {"read": 0.0, "infer": 0.0}, set()
    for result in results:
        on_chunk(result)
        parts.append(result.detections)
        counts.update(o.status for o in result.tiles)
        for k, v in result.seconds.items():
            seconds[k] += v
        used.add(result.provider)
    used.discard("")
    return Execution(counts=dict(counts), detections=Detections.concat(parts),
                     seconds=seconds, providers=tuple(sorted(used or set(providers))),
                     workers=workers, engine=engine)


def plan_threads(device: str, workers: int | None, cpus: int) -> ActorPlan:
    """Detectors as threads of this process: on CPUs, as `plan_actors` sizes them for
    one node of ``cpus``; on a GPU (``cuda``), ``workers`` (else one) sessions on
    ONNX Runtime's first device, reading on the CPUs."""
    if device == "cuda":
        count = workers or 1
        return ActorPlan(count, {}, "cuda", 2, readers=max(1, cpus // count))
    return plan_actors("cpu", workers, [{"CPU": float(cpus)}])


def run_threads(detectors: list[TileDetector], specs: Iterable[TileSpec],
                chunk: int) -> Iterator[ChunkResult]:
    """Stream the results of all ``specs`` over detectors that run as threads of this
    process, as chunks complete.

    Each detector draws chunks of ``chunk`` specs from the shared iterable, so a plan
    of any size is never held, and reads ahead across chunks (`TileDetector.stream`).
    An unexpected error in a detector is raised here; when the consumer stops (an
    error, a signal), the detectors stop after the batch they are inferring.
    """
    fresh, lock, stop = iter(specs), threading.Lock(), threading.Event()
    results: queue.SimpleQueue = queue.SimpleQueue()
    finished = object()

    def chunks() -> Iterator[list[TileSpec]]:
        while not stop.is_set():
            with lock:
                part = list(islice(fresh, chunk))
            if not part:
                return
            yield part

    def work(detector: TileDetector) -> None:
        try:
            for result in detector.stream(chunks()):
                results.put(result)
        except BaseException as e:  # handed to the consumer, raised there
            results.put(e)
        finally:
            results.put(finished)

    threads = [threading.Thread(target=work, args=(d,), name=f"geodet-detector-{i}",
                                daemon=True) for i, d in enumerate(detectors)]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            item = results.get()
            if item is finished:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()


def run_tiles(actors: list, specs: Iterable[TileSpec], chunk: int) -> Iterator[ChunkResult]:
    """Stream the results of all ``specs`` over the actors, as chunks complete.

    Specs are drawn from the iterable only as actors free up, so a plan of any size
    is never held. A chunk whose actor dies (its process or its node) goes back to
    the queue for the surviving actors, up to `CHUNK_ATTEMPTS` times; a chunk that
    raises is recorded as failed. Each tile's result is yielded exactly once.
    """
    fresh = iter(specs)
    retry: deque[tuple[list[TileSpec], int]] = deque()
    alive = list(actors)
    pending: dict = {}

    def next_part() -> tuple[list[TileSpec], int] | None:
        if retry:
            return retry.popleft()
        part = list(islice(fresh, chunk))
        return (part, 0) if part else None

    def fill() -> None:
        for actor in alive:
            busy = sum(a is actor for a, _, _ in pending.values())
            for _ in range(CHUNKS_IN_FLIGHT - busy):
                if (item := next_part()) is None:
                    return
                part, tries = item
                pending[actor.run.remote(part)] = (actor, part, tries)

    fill()
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        actor, part, tries = pending.pop(ref)
        try:
            yield ray.get(ref)
        except ray.exceptions.RayActorError as e:  # the worker or its node died
            if actor in alive:
                alive.remove(actor)
            if tries + 1 < CHUNK_ATTEMPTS and alive:
                retry.appendleft((part, tries + 1))
            else:
                yield ChunkResult.failed(part, one_line("worker died", e))
        except ray.exceptions.RayError as e:
            yield ChunkResult.failed(part, one_line("worker failed", e))
        fill()
    while (item := next_part()) is not None:  # no detector left alive
        yield ChunkResult.failed(item[0], "no detector worker left alive")
