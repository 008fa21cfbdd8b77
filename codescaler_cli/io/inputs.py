"""What to read: files, globs, directories, stdin and Hugging Face datasets, resolved up front."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..config import JSONL_SUFFIXES, PARQUET_SUFFIXES
from ..errors import InputError, UsageError

HF_PREFIX = "hf://datasets/"


@dataclass(frozen=True)
class InputSpec:
    """One input: a file, ``-`` (stdin), or a Hugging Face dataset (``hf://datasets/NAME``)."""

    kind: str  # "jsonl", "parquet", "stdin", "hf", "hf-disk"
    path: str
    split: str = "train"
    config: str | None = None

    @property
    def name(self) -> str:
        return "<stdin>" if self.kind == "stdin" else self.path

    @property
    def is_file(self) -> bool:
        return self.kind in ("jsonl", "parquet")


def input_kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(
        f"{path}: unknown input format (expected .jsonl, .json, .ndjson or .parquet, "
        "'-' for JSON Lines on stdin, or hf://datasets/NAME)"
    )


def resolve_inputs(
    paths: Iterable[str],
    *,
    dataset: str | None = None,
    split: str = "train",
    exclude: Iterable[str] = (),
) -> list[InputSpec]:
    """Expand globs and directories into concrete inputs, in a stable sorted order.

    ``exclude``: paths never read as input (a run's own output and its ``.partial/``
    directory, which may sit inside an input directory).
    """
    skip = [os.path.realpath(p) for p in exclude]

    def excluded(path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == s or real.startswith(s + os.sep) for s in skip)

    specs: list[InputSpec] = []
    if dataset:
        specs.append(InputSpec("hf", dataset, split))
    for raw in paths:
        if raw == "-":
            specs.append(InputSpec("stdin", "-"))
        elif raw.startswith(HF_PREFIX):
            name = raw[len(HF_PREFIX) :].strip("/")
            if not name:
                raise UsageError(f"{raw}: missing dataset name after {HF_PREFIX}")
            specs.append(InputSpec("hf", name, split))
        elif any(ch in raw for ch in "*?["):
            matches = sorted(glob.glob(raw, recursive=True))
            matches = [m for m in matches if os.path.isfile(m) and not excluded(m)]
            if not matches:
                raise InputError(f"{raw}: no files match this pattern")
            specs.extend(InputSpec(input_kind(m), m) for m in matches)
        elif os.path.isdir(raw):
            if _is_saved_dataset(raw):
                specs.append(InputSpec("hf-disk", raw, split))
                continue
            found = sorted(
                str(p)
                for p in Path(raw).rglob("*")
                if p.is_file()
                and p.name.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)
                and not excluded(str(p))
            )
            if not found:
                raise InputError(f"{raw}: directory holds no .parquet or .jsonl files")
            specs.extend(InputSpec(input_kind(m), m) for m in found)
        else:
            kind = input_kind(raw)
            if not os.path.exists(raw):
                raise InputError(f"{raw}: no such file")
            if os.path.isdir(raw):
                raise InputError(f"{raw}: is a directory")
            if not os.access(raw, os.R_OK):
                raise InputError(f"{raw}: permission denied")
            specs.append(InputSpec(kind, raw))
    if not specs:
        raise UsageError("no input given")
    if sum(s.kind == "stdin" for s in specs) > 1:
        raise UsageError("'-' (stdin) can be given only once")
    return specs


def _is_saved_dataset(path: str) -> bool:
    p = Path(path)
    return (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()


def fingerprint_inputs(specs: list[InputSpec]) -> str:
    """A digest that changes when any input file changes (size, mtime, head and tail bytes)."""
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
