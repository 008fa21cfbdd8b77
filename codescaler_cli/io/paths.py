"""Checks on where a run writes, all made before any work: no output may be an input or
another output, every output's directory must exist and be writable, and an ``-o DIR/``
directory may hold only what codescaler wrote there (io/records.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import OutputError, UsageError
from . import records
from .inputs import InputSpec


def output_dir(output: str) -> str | None:
    """The directory for ``-o DIR/`` (a directory of Parquet parts), else None."""
    if output != "-" and output.endswith(("/", os.sep)):
        return output.rstrip("/" + os.sep) or output
    return None


def run_outputs(output: str, rejected: str | None = None) -> list[str]:
    """Everything a run writes next to its output (never to be read as input)."""
    base = output_dir(output) or output
    paths = [base, base + ".partial"]
    if rejected:
        paths.append(rejected)
    return [p for p in paths if p and p != "-"]


def check_paths(specs: list[InputSpec], outputs: Mapping[str, str | None]) -> None:
    """``outputs``: each output's flag and path (None or ``-``: nothing to check)."""
    inputs = {os.path.realpath(s.path): s.path for s in specs if s.is_file or s.kind == "stream"}
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if not path or path == "-":
            continue
        directory = output_dir(path) if flag == "-o" else None
        target = directory or path
        _check_writable(flag, path, target, is_dir=directory is not None)
        if (
            flag == "-o"
            and os.path.exists(target + ".partial")
            and not os.path.isdir(target + ".partial")
        ):
            raise OutputError(
                f"{flag} {path}: {target}.partial is a file; it must be free for the checkpoint"
            )
        real = os.path.realpath(target)
        if real in inputs:
            raise UsageError(f"{flag} {path} is an input; it would be overwritten")
        if directory is not None:
            inside = [p for r, p in inputs.items() if r.startswith(real + os.sep)]
            if inside:
                raise UsageError(f"{flag} {path}: an input ({inside[0]}) is inside it")
        if real in seen:
            raise UsageError(f"{flag} {path} and {seen[real]} are the same file")
        seen[real] = f"{flag} {path}"
        if directory is not None and os.path.isdir(target):
            _check_own_directory(path, target)


def _check_writable(flag: str, shown: str, path: str, *, is_dir: bool) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(f"{flag} {shown}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {shown}: directory {parent} is not writable")
    if is_dir:
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(f"{flag} {shown}: exists and is not a directory")
    elif os.path.isdir(path):
        raise OutputError(f"{flag} {shown}: is a directory")
    elif os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {shown}: exists and is not writable")


def _check_own_directory(shown: str, directory: str) -> None:
    """``-o DIR/`` replaces the parts an earlier run wrote there, so DIR may hold nothing
    else: codescaler never deletes or mixes in files it did not write."""
    foreign = records.foreign_entries(directory)
    if foreign:
        names = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise OutputError(
            f"-o {shown}: {directory} holds files codescaler did not write ({names}); "
            "choose a new or empty directory"
        )
