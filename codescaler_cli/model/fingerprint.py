"""What decides a model's scores, cheaply: for the resume fingerprint, so a rerun never mixes
scores of two models (weights swapped in the same directory, another tokenizer, a new
chat template, another dtype)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..config import ModelOptions
from .load import dtype_for, resolve_target

# Files up to this size are hashed whole (config, tokenizer, template); larger ones (weights)
# by their size, mtime, safetensors header and the first and last bytes of their data.
WHOLE_FILE_BYTES = 16 << 20
SAMPLE_BYTES = 1 << 20


def model_fingerprint(options: ModelOptions, device: str | None) -> dict[str, Any]:
    """``device``: where the model runs (default: resolved here, without torch when that is
    certain: a run answered from the score cache never imports it)."""
    kind = str(device).split(":")[0] if device else resolve_target(options).device_type
    name = options.model
    local = os.path.isdir(name)
    files = Path(name) if local else _cached_snapshot(name, options.revision)
    return {
        "model": os.path.abspath(name) if local else name,
        "revision": options.revision,
        "dtype": dtype_for(options.dtype, kind),
        "device_type": kind,
        "files": files_digest(files) if files is not None else None,
    }


def files_digest(directory: Path) -> str:
    """A digest of every file of a model directory (hidden ones aside)."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        st = path.stat()
        h.update(f"{rel}\0{st.st_size}\0".encode())
        with open(path, "rb") as fh:
            if st.st_size <= WHOLE_FILE_BYTES:
                h.update(fh.read())
                continue
            h.update(str(st.st_mtime_ns).encode())
            head = fh.read(8)
            if path.suffix == ".safetensors" and len(head) == 8:
                h.update(fh.read(int.from_bytes(head, "little")))  # tensor names, shapes
            h.update(fh.read(SAMPLE_BYTES))
            fh.seek(max(0, st.st_size - SAMPLE_BYTES))
            h.update(fh.read())
    return h.hexdigest()


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The Hub model's files in the local cache, if it is there (no network)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:
        return None
