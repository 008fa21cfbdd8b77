"""What to read: files, globs, directories, stdin, pipes and Hugging Face datasets, resolved
up front.

Rules (decided here, once, for every command):

* A file named on the command line is read, whatever it holds.
* A directory or glob expands to its JSON and Parquet files, less what codescaler wrote
  there (Parquet with ``codescaler.*`` metadata; files listed in their directory's
  ``.codescaler-outputs.json``, io/records.py), with a notice: its rejected rows and
  reports always, its outputs when there are other files (earlier outputs next to the
  data are not read back as fresh rows). A directory or glob holding only codescaler
  outputs (``-o DIR/`` parts) is read as given.
* The same file given twice (``a.jsonl ./a.jsonl``, a glob and a name) is read once.
* A pipe (``<(cmd)``, ``/dev/fd/N``, a FIFO) is read once as a stream, like stdin.
* A saved ``DatasetDict`` with several splits needs ``--split`` (exit 2 listing them).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from ..errors import InputError, UsageError
from . import formats, records

HF_PREFIX = "hf://datasets/"
DEFAULT_HF_SPLIT = "train"


@dataclass(frozen=True)
class InputSpec:
    """One input: a file, ``-`` (stdin), a pipe, or a Hugging Face dataset."""

    kind: str  # "jsonl", "parquet", "stdin", "stream", "hf", "hf-disk"
    path: str
    split: str = DEFAULT_HF_SPLIT
    config: str | None = None
    # Said to the user when the run starts (files skipped or read once, ...).
    notices: tuple[str, ...] = field(default=(), compare=False)
    label: str | None = field(default=None, compare=False)  # the name in messages, if not path

    @property
    def name(self) -> str:
        return self.label or ("<stdin>" if self.kind == "stdin" else self.path)

    @property
    def is_file(self) -> bool:
        """A regular file: it can be fingerprinted, seeked, and read again."""
        return self.kind in ("jsonl", "parquet")

    @property
    def is_stream(self) -> bool:
        """Read once, front to back: stdin or a pipe (never fingerprinted, never resumed)."""
        return self.kind in ("stdin", "stream")

    @property
    def is_json(self) -> bool:
        return self.kind in ("jsonl", "stdin", "stream")

    @property
    def compression(self) -> str | None:
        return formats.compression(self.path) if self.kind in ("jsonl", "stream") else None

    @property
    def lines_only(self) -> bool:
        """Every line is a row (``.jsonl``/``.ndjson``); else the layout is told from the
        first line (``.json``, stdin, unnamed pipes)."""
        return self.kind in ("jsonl", "stream") and formats.lines_only(self.path)


def input_kind(path: str) -> str:
    if formats.json_name(path):
        return "jsonl"
    if formats.parquet_name(path):
        return "parquet"
    raise InputError(
        f"{path}: unknown input format (expected .jsonl, .json, .ndjson, maybe compressed "
        "as .gz/.zst/.bz2/.xz, or .parquet; '-' for JSON Lines on stdin, or hf://datasets/NAME)"
    )


def resolve_inputs(
    paths: Iterable[str],
    *,
    dataset: str | None = None,
    split: str | None = None,
    exclude: Iterable[str] = (),
) -> list[InputSpec]:
    """Expand globs and directories into concrete inputs, in a stable sorted order.

    ``exclude``: paths never read as input (a run's own output and its ``.partial/``
    directory, which may sit inside an input directory). ``split``: None when not chosen
    (the Hub's ``train``; a saved DatasetDict's only split).
    """
    skip = [os.path.realpath(p) for p in exclude]

    def excluded(path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == s or real.startswith(s + os.sep) for s in skip)

    specs: list[InputSpec] = []
    if dataset:
        specs.append(InputSpec("hf", dataset, split or DEFAULT_HF_SPLIT))
    for raw in paths:
        specs.extend(_resolve_one(raw, split, excluded))
    if not specs:
        raise UsageError("no input given")
    if sum(s.kind == "stdin" for s in specs) > 1:
        raise UsageError("'-' (stdin) can be given only once")
    return _read_once(specs)


def _resolve_one(raw: str, split: str | None, excluded: Callable[[str], bool]) -> list[InputSpec]:
    if raw == "-":
        return [InputSpec("stdin", "-")]
    if raw.startswith(HF_PREFIX):
        name = raw[len(HF_PREFIX) :].strip("/")
        if not name:
            raise UsageError(f"{raw}: missing dataset name after {HF_PREFIX}")
        return [InputSpec("hf", name, split or DEFAULT_HF_SPLIT)]
    if any(ch in raw for ch in "*?["):
        matches = [
            m
            for m in sorted(glob.glob(raw, recursive=True))
            if os.path.isfile(m) and not excluded(m) and not _codescaler_internal(m)
        ]
        if not matches:
            raise InputError(f"{raw}: no files match this pattern")
        for m in matches:
            input_kind(m)  # an unknown format among the matches is named
        return _without_outputs(raw, matches)
    if os.path.isdir(raw):
        if _is_saved_dataset(raw):
            return [_saved_dataset(raw, split)]
        found = sorted(
            str(p)
            for p in Path(raw).rglob("*")
            if p.is_file()
            and (formats.json_name(p.name) or formats.parquet_name(p.name))
            and not excluded(str(p))
            and not _codescaler_internal(str(p))
        )
        if not found:
            raise InputError(f"{raw}: directory holds no .parquet or .jsonl files")
        return _without_outputs(raw, found)
    return [_named_file(raw)]


def _named_file(raw: str) -> InputSpec:
    try:
        st = os.stat(raw)
    except FileNotFoundError:
        input_kind(raw)  # a name no reader takes says so first
        raise InputError(f"{raw}: no such file") from None
    except OSError as exc:
        raise InputError(f"{raw}: cannot open ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{raw}: is a directory")
    if not os.access(raw, os.R_OK):
        raise InputError(f"{raw}: permission denied")
    if not stat.S_ISREG(st.st_mode):  # a pipe, <(process substitution), a terminal
        if formats.parquet_name(raw):
            raise InputError(f"{raw}: Parquet cannot be read from a pipe; write it to a file")
        return InputSpec("stream", raw)
    return InputSpec(input_kind(raw), raw)


def _codescaler_internal(path: str) -> bool:
    """Directory records and checkpoints: never input, whatever the user's pattern."""
    if os.path.basename(path) == records.RECORD:
        return True
    parent = os.path.dirname(os.path.abspath(path))
    return parent.endswith(".partial") and records.is_checkpoint_dir(parent)


def _without_outputs(raw: str, matches: list[str]) -> list[InputSpec]:
    """The matches of a directory or glob, less what codescaler wrote there: its rejected
    rows and reports always, its outputs when there are other files to read."""
    loaded: dict[str, dict] = {}

    def role(path: str) -> str | None:
        directory = os.path.dirname(os.path.abspath(path))
        if directory not in loaded:
            loaded[directory] = records.load(directory)
        return records.role(path, loaded[directory])

    roles = {m: role(m) for m in matches}
    keep = [m for m in matches if roles[m] is None]
    if not keep:  # only codescaler's files: its outputs are what is meant (-o DIR/ parts)
        keep = [m for m in matches if roles[m] == "output"]
    if not keep:
        raise InputError(
            f"{raw}: holds only codescaler's rejected rows and reports, no input "
            "(name a file to read it)"
        )
    skipped = [m for m in matches if m not in set(keep)]
    notice: tuple[str, ...] = ()
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        notice = (
            f"{raw}: not reading {len(skipped)} file(s) codescaler wrote as input: {shown} "
            "(name a file to read it)",
        )
    specs = [InputSpec(input_kind(m), m) for m in keep]
    specs[0] = replace(specs[0], notices=notice)
    return specs


def _read_once(specs: list[InputSpec]) -> list[InputSpec]:
    """Each input once, at its first place; later mentions become a notice."""
    first: dict[object, int] = {}
    out: list[InputSpec] = []
    for spec in specs:
        key = _identity(spec)
        if key is not None and key in first:
            kept = out[first[key]]
            same = "" if spec.path == kept.path else f" (the same input as {kept.path})"
            note = f"{spec.path}{same}: given twice; read once"
            out[first[key]] = replace(kept, notices=(*kept.notices, *spec.notices, note))
            continue
        if key is not None:
            first[key] = len(out)
        out.append(spec)
    return out


def _identity(spec: InputSpec) -> object | None:
    if spec.kind in ("jsonl", "parquet"):
        try:
            st = os.stat(spec.path)
        except OSError:
            return ("path", os.path.realpath(spec.path))
        return ("file", st.st_dev, st.st_ino)
    if spec.kind in ("stream", "hf-disk"):
        return (spec.kind, os.path.realpath(spec.path), spec.split)
    if spec.kind == "hf":
        return ("hf", spec.path, spec.config, spec.split)
    return None  # stdin: '-' twice is refused above


def _is_saved_dataset(path: str) -> bool:
    p = Path(path)
    return (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()


def _saved_dataset(path: str, split: str | None) -> InputSpec:
    """A ``save_to_disk`` folder: a Dataset, or a DatasetDict whose split must be known."""
    splits = _saved_splits(path)
    if splits is None:  # one Dataset: there is nothing to choose
        return InputSpec("hf-disk", path, split or DEFAULT_HF_SPLIT)
    if split is None:
        if len(splits) != 1:
            raise UsageError(
                f"{path}: a saved DatasetDict with splits {', '.join(splits)}; choose one "
                "with --split"
            )
        split = splits[0]
    elif split not in splits:
        raise UsageError(f"{path}: no split {split!r} (have: {', '.join(splits)}); use --split")
    return InputSpec("hf-disk", path, split)


def _saved_splits(path: str) -> list[str] | None:
    try:
        with open(os.path.join(path, "dataset_dict.json"), encoding="utf-8") as fh:
            splits = json.load(fh).get("splits")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(splits, list) or not splits:
        return None
    return [str(s) for s in splits]


_CODEC_SUFFIX = {"gzip": ".gz", "zstd": ".zst", "bz2": ".bz2", "xz": ".xz"}


def copy_streams(
    specs: list[InputSpec], stdin: IO[bytes] | None, directory: str
) -> list[InputSpec]:
    """``specs`` with each stream (stdin, a pipe) copied, as it comes, to a file in
    ``directory``: for tasks that read their input more than once. The copy is read as the
    stream would be (same layout rule and codec) and messages still name the stream."""
    out = []
    for k, spec in enumerate(specs):
        if not spec.is_stream:
            out.append(spec)
            continue
        suffix = (".jsonl" if spec.lines_only else ".json") + _CODEC_SUFFIX.get(
            spec.compression or "", ""
        )
        path = os.path.join(directory, f"stream-{k}{suffix}")
        with open(path, "wb") as fh:
            if spec.kind == "stdin":
                shutil.copyfileobj(stdin if stdin is not None else sys.stdin.buffer, fh, 1 << 20)
            else:
                with open(spec.path, "rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
        out.append(replace(spec, kind="jsonl", path=path, label=spec.name))
    return out


def fingerprint_inputs(specs: list[InputSpec]) -> str:
    """A digest that changes when any input file changes (size, mtime, head and tail bytes).
    Streams are never read here: they can be read only once."""
    h = hashlib.sha256()
    for spec in specs:
        h.update(f"{spec.kind}\0{spec.path}\0{spec.split}\0".encode())
        if spec.is_file and os.path.isfile(spec.path):
            st = os.stat(spec.path)
            h.update(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
            with open(spec.path, "rb") as fh:
                h.update(fh.read(1 << 20))
                if st.st_size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read())
    return h.hexdigest()
