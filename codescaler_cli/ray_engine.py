"""The Ray engine: the local engine's pipeline on a Ray cluster, through Ray Data.

Dataflow (``--engine ray``)::

    driver: check the inputs and detect the fields as the local engine does, and cut the
            inputs where the local engine cuts its chunks (``--chunk-size`` rows)
      -> Ray Data read tasks, on the driver's node: each chunk parsed by the local
         engine's readers (same rows, same locations and messages for bad rows)
      -> ``map_batches(ScorerActor)``, one actor per GPU: the model loaded once, then
         ``prepare_chunk`` + ``finish_chunk`` (extraction, template rendering, dedup,
         length sorting, token budgets, prefix reuse) per chunk
      -> driver: each chunk's part written as it arrives, then merged in input order by
         the local engine's resumable writer (or kept as a directory of parts)

Identical output: a chunk is the local engine's chunk, scored by the same code in the
same batches, so rows, columns, metadata and scores are the local engine's (bit for bit
on the same hardware and thread count). With fewer chunks than workers, every chunk is
split into shards by planned batch (:class:`_ShardModel`), which keeps the batches too.

Chunks travel through Ray as opaque bytes (a pickled chunk in, an Arrow IPC table out),
not as Ray Data rows: inputs may disagree on column types, bad rows must keep their line
numbers, and every value must stay the exact Python value the local engine sees. Every
output row carries a row id (chunk index and position) until it is written.

Ray is an optional extra: it is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import gc
import io as _io
import itertools
import json
import logging
import math
import os
import pickle
import signal
import struct
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any

from .checkpoint import PartialRun, PartInfo, conform, unify
from .errors import (
    BadRowError,
    CodescalerError,
    InputError,
    MissingDependencyError,
    OutputError,
    UsageError,
)
from .io import (
    BadRow,
    Chunk,
    InputSpec,
    iter_chunks,
    jsonl_rows,
    peek_first_char,
)
from .pipeline import (
    FIELDS_PROBE_ROWS,
    ChunkResult,
    Fields,
    PipelineOptions,
    Progress,
    RunSummary,
    default_rejected_path,
    first_fields,
    rejected_rows,
    summarize_chunk,
)
from .runner import RunConfig, StdoutWriter, add_resumed, run_fingerprint, scoring_options

if TYPE_CHECKING:
    import pyarrow as pa

RAY_INSTALL_HINT = "--engine ray needs Ray: pip install 'codescaler-cli[ray]'"
ROW_ID = "__codescaler_row_id"
# Row ids are (chunk index << 32) + position in the chunk: unique, in input order.
_ROW_ID_SHIFT = 32


@dataclass
class RayOptions:
    """How to run on Ray; ``None`` fields are chosen from the cluster's resources."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local cluster started for the run
    num_workers: int | None = None  # None: one per GPU (gpus / gpus_per_worker), else 1 CPU actor
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_worker: float | None = None  # None: 1 per GPU actor; CPU actors share all but 1 CPU
    show_progress: bool = False  # Ray's own progress bars and logs
    actor_start_timeout_s: int = 900  # all workers must be up by then (autoscaling included)


@dataclass
class _Resources:
    num_workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    read_cpus: float
    device: str
    threads: int | None


@dataclass(frozen=True)
class _Piece:
    """One local-engine chunk (or one shard of it), read by a Ray task, scored by an actor."""

    kind: str  # "jsonl" (byte range), "parquet" (row range), "chunk" (rows read on the driver)
    path: str = ""
    start: int = 0
    stop: int = 0
    first_line: int = 1
    chunk: Chunk | None = None
    index: int = 0  # the chunk's index, as in the local engine (and its resumable parts)
    shard: int = 0  # shards > 1: this actor scores every shards-th planned batch only
    shards: int = 1


@dataclass
class _Source:
    spec: InputSpec
    rows: int
    pieces: list[_Piece]  # one per chunk, in order


# ---------------------------------------------------------------- entry points


def import_ray() -> Any:
    """The ``ray`` module, or :class:`MissingDependencyError` (exit 2) saying how to get it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(RAY_INSTALL_HINT) from None
    return ray


def run_ray_job(
    specs: list[InputSpec],
    cfg: RunConfig,
    ray_options: RayOptions | None = None,
    *,
    progress: Progress | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[str] | None = None,
) -> RunSummary:
    """Run ``cfg`` over ``specs`` on Ray; the output equals :func:`runner.run_job`'s.

    ``cfg.output`` may also end with ``/``: a directory of Parquet parts (in input
    order, each with the provenance metadata) instead of one file.
    """
    ray = import_ray()
    opts = ray_options or RayOptions()
    _check_options(opts)
    out_dir = _output_dir(cfg.output)
    _check_ray_config(cfg, specs, out_dir)
    progress = progress or Progress()
    started = time.perf_counter()
    summary = RunSummary(output=cfg.output)

    sources = [_scan(spec, cfg.chunk_size, stdin) for spec in specs]
    fields = _detect_fields(sources[0], cfg)
    pipeline = replace(cfg.pipeline, question_field=fields.question, response_field=fields.response)

    progress.start(sum(s.rows for s in sources))
    try:
        with _ray_session(ray, opts) as session:
            res = _resolve_resources(ray, opts, cfg, session.started_local)
            _run(
                session,
                res,
                sources,
                fields,
                cfg,
                pipeline,
                out_dir,
                summary,
                progress,
                stdout,
            )
    finally:
        progress.stop()
        summary.seconds = time.perf_counter() - started
    return summary


def bench_ray(
    specs: list[InputSpec], cfg: RunConfig, num_workers: int, *, address: str | None = None
) -> float:
    """Candidates per second of one Ray run, end to end (cluster start and model loads too)."""
    summary = run_ray_job(specs, cfg, RayOptions(address=address, num_workers=num_workers))
    return summary.rows_per_second


# ---------------------------------------------------------------- checks


def _check_options(opts: RayOptions) -> None:
    if opts.num_workers is not None and opts.num_workers < 1:
        raise UsageError("--num-workers must be at least 1")
    if opts.gpus_per_worker is not None and opts.gpus_per_worker < 0:
        raise UsageError("--gpus-per-worker must be >= 0")
    if opts.cpus_per_worker is not None and opts.cpus_per_worker <= 0:
        raise UsageError("--cpus-per-worker must be > 0")
    address = opts.address or os.environ.get("RAY_ADDRESS") or ""
    if address.startswith("ray://"):
        raise UsageError(
            "Ray Client addresses (ray://) are not supported: run the command on the cluster, "
            "e.g. with `ray job submit`"
        )


def _output_dir(output: str) -> str | None:
    """The directory for ``-o DIR/`` (a directory of Parquet parts), else None."""
    if output != "-" and output.endswith(("/", os.sep)):
        return output.rstrip("/" + os.sep) or output
    return None


def _check_ray_config(cfg: RunConfig, specs: list[InputSpec], out_dir: str | None) -> None:
    from .io import check_output_path
    from .runner import check_config

    if out_dir is None:
        check_config(cfg)
        check_output_path(cfg.output, specs)
        return
    check_config(replace(cfg, output=out_dir + ".parquet"))
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise OutputError(f"{cfg.output}: directory {parent} does not exist")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError(f"{cfg.output}: exists and is not a directory")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{cfg.output}: directory {parent} is not writable")
    real = os.path.realpath(out_dir) + os.sep
    for spec in specs:
        if spec.kind in ("jsonl", "parquet") and os.path.realpath(spec.path).startswith(real):
            raise UsageError(f"{cfg.output}: an input ({spec.path}) is inside the output directory")


# ---------------------------------------------------------------- planning (driver)


def _peek(path: str) -> bytes | None:
    """First non-whitespace byte of a file (None: only whitespace)."""
    with open(path, "rb") as fh:
        return peek_first_char(fh)


def _local_reader_error(spec: InputSpec) -> None:
    """Raise exactly the error the local engine's reader gives for this input."""
    next(iter_chunks([spec], 1), None)


def _scan(spec: InputSpec, chunk_size: int, stdin: IO[bytes] | None) -> _Source:
    """Check one input as the local engine would; cut it where the local engine cuts chunks."""
    if spec.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(spec.path).metadata.num_rows
        except Exception:
            rows = 0
        if rows == 0:
            _local_reader_error(spec)
            raise InputError(f"{spec.path}: not a readable Parquet file")  # pragma: no cover
        # ParquetFile.iter_batches(batch_size) yields full batches across row groups.
        pieces = [
            _Piece("parquet", spec.path, start, min(rows, start + chunk_size))
            for start in range(0, rows, chunk_size)
        ]
        return _Source(spec, rows, pieces)
    if spec.kind == "jsonl":
        try:
            first = _peek(spec.path)
        except OSError:
            first = None
        if first is None:
            _local_reader_error(spec)
            raise InputError(f"{spec.path}: input is empty (no JSON lines)")  # pragma: no cover
        if first != b"[":
            return _scan_jsonl(spec, chunk_size)
    # stdin, a .json file holding one array, or a Hugging Face dataset: the driver reads
    # these itself (they cannot be cut without reading them), with the local readers.
    chunks = list(iter_chunks([spec], chunk_size, stdin=stdin))
    pieces = [_Piece("chunk", chunk=c) for c in chunks]
    return _Source(spec, sum(c.n_read for c in chunks), pieces)


def _scan_jsonl(spec: InputSpec, chunk_size: int) -> _Source:
    """Byte ranges of ``chunk_size`` non-blank lines each (the local reader's chunks), with
    the line number each starts at (blank lines count in locations, not in chunks)."""
    pieces: list[_Piece] = []
    start, first_line, pos, n = 0, 1, 0, 0
    rows = 0
    with open(spec.path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            pos += len(raw)
            if not raw.strip():
                continue
            n += 1
            if n >= chunk_size:
                pieces.append(_Piece("jsonl", spec.path, start, pos, first_line))
                rows += n
                start, first_line, n = pos, lineno + 1, 0
    if n:
        pieces.append(_Piece("jsonl", spec.path, start, pos, first_line))
        rows += n
    return _Source(spec, rows, pieces)


def _detect_fields(source: _Source, cfg: RunConfig) -> Fields:
    """Fields from the first chunk of the first input, exactly as the local engine."""
    first = source.pieces[0]
    if first.chunk is not None:
        return first_fields(first.chunk, cfg.pipeline, source.spec.name)
    probe = min(cfg.chunk_size, FIELDS_PROBE_ROWS)
    chunk = next(iter_chunks([source.spec], probe), Chunk(0, [], []))
    if len(chunk.records) < FIELDS_PROBE_ROWS and chunk.n_read == probe < cfg.chunk_size:
        # Bad lines in the probe: the local engine reads past them, so read the whole chunk.
        chunk = next(iter_chunks([source.spec], cfg.chunk_size), chunk)
    return first_fields(chunk, cfg.pipeline, source.spec.name)


def _pieces(sources: list[_Source], workers: int) -> tuple[list[_Piece], int]:
    """The local engine's chunks, numbered across inputs. With at least twice as many
    workers as chunks, each chunk is split into shards (by planned batch) so that the
    workers share it; every shard tokenizes its whole chunk, so no more shards than
    workers. Such an input is small (under ``workers / 2`` chunks): the driver reads it
    itself, so all shards are ready at once and spread over the actors."""
    chunks = [p for src in sources for p in src.pieces]
    shards = max(1, workers // len(chunks))
    pieces = []
    for i, p in enumerate(chunks):
        if shards > 1 and p.chunk is None:
            p = _Piece("chunk", chunk=_read_piece(p))
        pieces.extend(replace(p, index=i, shard=k, shards=shards) for k in range(shards))
    return pieces, len(chunks)


# ---------------------------------------------------------------- reading (Ray tasks)


def _parse_jsonl(data: bytes, name: str, first_line: int) -> Chunk:
    """Lines of a JSONL piece -> rows, with the local reader's locations and messages."""
    chunk = Chunk(0, [], [])
    for loc, row in jsonl_rows(_io.BytesIO(data), name, first_line):
        if isinstance(row, BadRow):
            chunk.bad.append(row)
        else:
            chunk.records.append(row)
            chunk.locations.append(loc)
    return chunk


def _read_piece(piece: _Piece) -> Chunk:
    if piece.kind == "chunk":
        assert piece.chunk is not None
        return piece.chunk
    if piece.kind == "jsonl":
        try:
            with open(piece.path, "rb") as fh:
                fh.seek(piece.start)
                data = fh.read(piece.stop - piece.start)
        except OSError as exc:
            raise InputError(f"{piece.path}: cannot open ({exc.strerror or exc})") from None
        return _parse_jsonl(data, piece.path, piece.first_line)
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(piece.path)
    groups, offset, first = [], 0, None
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if offset + n > piece.start and offset < piece.stop:
            groups.append(i)
            first = offset if first is None else first
        offset += n
    table = pf.read_row_groups(groups).slice(piece.start - (first or 0), piece.stop - piece.start)
    records = table.to_pylist()
    locations = [f"{piece.path} row {piece.start + i}" for i in range(len(records))]
    return Chunk(0, records, locations)


def _read_row(piece: _Piece) -> dict[str, Any]:
    """A piece as the actors take it: a pickled chunk, or the error reading it raised (which
    travels on to the driver and is raised there as is)."""
    row: dict[str, Any] = {"index": piece.index, "shard": piece.shard, "shards": piece.shards}
    try:
        chunk = _read_piece(piece)
        chunk.index = piece.index
        row["chunk"] = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
        row["error"] = None
    except Exception as exc:
        row["chunk"] = None
        row["error"] = _pack_error(exc)
    return row


def _read_schema() -> pa.Schema:
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


def read_pieces(batch: pa.Table) -> pa.Table:
    """Ray Data read stage: piece descriptors -> pickled chunks (one row per piece)."""
    import pyarrow as pa

    rows = [_read_row(pickle.loads(d)) for d in batch.column("piece").to_pylist()]
    return pa.Table.from_pylist(rows, schema=_read_schema())


# ---------------------------------------------------------------- scoring (Ray actors)


class _Tally(Progress):
    """Collects an actor's progress ticks so the driver can replay them."""

    def __init__(self) -> None:
        self.rows = 0
        self.tokens = 0

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.rows += rows
        self.tokens += tokens


# A NaN with a payload of our own: the score of a candidate another shard runs. A model's
# own NaN (a broken checkpoint) has the default payload, so the two never mix up.
_FOREIGN_BITS = struct.pack("<Q", 0x7FF8_C0DE_5CA1_AB1E)
_FOREIGN = struct.unpack("<d", _FOREIGN_BITS)[0]


def _is_foreign(value: Any) -> bool:
    return isinstance(value, float) and value != value and struct.pack("<d", value) == _FOREIGN_BITS


class _ShardModel:
    """The reward model as one shard's :class:`Scorer` sees it.

    Every shard of a chunk plans the same batches (same rows, same budget, same code as the
    local engine); each forward pass (a ``score_*`` call, its batch the last argument) is
    numbered, and this shard runs only its own (number % shards == shard), answering the
    others with the marker NaN. The driver keeps each candidate's score from the shard that
    ran it: the batches are the local engine's, so the scores are too, to the last bit.
    After an out-of-memory split the plans may diverge, so from then on this shard runs
    every pass (still exact scores; some candidates are just scored twice).
    """

    def __init__(self, rm: Any, shard: int, shards: int) -> None:
        self._rm = rm
        self._shard = shard
        self._shards = shards
        self._calls = 0
        self._all = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._rm, name)
        if not name.startswith("score_") or not callable(attr):
            return attr

        def forward(*args: Any, **kwargs: Any) -> Any:
            n = self._calls
            self._calls += 1
            batch = args[-1] if args else None
            if not self._all and n % self._shards != self._shard and isinstance(batch, list):
                return [_FOREIGN] * len(batch)
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                from .scoring import is_oom

                if is_oom(exc):
                    self._all = True
                raise

        return forward


def _pack_error(exc: BaseException) -> bytes:
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
        text = f"{type(exc).__name__}: {exc}"
        return pickle.dumps((pickle.dumps(RuntimeError(f"Ray worker failed: {text}")), tb))


def _unpack_error(blob: bytes) -> BaseException:
    data, tb = pickle.loads(blob)
    exc = pickle.loads(data)
    if os.environ.get("CODESCALER_DEBUG") == "1" and hasattr(exc, "add_note"):
        exc.add_note("in a Ray worker:\n" + tb)
    return exc


class ScorerActor:
    """Ray Data actor: loads the reward model once, then scores one piece per row.

    Input batches hold ``index``, ``shard``, ``shards``, ``chunk`` (a pickled
    :class:`Chunk`) and ``error`` (from the reader); the output has one row per piece: the
    result table as Arrow IPC (with the ``ROW_ID`` column), the rows set aside, counters,
    and the provenance of the loaded model. Errors are returned, not raised, so the driver
    reports them as the local engine would. Two calls may run at once (Ray's
    ``max_concurrent_calls_per_actor``): one tokenizes while the other runs the model, as
    the local engine overlaps the next chunk's preparation with the forward passes.
    """

    def __init__(
        self, cfg: RunConfig, pipeline: PipelineOptions, fields: Fields, device: str,
        threads: int | None,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.pipeline = pipeline
        self.fields = fields
        self.rm: Any = None
        self.scorer: Any = None
        self.options: Any = None
        self.error: bytes | None = None
        self.meta = ""
        self.worker = f"{os.uname().nodename}:{os.getpid()}"
        self.prepare_lock = threading.Lock()  # the tokenizer is not thread-safe
        self.model_lock = threading.Lock()  # one forward pass at a time on the device
        try:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            if threads:
                import torch

                torch.set_num_threads(threads)
            if pipeline.score:
                from .model import load_reward_model
                from .scoring import Scorer

                self.rm = load_reward_model(replace(cfg.model, device=device))
                self.options = scoring_options(cfg)
                self.scorer = Scorer(self.rm, self.options)
            from .pipeline import provenance

            self.meta = json.dumps(provenance(self.rm, pipeline))
        except Exception as exc:
            self.error = _pack_error(exc)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        names = ("index", "shard", "shards", "chunk", "error")
        cols = [batch.column(c).to_pylist() for c in names]
        rows = [self._one(*args) for args in zip(*cols, strict=True)]
        return pa.Table.from_pylist(rows, schema=_result_schema())

    def _one(
        self, index: int, shard: int, shards: int, blob: bytes | None, error: bytes | None
    ) -> dict[str, Any]:
        import pyarrow as pa

        from .pipeline import finish_chunk, prepare_chunk

        row: dict[str, Any] = {"index": index, "shard": shard, "meta": self.meta}
        row["worker"] = self.worker
        if error is not None or self.error is not None:
            return {**row, "error": error or self.error}
        try:
            chunk: Chunk = pickle.loads(blob)  # type: ignore[arg-type]
            scorer = self.scorer
            if shards > 1 and scorer is not None:
                from .scoring import Scorer

                scorer = Scorer(_ShardModel(self.rm, shard, shards), self.options)
            with self.prepare_lock:
                prepared = prepare_chunk(chunk, self.fields, self.pipeline, scorer, "skip")
            tally = _Tally()
            with self.model_lock:
                calls = self.rm.forward_calls if self.rm is not None else 0
                result = finish_chunk(prepared, self.pipeline, scorer, tally)
                calls = (self.rm.forward_calls - calls) if self.rm is not None else 0
            ids = [(index << _ROW_ID_SHIFT) + i for i in prepared.rows]
            table = result.table.append_column(ROW_ID, pa.array(ids, pa.int64()))
            return {
                **row,
                "table": _ipc(table),
                "bad": pickle.dumps(result.bad),
                "n_read": chunk.n_read,
                "unique_scored": result.unique_scored,
                "rows_done": tally.rows,
                "tokens": tally.tokens,
                "forward_calls": calls,
            }
        except Exception as exc:
            return {**row, "error": _pack_error(exc)}


def _result_schema() -> pa.Schema:
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
            ("rows_done", pa.int64()),
            ("tokens", pa.int64()),
            ("forward_calls", pa.int64()),
        ]
    )


def _ipc(table: pa.Table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all()


# ---------------------------------------------------------------- Ray session


@dataclass
class _Session:
    started_local: bool = False  # we started a cluster for this run (and stop it)
    connected: bool = False  # we called ray.init (and call ray.shutdown)
    node_id: str = ""
    single_node: bool = True
    actor_start_timeout_s: int = 0


@contextlib.contextmanager
def _ray_session(ray: Any, opts: RayOptions) -> Iterator[_Session]:
    """Connect (or start a local cluster); always disconnect/stop again, even on Ctrl-C."""
    from ray.data import DataContext

    session = _Session(actor_start_timeout_s=opts.actor_start_timeout_s)
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


def _resolve_resources(ray: Any, opts: RayOptions, cfg: RunConfig, local: bool) -> _Resources:
    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0))
    cpus = float(total.get("CPU", 0))
    device = (cfg.model.device or "auto").lower()
    wants_gpu = device == "auto" or device.startswith("cuda")
    gpw = opts.gpus_per_worker
    if gpw is None:
        gpw = 1.0 if gpus > 0 and wants_gpu and cfg.pipeline.score else 0.0
    if gpw > 0 and not wants_gpu:
        raise UsageError(f"--device {cfg.model.device} conflicts with --gpus-per-worker {gpw:g}")
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
    return _Resources(workers, gpw, cpw, read_cpus, actor_device, threads)


def _node_cpus(ray: Any, node_id: str) -> float:
    for n in ray.nodes():
        if n.get("NodeID") == node_id:
            return float(n.get("Resources", {}).get("CPU", 0))
    return 0.0


# ---------------------------------------------------------------- the run


def _run(
    session: _Session,
    res: _Resources,
    sources: list[_Source],
    fields: Fields,
    cfg: RunConfig,
    pipeline: PipelineOptions,
    out_dir: str | None,
    summary: RunSummary,
    progress: Progress,
    stdout: IO[str] | None,
) -> None:
    specs = [s.spec for s in sources]
    pieces, n_chunks = _pieces(sources, res.num_workers)
    to_stdout = cfg.output == "-"
    base = out_dir if out_dir is not None else cfg.output
    rejected_path = cfg.rejected_path or default_rejected_path(base, specs)

    partial: PartialRun | None = None
    if not to_stdout:
        partial = PartialRun(base, run_fingerprint(specs, cfg, res.device))
    # stdin cannot be fingerprinted, so a run reading it never resumes.
    resume = "never" if any(s.kind == "stdin" for s in specs) else cfg.resume
    writer = StdoutWriter(stdout, rejected_path) if to_stdout else None
    stack = contextlib.ExitStack()
    try:
        meta: dict[str, str] | None = None
        if partial is not None:
            msg = partial.open(resume)
            if msg:
                progress.message(msg)
            for i in sorted(partial.parts):
                meta = meta or _part_meta(partial, i)
                add_resumed(summary, partial, i)
                progress.advance(partial.parts[i].rows_written, 0)
        todo = [p for p in pieces if partial is None or not partial.done(p.index)]
        gate = _ErrorGate(cfg.on_bad_row, done=set(partial.parts) if partial else set())
        shards: dict[int, list[dict[str, Any]]] = {}
        workers: set[str] = set()
        forward_calls = 0
        if todo:
            gpu = f", {res.gpus_per_worker:g} GPU each" if res.gpus_per_worker else ""
            split = f", each in {todo[0].shards} shards" if todo[0].shards > 1 else ""
            progress.message(
                f"Ray: {res.num_workers} worker(s){gpu}; {n_chunks - len(gate.done)} chunk(s) "
                f"of up to {cfg.chunk_size} rows{split}"
            )
            ds = _dataset(session, res, cfg, pipeline, fields, todo)
            results = _iter_results(ds, res, session.actor_start_timeout_s)
            stack.enter_context(contextlib.closing(results))
            for row in results:
                if row["error"] is not None:
                    raise _unpack_error(row["error"])
                workers.add(row["worker"])
                forward_calls += row["forward_calls"]
                got = shards.setdefault(row["index"], [])
                got.append(row)
                if len(got) < todo[0].shards:
                    continue
                del shards[row["index"]]
                got.sort(key=lambda r: r["shard"])
                first = got[0]
                index = first["index"]
                if meta is None:
                    meta = json.loads(first["meta"])
                table = _merge_shards([_from_ipc(r["table"]) for r in got])
                table = _check_row_ids(table, index)
                bad: list[BadRow] = pickle.loads(first["bad"])
                rejected = rejected_rows(bad)
                summarize_chunk(summary, ChunkResult(table, bad, first["unique_scored"]),
                                first["n_read"])  # fmt: skip
                progress.advance(first["rows_done"], first["tokens"])
                gate.add(index, bad)
                if partial is not None:
                    info = PartInfo(
                        first["n_read"], table.num_rows, len(bad), first["unique_scored"]
                    )
                    partial.write_part(index, _with_meta(table, meta), rejected, info)
                else:
                    assert writer is not None
                    writer.add(index, table, rejected)
            progress.message(f"Ray: {len(todo)} piece(s) scored by {len(workers)} worker(s)")
        gate.finish()
        if meta is None:
            from .pipeline import provenance

            meta = provenance(None, pipeline)
        if partial is not None:
            if out_dir is not None:
                _finalize_dir(partial, out_dir, meta, rejected_path)
            else:
                partial.finalize(meta, rejected_path)
        elif writer is not None:
            writer.finish()
        if summary.rejected:
            summary.rejected_path = rejected_path
        summary.forward_calls = forward_calls
    except (InputError, UsageError):
        # As in the local engine: a bad input makes the partial work useless.
        if partial is not None:
            partial.discard()
        raise
    finally:
        stack.close()  # stop Ray Data's executor before Ray itself goes
        if writer is not None:
            writer.close()


def _merge_shards(tables: list[pa.Table]) -> pa.Table:
    """One chunk's table from its shards: each candidate's score (and reward) comes from the
    first shard that ran it; all other columns are the same in every shard."""
    base = tables[0]
    if len(tables) == 1 or "score" not in base.column_names:
        return base
    scores = [t.column("score").to_pylist() for t in tables]
    rewards = [t.column("reward").to_pylist() for t in tables]
    score, reward = [], []
    for i in range(base.num_rows):
        k = next((k for k, s in enumerate(scores) if not _is_foreign(s[i])), None)
        if k is None:
            raise RuntimeError("Ray engine: a candidate was scored by no shard")
        score.append(scores[k][i])
        reward.append(rewards[k][i])
    import pyarrow as pa

    for name, values in (("score", score), ("reward", reward)):
        pos = base.column_names.index(name)
        base = base.set_column(pos, name, pa.array(values, base.schema.field(name).type))
    return base


def _dataset(
    session: _Session,
    res: _Resources,
    cfg: RunConfig,
    pipeline: PipelineOptions,
    fields: Fields,
    todo: list[_Piece],
) -> Any:
    """from_items(pieces) -> map_batches(read_pieces) -> map_batches(ScorerActor)."""
    import inspect

    import pyarrow as pa
    import ray.data as rd

    if all(p.kind == "chunk" for p in todo):
        # Read on the driver already (stdin, JSON arrays, datasets, small inputs): no tasks.
        ds = rd.from_arrow(
            [pa.Table.from_pylist([_read_row(p)], schema=_read_schema()) for p in todo]
        )
    else:
        items = [{"piece": pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)} for p in todo]
        ds = rd.from_items(items, override_num_blocks=len(items))
        read_args: dict[str, Any] = {"num_cpus": res.read_cpus}
        # Reads run on the driver's node: input paths need only exist there (as for the
        # local engine); the parsed pieces reach the GPU nodes through the object store.
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
            ds = ds.map_batches(read_pieces, batch_size=1, batch_format="pyarrow", **read_args)
    # Two calls per actor: one tokenizes the next piece while the other runs the model
    # (ScorerActor's locks keep it to one of each). A chunk split into shards is not worth
    # queueing: one shard per actor at a time, so the shards spread over all actors.
    sharded = todo[0].shards > 1
    pool: dict[str, Any] = {"size": res.num_workers}
    params = inspect.signature(rd.ActorPoolStrategy).parameters
    if "max_tasks_in_flight_per_actor" in params:
        pool["max_tasks_in_flight_per_actor"] = 1 if sharded else 2
    if "enable_true_multi_threading" in params and not sharded:
        pool.update(max_concurrent_calls_per_actor=2, enable_true_multi_threading=True)
    actor_args: dict[str, Any] = {
        "compute": rd.ActorPoolStrategy(**pool),
        "num_cpus": res.cpus_per_worker,
        "fn_constructor_args": (cfg, pipeline, fields, res.device, res.threads),
    }
    if res.gpus_per_worker:
        actor_args["num_gpus"] = res.gpus_per_worker
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ray_remote_args is deprecated (max_restarts below)
        if session.single_node:
            # On one machine an actor that dies will most likely die again: fail (a rerun
            # resumes) rather than restart forever. Multi-node clusters keep Ray Data's
            # restarts (a lost node). This also avoids Ray's warning about restarts.
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


def _iter_results(ds: Any, res: _Resources, timeout_s: int) -> Iterator[dict[str, Any]]:
    """Result rows as pieces finish (any order); stops Ray Data's executor on early exit."""
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
    """Rows come back in input order, all from the piece sent (then the id column goes)."""
    ids = table.column(ROW_ID).to_pylist()
    lo, hi = index << _ROW_ID_SHIFT, (index + 1) << _ROW_ID_SHIFT
    if any(not lo <= r < hi for r in ids) or any(a >= b for a, b in itertools.pairwise(ids)):
        raise RuntimeError(f"Ray engine: rows of block {index} came back out of order")
    return table.drop_columns([ROW_ID])


def _with_meta(table: pa.Table, meta: dict[str, str]) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})


def _part_meta(partial: PartialRun, index: int) -> dict[str, str] | None:
    import pyarrow.parquet as pq

    raw = pq.read_schema(partial.part_path(index)).metadata or {}
    meta = {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"codescaler.")}
    return meta or None


class _ErrorGate:
    """``--on-bad-row error``: raise the first bad row in input order, as soon as every
    piece before it has finished (pieces finish in any order)."""

    def __init__(self, mode: str, done: set[int]) -> None:
        self.mode = mode
        self.done = done
        self.first: tuple[int, BadRow] | None = None
        self.next = 0

    def add(self, index: int, bad: list[BadRow]) -> None:
        self.done.add(index)
        if self.mode == "error" and bad and (self.first is None or index < self.first[0]):
            # The row process_chunk would raise on: the first in file order (prepare_chunk
            # sorts them so).
            self.first = (index, bad[0])
        self._check()

    def _check(self) -> None:
        while self.next in self.done:
            self.next += 1
        if self.first is not None and self.next >= self.first[0]:
            b = self.first[1]
            raise BadRowError(b.location, b.reason)

    def finish(self) -> None:
        if self.first is not None:
            b = self.first[1]
            raise BadRowError(b.location, b.reason)


def _finalize_dir(
    partial: PartialRun, out_dir: str, meta: dict[str, str], rejected_path: str
) -> None:
    """``-o DIR/``: the parts become ``DIR/part-NNNNN.parquet`` in input order, one schema,
    provenance metadata in each; then the partial directory goes."""

    import pyarrow.parquet as pq

    order = sorted(partial.parts)
    schemas = [pq.read_schema(partial.part_path(i)) for i in order]
    schema = unify(schemas).with_metadata(meta)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):  # parts of an earlier run into the same directory
        if name.startswith("part-") and name.endswith(".parquet"):
            os.unlink(os.path.join(out_dir, name))
    for k, (i, s) in enumerate(zip(order, schemas, strict=True)):
        src = partial.part_path(i)
        dst = os.path.join(out_dir, f"part-{k:05d}.parquet")
        has_meta = all((s.metadata or {}).get(k.encode()) == v.encode() for k, v in meta.items())
        if has_meta and s.remove_metadata().equals(schema.remove_metadata()):
            os.replace(src, dst)  # written by this engine with the metadata: keep as is
        else:  # another type for some column, or a part the local engine wrote
            tmp = dst + ".tmp"
            pq.write_table(conform(pq.read_table(src), schema), tmp)
            os.replace(tmp, dst)
    if not order:
        pq.write_table(schema.empty_table(), os.path.join(out_dir, "part-00000.parquet"))
    partial.merge_rejected(order, rejected_path)
    partial.discard()
