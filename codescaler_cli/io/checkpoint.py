"""Resumable output: finished chunks are kept in ``OUTPUT.partial/`` until the run ends.

Layout: ``manifest.json`` (fingerprint of inputs and every option that affects rows,
plus per-chunk counts) and one ``part-NNNNNN.parquet`` (+ rejected rows) per chunk.
A rerun with the same fingerprint skips finished chunks; the final file appears at
its path only when complete (atomic rename), then the partial directory is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import output_format
from ..tables import conform, decoded_rows, json_columns, unify_parts
from . import records
from .lock import LOCK_NAME
from .writers import (
    RowsWriter,
    atomic_path,
    is_json_document,
    remove_stale_temporaries,
    write_jsonl_rows,
)

if TYPE_CHECKING:
    import pyarrow as pa

MANIFEST = "manifest.json"
# Metadata of one part's rows, not the run's: kept by each part of a directory output.
PART_KEYS = ("codescaler.cached_rows",)
FORMAT_VERSION = 1


@dataclass
class PartInfo:
    rows_read: int
    rows_written: int
    rejected: int
    unique_scored: int
    cached: int = 0  # rows from the score cache (absent in manifests of older runs)


class PartialRun:
    def __init__(self, output: str, fingerprint: dict[str, Any]) -> None:
        self.output = output
        self.dir = output + ".partial"
        self.fingerprint = {"format": FORMAT_VERSION, **fingerprint}
        self.parts: dict[int, PartInfo] = {}

    # ------------------------------------------------------------ lifecycle

    def open(self, resume: str) -> str | None:
        """Prepare the directory (its lock already held, io/lock.py); returns a message for
        the user when something happened."""
        message = None
        old = self._read_manifest() if os.path.isdir(self.dir) else None
        if old is not None:
            what = _changed(old.get("fingerprint") or {}, self.fingerprint)
            if resume == "never" and old.get("parts"):
                message = f"discarding previous partial run in {self.dir} (--resume never)"
                self.discard()
            elif what:
                message = f"{what} since the interrupted run; starting over (cleared {self.dir})"
                self.discard()
            else:
                self.parts = {
                    int(k): PartInfo(**v)
                    for k, v in old.get("parts", {}).items()
                    if os.path.exists(self.part_path(int(k)))
                }
                if self.parts:
                    rows = sum(p.rows_read for p in self.parts.values())
                    message = f"resuming: {len(self.parts)} finished chunk(s), {rows} rows, from {self.dir}"
        os.makedirs(self.dir, exist_ok=True)
        self._remove_temporaries()
        self._write_manifest()
        return message

    def discard(self) -> None:
        """Remove every finished part (the lock file stays: its holder is still running)."""
        if not os.path.isdir(self.dir):
            return
        for name in os.listdir(self.dir):
            if name != LOCK_NAME:
                path = os.path.join(self.dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
        self.parts = {}

    def remove(self) -> None:
        """The whole directory, lock file included (the run is over)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def _remove_temporaries(self) -> None:
        """Files a killed run was writing: its parts' and its final merge's temporaries (no
        other run is writing them: this one holds the output's lock)."""
        for name in os.listdir(self.dir):
            if name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.dir, name))
        remove_stale_temporaries(self.output)

    # ------------------------------------------------------------ parts

    def part_path(self, index: int) -> str:
        return os.path.join(self.dir, f"part-{index:06d}.parquet")

    def rejected_part_path(self, index: int) -> str:
        return os.path.join(self.dir, f"rejected-{index:06d}.jsonl")

    def write_part(
        self, index: int, table: pa.Table, rejected_rows: list[dict[str, Any]], info: PartInfo
    ) -> None:
        import pyarrow.parquet as pq

        if rejected_rows:
            tmp = self.rejected_part_path(index) + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                write_jsonl_rows(fh, rejected_rows)
            os.replace(tmp, self.rejected_part_path(index))
        tmp = self.part_path(index) + ".tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.part_path(index))
        self.parts[index] = info
        self._write_manifest()

    def read_part(self, index: int) -> pa.Table:
        import pyarrow.parquet as pq

        return pq.read_table(self.part_path(index))

    def part_meta(self, index: int) -> dict[str, str]:
        """The codescaler metadata a part was written with."""
        import pyarrow.parquet as pq

        raw = pq.read_schema(self.part_path(index)).metadata or {}
        return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"codescaler.")}

    # ------------------------------------------------------------ finish

    def finalize(self, metadata: dict[str, str], rejected_path: str | None) -> None:
        """Merge the parts (in chunk order) into the output, atomically; then clean up."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        order = sorted(self.parts)
        schemas = [pq.read_schema(self.part_path(i)) for i in order]
        schema = _merged(schemas, metadata)
        fd, tmp = atomic_path(self.output)
        try:
            if output_format(self.output) == "parquet":
                os.close(fd)
                with pq.ParquetWriter(tmp, schema) as writer:
                    for i, part in zip(order, schemas, strict=True):
                        names = json_columns(part)
                        pf = pq.ParquetFile(self.part_path(i))
                        for batch in pf.iter_batches(batch_size=8192):
                            table = pa.Table.from_batches([batch])
                            writer.write_table(conform(table, schema, names))
                    if not order:
                        writer.write_table(schema.empty_table())
            else:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    rows = RowsWriter(fh, self.output)
                    for i, part in zip(order, schemas, strict=True):
                        names = json_columns(part)
                        for batch in pq.ParquetFile(self.part_path(i)).iter_batches(
                            batch_size=8192
                        ):
                            rows.write(decoded_rows(batch.to_pylist(), names))
                    rows.close()
            os.replace(tmp, self.output)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        records.note_written([self.output])
        if rejected_path:
            self.merge_rejected(order, rejected_path)
        self.remove()

    def finalize_dir(self, out_dir: str, metadata: dict[str, str], rejected_path: str) -> None:
        """``-o DIR/``: the parts become ``DIR/part-NNNNN.parquet`` in input order, one schema,
        provenance metadata in each; then the partial directory goes. Of what DIR held, only
        files codescaler recorded there are replaced or removed (paths.check_paths refused
        a directory holding anything else before the run began)."""
        import pyarrow.parquet as pq

        everything = sorted(self.parts)
        schema = _merged([pq.read_schema(self.part_path(i)) for i in everything], metadata)
        # Chunks whose every row was set aside leave no part: an empty part would stop the
        # directory from being read back (an empty input is an error).
        order = [i for i in everything if self.parts[i].rows_written]
        schemas = [pq.read_schema(self.part_path(i)) for i in order]
        os.makedirs(out_dir, exist_ok=True)
        old = [
            os.path.join(out_dir, n)
            for n in records.load(out_dir)["files"]
            if records.written_here(os.path.join(out_dir, n))
        ]
        new = [os.path.join(out_dir, f"part-{k:05d}.parquet") for k in range(max(1, len(order)))]
        records.note_pending(new)  # a run killed from here on leaves only its own files
        for i, s, dst in zip(order, schemas, new, strict=False):
            src = self.part_path(i)
            same = s.remove_metadata().equals(schema.remove_metadata())
            if same and _has_meta(s, _meta(schema)):
                os.replace(src, dst)  # already as it must be: keep as is
            else:  # another type for some column, or other metadata
                fd, tmp = atomic_path(dst)
                os.close(fd)
                table = conform(pq.read_table(src), schema)
                own = {k: v for k, v in _meta(s).items() if k in PART_KEYS}
                pq.write_table(table.replace_schema_metadata({**_meta(schema), **own}), tmp)
                os.replace(tmp, dst)
        if not order:
            pq.write_table(schema.empty_table(), new[0])
        stale = [p for p in old if p not in new]
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        records.forget(stale)
        records.note_written(new)
        self.merge_rejected(everything, rejected_path)
        self.remove()

    def merge_rejected(self, order: list[int], rejected_path: str) -> None:
        """Concatenate the parts' rejected rows (in chunk order) into one file, atomically
        (none: an earlier run's file for this output is stale and goes)."""
        paths = [
            self.rejected_part_path(i) for i in order if os.path.exists(self.rejected_part_path(i))
        ]
        if not paths:
            records.remove_own(rejected_path)
            return
        fd, tmp = atomic_path(rejected_path)
        try:
            if is_json_document(rejected_path):
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    rows = RowsWriter(out, rejected_path)
                    for p in paths:
                        with open(p, encoding="utf-8") as fh:
                            rows.write(json.loads(line) for line in fh)
                    rows.close()
            else:
                with os.fdopen(fd, "wb") as out:
                    for p in paths:
                        with open(p, "rb") as fh:
                            shutil.copyfileobj(fh, out)
            os.replace(tmp, rejected_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        records.note_written([rejected_path], role="rejected")

    # ------------------------------------------------------------ manifest

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.dir, MANIFEST), encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def _write_manifest(self) -> None:
        data = {
            "fingerprint": self.fingerprint,
            "parts": {str(k): vars(v) for k, v in sorted(self.parts.items())},
        }
        path = os.path.join(self.dir, MANIFEST)
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between two runs' fingerprints, in words (None: nothing)."""
    if old == new:
        return None
    if old.get("inputs") != new.get("inputs"):
        return "the input changed"
    if old.get("model") != new.get("model"):
        return "the model changed (its weights, config, tokenizer, template or dtype)"
    return "the options changed"


def _merged(schemas: list[pa.Schema], metadata: dict[str, str]) -> pa.Schema:
    """The parts' unified schema, with the run's provenance next to its JSON-text columns."""
    schema = unify_parts(schemas)
    return schema.with_metadata({**metadata, **_meta(schema)})


def _meta(schema: pa.Schema) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}


def _has_meta(schema: pa.Schema, metadata: dict[str, str]) -> bool:
    have = schema.metadata or {}
    return all(have.get(k.encode()) == v.encode() for k, v in metadata.items())
