"""Chunks the driver reads itself, handed to the cluster without holding them all.

stdin, pipes, compressed files, JSON documents and Hugging Face datasets cannot be cut into
ranges unread: the loop reads them chunk by chunk on the driver. Each such chunk is written
to a spool file on the driver's node as soon as it is read and becomes a range of that file
(a ``spool`` piece), read by the read tasks that run on that node like any other range.
The driver holds one chunk at a time, whatever the input's size; the spool lives in a
private temporary directory for the run.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator

from ...io.source import ChunkRef, Piece
from ..base import Work

SPOOL_NAME = "chunks.pickle"


def spooled(work: Iterator[Work], directory: str) -> Iterator[Work]:
    """``work`` with every chunk read on the driver replaced by its range in the spool."""
    path = os.path.join(directory, SPOOL_NAME)
    with open(path, "ab") as fh:
        for w in work:
            chunk = w.ref.chunk
            if chunk is None:
                yield w
                continue
            data = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
            start = fh.tell()
            fh.write(data)
            fh.flush()
            piece = Piece("spool", path, start, start + len(data))
            w.ref.chunk = chunk = None  # the chunk lives on in the spool only
            yield Work(ChunkRef(w.ref.index, w.ref.spec, piece=piece), w.fields)
