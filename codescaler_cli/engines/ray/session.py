"""A Ray session for one run, and the actors' resources chosen from the cluster's."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import signal
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...config import RayOptions, RunOptions
from ...errors import MissingDependencyError, UsageError

RAY_INSTALL_HINT = "--engine ray needs Ray: pip install 'codescaler-cli[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or :class:`MissingDependencyError` (exit 2) saying how to get it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(RAY_INSTALL_HINT) from None
    return ray


@dataclass
class Resources:
    num_workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    read_cpus: float
    device: str
    threads: int | None


@dataclass
class Session:
    started_local: bool = False  # we started a cluster for this run (and stop it)
    connected: bool = False  # we called ray.init (and call ray.shutdown)
    node_id: str = ""
    single_node: bool = True
    actor_start_timeout_s: int = 0


@contextlib.contextmanager
def ray_session(ray: Any, opts: RayOptions) -> Iterator[Session]:
    """Connect (or start a local cluster); always disconnect/stop again, even on Ctrl-C."""
    from ray.data import DataContext

    session = Session(actor_start_timeout_s=opts.actor_start_timeout_s)
    main = threading.current_thread() is threading.main_thread()
    old_term = signal.getsignal(signal.SIGTERM) if main else None
    quiet = not opts.show_progress
    ctx = DataContext.get_current()
    settings = {
        "enable_progress_bars": not quiet,
        "print_on_execution_start": not quiet,
        "enable_auto_log_stats": False,
        # Start scoring once the whole pool is up, so the first pieces spread over all
        # actors; and fail (rather than wait forever) when the cluster cannot host it.
        "wait_for_min_actors_s": opts.actor_start_timeout_s,
    }
    saved_ctx = {k: getattr(ctx, k) for k in settings if hasattr(ctx, k)}
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    try:
        if not ray.is_initialized():
            address = opts.address or os.environ.get("RAY_ADDRESS") or "local"
            session.started_local = address == "local"
            # Quiet, private, run-scoped: no usage reporting, no dashboard for a local cluster.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs: dict[str, Any] = {
                "address": address,
                "log_to_driver": not quiet,
                "logging_level": logging.ERROR if quiet else logging.INFO,
            }
            if session.started_local:
                kwargs["include_dashboard"] = False
            session.connected = True
            ray.init(**kwargs)
        session.node_id = ray.get_runtime_context().get_node_id()
        session.single_node = sum(1 for n in ray.nodes() if n.get("Alive")) <= 1
        for k in saved_ctx:
            setattr(ctx, k, settings[k])
        if quiet:
            data_logger.setLevel(logging.CRITICAL)  # errors are re-raised by us, one line each
        yield session
    except BaseException as exc:
        # The frames of an interrupted ray.get hold object references; freed only after
        # ray.shutdown() below, they would reach into the stopped worker, and Ray then
        # exits the process with status 1. Free them while Ray is still up.
        traceback.clear_frames(exc.__traceback__)
        gc.collect()
        raise
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave processes behind.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            if session.connected:
                ray.shutdown()
        finally:
            for k, v in saved_ctx.items():
                setattr(ctx, k, v)
            data_logger.setLevel(saved_level)
            if main:
                signal.signal(signal.SIGINT, old_int)
                # ray.init installs its own SIGTERM handler; give the caller's back.
                if old_term is not None:
                    signal.signal(signal.SIGTERM, old_term)


def resolve_resources(ray: Any, opts: RayOptions, run: RunOptions, local: bool) -> Resources:
    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0))
    cpus = float(total.get("CPU", 0))
    device = (run.model.device or "auto").lower()
    wants_gpu = device == "auto" or device.startswith("cuda")
    gpw = opts.gpus_per_worker
    if gpw is None:
        gpw = 1.0 if gpus > 0 and wants_gpu and run.rows.score else 0.0
    if gpw > 0 and not wants_gpu:
        raise UsageError(f"--device {run.model.device} conflicts with --gpus-per-worker {gpw:g}")
    if gpw > 0 and gpus == 0 and local:
        raise UsageError(
            f"--gpus-per-worker {gpw:g}: the local Ray cluster has no GPUs (use 0 for CPU workers)"
        )
    workers = opts.num_workers
    if workers is None:
        workers = max(1, int(gpus // gpw)) if gpw > 0 and gpus > 0 else 1
    # Readers need CPU too: keep one CPU (half of a 1-CPU cluster) out of the actors' reach.
    reserve = min(1.0, cpus / 2)
    budget = max(cpus - reserve, 0.0)
    cpw = opts.cpus_per_worker
    if cpw is None:
        cpw = min(1.0, budget / workers) if gpw > 0 else budget / workers
        node_cpus = [
            float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")
        ]
        cpw = min(cpw, max(node_cpus, default=cpw))
        cpw = math.floor(cpw * 100) / 100  # Ray's resource granularity, rounded down
    driver_cpus = _node_cpus(ray, ray.get_runtime_context().get_node_id())
    # A head node without CPUs for tasks still reads (0-CPU tasks, two at a time).
    read_cpus = min(1.0, reserve, driver_cpus) if driver_cpus > 0 else 0.0
    if gpw > 0:
        actor_device = "cuda"
    elif device in ("mps",):
        actor_device = device
    else:
        actor_device = "cpu"
    threads = max(1, int(cpw)) if actor_device == "cpu" else None
    if local and (workers * gpw > gpus + 1e-9 or workers * cpw > cpus + 1e-9):
        # Our own one-machine cluster will never grow: say so now instead of waiting.
        raise UsageError(
            f"{workers} worker(s) x ({gpw:g} GPU, {cpw:g} CPU) do not fit this machine "
            f"({gpus:g} GPU, {cpus:g} CPU); lower --num-workers or --gpus-per-worker"
        )
    return Resources(workers, gpw, cpw, read_cpus, actor_device, threads)


def _node_cpus(ray: Any, node_id: str) -> float:
    for n in ray.nodes():
        if n.get("NodeID") == node_id:
            return float(n.get("Resources", {}).get("CPU", 0))
    return 0.0
