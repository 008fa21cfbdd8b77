"""What runs on the cluster: the read stage (pieces -> rows) and the scoring actor.

Chunks travel through Ray as opaque bytes (a pickled chunk in, an Arrow IPC table out),
not as Ray Data rows: inputs may disagree on column types, bad rows must keep their line
numbers, and every value must stay the exact Python value the local engine sees. Every
output row carries a row id (chunk index and position) until the driver writes it.
Errors are returned, not raised, so the driver raises them as the local engine would.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ...config import OnBadRow, RunOptions
from ...errors import CodescalerError, describe_error
from ...progress import Progress
from ...stages import finish_chunk, model_provenance, prepare_chunk

if TYPE_CHECKING:
    import pyarrow as pa

ROW_ID = "__codescaler_row_id"
RAN = "__codescaler_ran"  # sharded chunks: whether this shard computed the row's score
# Row ids are (chunk index << 32) + position in the chunk: unique, in input order.
ROW_ID_SHIFT = 32


def read_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("index", pa.int64()),
            ("shard", pa.int64()),
            ("shards", pa.int64()),
            ("chunk", pa.large_binary()),
            ("error", pa.large_binary()),
        ]
    )


def read_row(task: dict[str, Any]) -> dict[str, Any]:
    """A task as the actors take it: its chunk and fields pickled, or the error reading it
    raised (which travels on to the driver and is raised there as is)."""
    work = task["work"]
    row: dict[str, Any] = {"index": work.ref.index, "shard": task["shard"]}
    row["shards"] = task["shards"]
    try:
        chunk = work.ref.read()
        row["chunk"] = pickle.dumps((chunk, work.fields), protocol=pickle.HIGHEST_PROTOCOL)
        row["error"] = None
    except Exception as exc:
        row["chunk"] = None
        row["error"] = pack_error(exc)
    return row


def read_tasks(batch: pa.Table) -> pa.Table:
    """Ray Data read stage: pickled tasks -> pickled chunks (one row per task)."""
    import pyarrow as pa

    rows = [read_row(pickle.loads(d)) for d in batch.column("task").to_pylist()]
    return pa.Table.from_pylist(rows, schema=read_schema())


class _Tally(Progress):
    """Collects an actor's token counts so the driver can replay them."""

    def __init__(self) -> None:
        self.tokens = 0

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.tokens += tokens


def pack_error(exc: BaseException) -> bytes:
    """A picklable copy of ``exc`` (with the worker's traceback) to raise on the driver."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return pickle.dumps((data, tb))
    except Exception:
        if isinstance(exc, CodescalerError):
            # e.g. BadRowError takes two arguments: rebuild it with its message only.
            clone = type(exc).__new__(type(exc))
            clone.args = (str(exc),)
            return pickle.dumps((pickle.dumps(clone), tb))
        text = describe_error(exc)
        return pickle.dumps((pickle.dumps(RuntimeError(f"Ray worker failed: {text}")), tb))


def unpack_error(blob: bytes) -> BaseException:
    data, tb = pickle.loads(blob)
    exc = pickle.loads(data)
    if os.environ.get("CODESCALER_DEBUG") == "1" and hasattr(exc, "add_note"):
        exc.add_note("in a Ray worker:\n" + tb)
    return exc


class ScorerActor:
    """Ray Data actor: builds the scorer once, then scores one chunk (or shard) per row.

    Rows are looked up in the score cache here, on the worker, against its own machine's
    store (keys are of the extracted code, which only the actors compute; nothing more
    travels, and a cluster without a shared disk works: each node keeps its own store).
    The model loads on the first miss, so a worker whose rows all hit loads no weights.

    The output has one row per task: the result table as Arrow IPC (with ``ROW_ID``, and
    ``RAN`` for a shard), the rows set aside, counters, and the model's provenance. Two
    calls may run at once (Ray's ``max_concurrent_calls_per_actor``): one tokenizes while
    the other runs the model, as the local engine prepares the next chunk ahead.
    """

    def __init__(self, opts: RunOptions, device: str, threads: int | None) -> None:
        self.opts = opts
        self.rm: Any = None
        self.scorer: Any = None
        self.error: bytes | None = None
        self.meta = ""
        self.worker = f"{os.uname().nodename}:{os.getpid()}"
        self.notes: list[str] = []  # the cache's notices, sent to the driver with a result
        self.prepare_lock = threading.Lock()  # the tokenizer is not thread-safe
        self.model_lock = threading.Lock()  # one chunk's passes at a time on the device
        try:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            if threads:
                import torch

                torch.set_num_threads(threads)
            if opts.rows.score:
                from ...scoring.build import build_scorer

                self.scorer = build_scorer(
                    replace(opts.model, device=device),
                    opts.scoring,
                    opts.cache,
                    notify=self.notes.append,
                )
                self.rm = self.scorer.rm
                self.meta = json.dumps(model_provenance(self.rm, opts.scoring.max_length))
        except Exception as exc:
            self.error = pack_error(exc)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        names = ("index", "shard", "shards", "chunk", "error")
        cols = [batch.column(c).to_pylist() for c in names]
        rows = [self._one(*args) for args in zip(*cols, strict=True)]
        return pa.Table.from_pylist(rows, schema=result_schema())

    def _one(
        self, index: int, shard: int, shards: int, blob: bytes | None, error: bytes | None
    ) -> dict[str, Any]:
        import pyarrow as pa

        row: dict[str, Any] = {"index": index, "shard": shard, "meta": self.meta}
        row["worker"] = self.worker
        if error is not None or self.error is not None:
            return {**row, "error": error or self.error}
        try:
            chunk, fields = pickle.loads(blob)  # type: ignore[arg-type]
            rows = self.opts.rows
            with self.prepare_lock:
                prepared = prepare_chunk(chunk, fields, rows, self.scorer, OnBadRow.skip)
            tally = _Tally()
            part = (shard, shards) if shards > 1 and self.scorer is not None else None
            with self.model_lock:
                calls = self.rm.forward_calls if self.rm is not None else 0
                result = finish_chunk(prepared, rows, self.scorer, tally, shard=part)
                calls = (self.rm.forward_calls - calls) if self.rm is not None else 0
            ids = [(index << ROW_ID_SHIFT) + i for i in prepared.rows]
            table = result.table.append_column(ROW_ID, pa.array(ids, pa.int64()))
            if result.ran is not None:
                table = table.append_column(RAN, pa.array(result.ran, pa.bool_()))
            notes = [self.notes.pop(0) for _ in range(len(self.notes))]  # pop: thread-safe
            return {
                **row,
                "notes": "\n".join(notes) or None,
                "cached": result.cached,
                "table": to_ipc(table),
                "bad": pickle.dumps(result.bad),
                "n_read": chunk.n_read,
                "unique_scored": result.unique_scored,
                "tokens": tally.tokens,
                "forward_calls": calls,
                "plan": result.plan,
            }
        except Exception as exc:
            return {**row, "error": pack_error(exc)}


def result_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("index", pa.int64()),
            ("shard", pa.int64()),
            ("meta", pa.string()),
            ("worker", pa.string()),
            ("error", pa.large_binary()),
            ("table", pa.large_binary()),
            ("bad", pa.large_binary()),
            ("n_read", pa.int64()),
            ("unique_scored", pa.int64()),
            ("cached", pa.int64()),
            ("notes", pa.string()),
            ("tokens", pa.int64()),
            ("forward_calls", pa.int64()),
            ("plan", pa.string()),
        ]
    )


def to_ipc(table: pa.Table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all()
