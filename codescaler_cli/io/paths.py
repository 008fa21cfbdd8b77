"""Checks on where a run writes, made before any work."""

from __future__ import annotations

import os

from ..errors import OutputError, UsageError
from .inputs import InputSpec


def output_dir(output: str) -> str | None:
    """The directory for ``-o DIR/`` (a directory of Parquet parts), else None."""
    if output != "-" and output.endswith(("/", os.sep)):
        return output.rstrip("/" + os.sep) or output
    return None


def check_output_path(output: str, specs: list[InputSpec], *, directory: bool = False) -> None:
    """Fail before any work when the output cannot be written or would clobber an input."""
    if output == "-":
        return
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise OutputError(f"{output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{output}: directory {parent} is not writable")
    out_real = os.path.realpath(output)
    if directory:
        if os.path.exists(output) and not os.path.isdir(output):
            raise OutputError(f"{output}: exists and is not a directory")
        for spec in specs:
            if spec.is_file and os.path.realpath(spec.path).startswith(out_real + os.sep):
                raise UsageError(
                    f"{output}/: an input ({spec.path}) is inside the output directory"
                )
        return
    if os.path.isdir(output):
        raise OutputError(f"{output}: is a directory")
    for spec in specs:
        if spec.is_file and os.path.realpath(spec.path) == out_real:
            raise UsageError(f"{output}: output path is the same as an input")
