"""The Ray engine: the loop's chunks scored by actors on a Ray cluster, through Ray Data.

Dataflow (``--engine ray``)::

    driver (the loop): inputs checked, fields detected, JSON Lines / Parquet files cut
            into the loop's chunks as byte and row ranges (others read on the driver, a
            chunk at a time, and spooled to a file on its node: spool.py)
      -> Ray Data read tasks, on the driver's node: each range parsed by the same readers
      -> ``map_batches(ScorerActor)``, one actor per GPU: the model loaded once, then the
         same stages as the local engine per chunk
      -> driver (the loop): each chunk's part written as it arrives, merged in input order

Identical output: a chunk is the local engine's chunk, scored by the same code in the
same batches, so rows, columns, metadata and scores are the local engine's (bit for bit
on the same hardware and thread count). With fewer chunks than workers, each chunk is
split into shards: every shard plans the chunk's passes alike and runs its share of them
(Scorer.run's ``shard``); each row's score is then taken from the shard that says it ran
it, whatever order or threads the passes ran in.

Ray is an optional extra: it is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ...config import RayOptions, RunOptions
from ...errors import CodescalerError
from ...io.source import ChunkRef
from ...progress import Progress
from ...stages import ChunkResult
from ..base import Work
from .actor import (
    RAN,
    ROW_ID,
    ROW_ID_SHIFT,
    ScorerActor,
    from_ipc,
    read_row,
    read_schema,
    read_tasks,
    unpack_error,
)
from .session import Resources, Session, import_ray, ray_session, resolve_resources
from .spool import spooled

if TYPE_CHECKING:
    import pyarrow as pa


class RayEngine:
    reads_ranges = True

    def __init__(self, opts: RunOptions, ray_options: RayOptions | None = None) -> None:
        self.opts = opts
        self.ray_options = ray_options or RayOptions()
        self.ray_options.validate()
        self.ray = import_ray()
        self._session: Session | None = None
        self._spool_dir = ""
        self._res: Resources | None = None
        self._meta: dict[str, str] | None = None
        self._forward_calls = 0

    @contextlib.contextmanager
    def session(self, progress: Progress) -> Iterator[None]:
        with (
            ray_session(self.ray, self.ray_options) as session,
            tempfile.TemporaryDirectory(prefix="codescaler-ray-") as spool_dir,
        ):
            self._session = session
            self._spool_dir = spool_dir
            self._res = resolve_resources(
                self.ray, self.ray_options, self.opts, session.started_local
            )
            yield

    def device(self) -> str | None:
        return self._res.device if self._res is not None and self.opts.rows.score else None

    def model_meta(self) -> dict[str, str] | None:
        return self._meta

    @property
    def forward_calls(self) -> int:
        return self._forward_calls

    def score(self, work: Iterator[Work], progress: Progress) -> Iterator[ChunkResult]:
        assert self._session is not None and self._res is not None
        res = self._res
        # Chunks the driver reads (stdin, pipes, JSON documents, datasets) are spooled to
        # disk as they come: the list holds ranges, never rows.
        todo = list(spooled(work, self._spool_dir))
        if not todo:
            return
        shards = max(1, res.num_workers // len(todo))
        gpu = f", {res.gpus_per_worker:g} GPU each" if res.gpus_per_worker else ""
        split = f", each in {shards} shards" if shards > 1 else ""
        progress.message(
            f"Ray: {res.num_workers} worker(s){gpu}; {len(todo)} chunk(s) "
            f"of up to {self.opts.chunk_size} rows{split}"
        )
        tasks = _tasks(todo, shards)
        ds = self._dataset(tasks, sharded=shards > 1)
        got: dict[int, list[dict[str, Any]]] = {}
        workers: set[str] = set()
        notes: set[str] = set()
        with contextlib.closing(_iter_results(ds, res, self._session.actor_start_timeout_s)) as it:
            for row in it:
                if row["error"] is not None:
                    raise unpack_error(row["error"])
                workers.add(row["worker"])
                for note in (row["notes"] or "").splitlines():
                    if note not in notes:  # each notice once, whichever worker saw it
                        notes.add(note)
                        progress.message(f"{note} (on {row['worker'].split(':')[0]})")
                self._forward_calls += row["forward_calls"]
                parts = got.setdefault(row["index"], [])
                parts.append(row)
                if len(parts) < shards:
                    continue
                del got[row["index"]]
                if self._meta is None and row["meta"]:
                    self._meta = json.loads(row["meta"])
                result = _merge(parts)
                progress.advance(result.table.num_rows, sum(p["tokens"] for p in parts))
                yield result
        progress.message(f"Ray: {len(tasks)} piece(s) scored by {len(workers)} worker(s)")

    def _dataset(self, tasks: list[dict[str, Any]], sharded: bool) -> Any:
        """from_items(tasks) -> map_batches(read_tasks) -> map_batches(ScorerActor)."""
        import pyarrow as pa
        import ray.data as rd

        session, res = self._session, self._res
        assert session is not None and res is not None
        if all(t["work"].ref.chunk is not None for t in tasks):
            # Shards of a small input, read on the driver already (_tasks): no read tasks.
            ds = rd.from_arrow(
                [pa.Table.from_pylist([read_row(t)], schema=read_schema()) for t in tasks]
            )
        else:
            items = [{"task": pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)} for t in tasks]
            ds = rd.from_items(items, override_num_blocks=len(items))
            read_args: dict[str, Any] = {"num_cpus": res.read_cpus}
            # Reads run on the driver's node: input paths need only exist there (as for the
            # local engine); the parsed chunks reach the GPU nodes through the object store.
            if "label_selector" in inspect.signature(ds.map_batches).parameters:
                read_args["label_selector"] = {"ray.io/node-id": session.node_id}
            else:  # pragma: no cover - Ray < 2.5x
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                strategy = NodeAffinitySchedulingStrategy(session.node_id, False)
                read_args["scheduling_strategy"] = strategy
            if res.read_cpus == 0:
                read_args["compute"] = rd.TaskPoolStrategy(size=2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ray_remote_args deprecation (older Ray)
                ds = ds.map_batches(read_tasks, batch_size=1, batch_format="pyarrow", **read_args)
        # Two calls per actor: one tokenizes the next chunk while the other runs the model
        # (ScorerActor's locks keep it to one of each). Shards are not worth queueing: one
        # per actor at a time, so they spread over all actors.
        pool: dict[str, Any] = {"size": res.num_workers}
        params = inspect.signature(rd.ActorPoolStrategy).parameters
        if "max_tasks_in_flight_per_actor" in params:
            pool["max_tasks_in_flight_per_actor"] = 1 if sharded else 2
        if "enable_true_multi_threading" in params and not sharded:
            pool.update(max_concurrent_calls_per_actor=2, enable_true_multi_threading=True)
        actor_args: dict[str, Any] = {
            "compute": rd.ActorPoolStrategy(**pool),
            "num_cpus": res.cpus_per_worker,
            "fn_constructor_args": (worker_options(self.opts), res.device, res.threads),
        }
        if res.gpus_per_worker:
            actor_args["num_gpus"] = res.gpus_per_worker
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ray_remote_args is deprecated (max_restarts)
            if session.single_node:
                # On one machine an actor that dies will most likely die again: fail (a
                # rerun resumes) rather than restart forever. Multi-node clusters keep Ray
                # Data's restarts (a lost node).
                try:
                    return ds.map_batches(
                        ScorerActor,
                        batch_size=1,
                        batch_format="pyarrow",
                        max_restarts=0,
                        **actor_args,
                    )
                except TypeError:  # pragma: no cover - a Ray without ray_remote_args
                    pass
            return ds.map_batches(ScorerActor, batch_size=1, batch_format="pyarrow", **actor_args)


def worker_options(opts: RunOptions) -> RunOptions:
    """The options the actors get. A score cache directory the driver names (--cache-dir,
    $CODESCALER_CACHE_DIR) is used as the driver resolves it; otherwise each worker keeps
    its own machine's default (a worker's environment is not the driver's)."""
    cache = opts.cache
    if cache.enabled and (cache.cache_dir or os.environ.get("CODESCALER_CACHE_DIR")):
        return replace(opts, cache=replace(cache, cache_dir=cache.directory()))
    return opts


def _tasks(todo: list[Work], shards: int) -> list[dict[str, Any]]:
    """One task per chunk, or per shard of a chunk. A chunk split into shards is read on the
    driver (such an input is small: fewer chunks than workers), so that every shard starts
    at once on its own actor."""
    tasks = []
    for w in todo:
        if shards > 1 and w.ref.chunk is None:
            w = Work(ChunkRef(w.ref.index, w.ref.spec, chunk=w.ref.read()), w.fields)
        tasks.extend({"work": w, "shard": k, "shards": shards} for k in range(shards))
    return tasks


def _merge(parts: list[dict[str, Any]]) -> ChunkResult:
    """One chunk's result from its shard(s)."""
    parts.sort(key=lambda r: r["shard"])
    first = parts[0]
    tables = [from_ipc(p["table"]) for p in parts]
    table = _check_row_ids(tables[0], first["index"])
    if len({p["plan"] for p in parts}) > 1:
        raise RuntimeError(
            f"Ray engine: the shards of chunk {first['index']} planned different forward passes "
            "(workers with different memory?); set --max-tokens-per-batch"
        )
    if len(tables) > 1 and RAN in table.column_names:
        table = _merge_scores(table, [t.column(RAN).to_pylist() for t in tables], tables)
    if RAN in table.column_names:
        table = table.drop_columns([RAN])
    bad = pickle.loads(first["bad"])
    cached = sum(p["cached"] for p in parts)  # shards look nothing up (Scorer.run): 0
    return ChunkResult(
        table, bad, first["unique_scored"], first["index"], first["n_read"], cached=cached
    )


def _merge_scores(base: pa.Table, ran: list[list[bool]], tables: list[pa.Table]) -> pa.Table:
    """Each row's score (and reward) from the shard that computed it; every other column is
    the same in every shard."""
    import pyarrow as pa

    pick = []
    for i in range(base.num_rows):
        k = next((k for k, r in enumerate(ran) if r[i]), None)
        if k is None:
            raise RuntimeError("Ray engine: a candidate was scored by no shard")
        pick.append(k)
    for name in ("score", "reward"):
        columns = [t.column(name).to_pylist() for t in tables]
        values = [columns[k][i] for i, k in enumerate(pick)]
        pos = base.column_names.index(name)
        base = base.set_column(pos, name, pa.array(values, base.schema.field(name).type))
    return base


def _iter_results(ds: Any, res: Resources, timeout_s: int) -> Iterator[dict[str, Any]]:
    """Result rows as tasks finish (any order); stops Ray Data's executor on early exit."""
    it = ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)
    try:
        for batch in it:
            yield from batch.to_pylist()
    except CodescalerError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "GetTimeoutError" and "starting actors" in str(exc):
            raise CodescalerError(
                f"Ray could not start {res.num_workers} worker(s) with "
                f"{res.gpus_per_worker:g} GPU and {res.cpus_per_worker:g} CPU each within "
                f"{timeout_s} s: the cluster lacks the resources (lower --num-workers or "
                "--gpus-per-worker)"
            ) from None
        raise _ray_failure(exc) from None
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _ray_failure(exc: BaseException) -> BaseException:
    """A one-line error for a failure inside Ray (actor crash, lost node, ...)."""
    text = str(exc).strip().splitlines()
    last = next((ln.strip() for ln in reversed(text) if ln.strip() and not ln.startswith(" ")), "")
    err = RuntimeError(f"the Ray run failed: {type(exc).__name__}: {last or exc!r}"[:500])
    if os.environ.get("CODESCALER_DEBUG") == "1":
        err.__cause__ = exc
    return err


def _check_row_ids(table: pa.Table, index: int) -> pa.Table:
    """Rows come back in input order, all from the chunk sent (then the id column goes)."""
    ids = table.column(ROW_ID).to_pylist()
    lo, hi = index << ROW_ID_SHIFT, (index + 1) << ROW_ID_SHIFT
    if any(not lo <= r < hi for r in ids) or any(a >= b for a, b in itertools.pairwise(ids)):
        raise RuntimeError(f"Ray engine: rows of chunk {index} came back out of order")
    return table.drop_columns([ROW_ID])
