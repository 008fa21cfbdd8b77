"""A model's identity by content: every file that can change a score, hashed.

A sampled fingerprint (size, mtime, a few megabytes, as the resume check uses) is not
enough here: two fine-tunes of one base have the same size and layout, and must never
share scores. So every file is hashed whole (sha256), but only once per version of the
file: its digest is remembered by path, size, mtime, ctime, inode and device (in the
store, so across runs), and a run re-reads only what changed. Changing a file changes
its mtime and ctime (ctime cannot be set back), or its inode when it is replaced; a file
changed within two seconds of being hashed is not remembered (the clock may not have
ticked since), so it is hashed again next time.

A Hugging Face Hub snapshot already names its files by their hashes: each file is a link
to ``blobs/<sha256 or git sha1>``, so its digest is that name and nothing is read.

Files that cannot change a score are left out: hidden ones (``.git``, download
metadata) and documentation (``*.md``, licences, images).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

StatKey = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device
# Remembered file digests: (path, stat) -> digest or None; and a setter.
Recall = Callable[[str, StatKey], "str | None"]
Remember = Callable[[str, StatKey, str], None]

_DOCS = re.compile(r"(?i)(.*\.(md|markdown|rst|png|jpe?g|gif|svg|pdf)|licen[cs]e.*|notice.*)")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
RACY_NS = 2_000_000_000  # files changed this recently are hashed again next time
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


@dataclass
class ModelFiles:
    """The content digest of a model directory, and what is needed to tell it changed."""

    digest: str
    root: str
    commit: str | None = None  # the Hub commit of a snapshot directory
    stats: dict[str, StatKey] = field(default_factory=dict)

    def unchanged(self) -> bool:
        """Whether every file is as it was when hashed (checked after the weights loaded:
        a file replaced in between must not have its scores stored under the old digest)."""
        return _stats(Path(self.root)) == self.stats


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _files(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or _DOCS.fullmatch(path.name):
            continue
        if path.is_file():
            out.append(path)
    return sorted(out)


def _stats(root: Path) -> dict[str, StatKey]:
    try:
        return {str(p.relative_to(root)): stat_key(p.stat()) for p in _files(root)}
    except OSError:
        return {}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _file_digest(
    path: Path, recall: Recall | None, remember: Remember | None
) -> tuple[str, StatKey]:
    st = path.stat()
    key = stat_key(st)
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs":  # a Hub cache blob, named by its hash
            return "blob:" + target.name, key
    where = str(path.resolve())
    known = recall(where, key) if recall else None
    if known:
        return known, key
    started = time.time_ns()
    digest = "sha256:" + file_sha256(path)
    # Remembered only when its times are older than the clock's granularity could hide: a
    # file rewritten in the same tick as it was hashed would otherwise keep its stat.
    if remember and max(st.st_mtime_ns, st.st_ctime_ns) < started - RACY_NS:
        remember(where, key, digest)
    return digest, key


def directory_digest(
    root: str | os.PathLike[str], recall: Recall | None = None, remember: Remember | None = None
) -> ModelFiles:
    """The digest of a model directory (a local copy or a Hub snapshot)."""
    base = Path(root).resolve()
    h = hashlib.sha256(b"codescaler-model-files\0")
    stats: dict[str, StatKey] = {}
    for path in _files(base):
        rel = str(path.relative_to(base))
        digest, key = _file_digest(path, recall, remember)
        stats[rel] = key
        h.update(f"{rel}\0{digest}\0".encode())
    commit = base.name if base.parent.name == "snapshots" and _COMMIT.match(base.name) else None
    return ModelFiles(h.hexdigest(), str(base), commit, stats)


def has_weights(root: Path) -> bool:
    """Whether a snapshot holds weights (a partly downloaded one may not yet)."""
    try:
        names = [p.name for p in root.iterdir()]
    except OSError:
        return False
    index = [n for n in names if n.endswith(".index.json")]
    if index:
        import json

        try:
            for n in index:
                shards = set(json.loads((root / n).read_text())["weight_map"].values())
                if not all((root / s).exists() for s in shards):
                    return False
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True
    return any(n.endswith(_WEIGHTS) for n in names)


def hub_snapshot(repo_id: str, revision: str | None, online: bool = True) -> Path | None:
    """The local snapshot a load of ``repo_id`` at ``revision`` would use, if it is complete.

    ``online``: the revision is resolved as a load resolves it (the Hub's current commit of
    a branch, so an updated model is never answered from an older one; offline or
    unreachable: the cached one); else from the local cache only (for a model already
    loaded, whose load just did that). None: not downloaded yet, or not a Hub id.
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    try:
        if not online:
            raise LookupError
        path = hf_hub_download(repo_id, "config.json", revision=revision)
    except Exception:
        try:
            path = hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=True)
        except Exception:
            return None
    root = Path(path).parent
    return root if has_weights(root) else None


def model_files(
    name: str,
    revision: str | None,
    recall: Recall | None = None,
    remember: Remember | None = None,
    online: bool = True,
) -> ModelFiles | None:
    """The content digest of the model ``--model name`` loads; None when it cannot be
    known without loading it (a Hub model not downloaded yet)."""
    if os.path.isdir(name):
        if not has_weights(Path(name)):
            return None
        return directory_digest(name, recall, remember)
    if os.path.exists(name) or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return None  # not a directory and not a Hub id: the load reports it
    root = hub_snapshot(name, revision, online)
    return directory_digest(root, recall, remember) if root is not None else None
