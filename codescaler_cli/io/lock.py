"""One writer per output: an exclusive lock on ``OUTPUT.partial/lock``, held for the whole run.

The lock is an ``fcntl`` lock, so the kernel drops it when its process dies: a lock file
left by a killed run is locked by nobody, and the next run takes it over. The file holds
the pid of the run that has it, for the message a second run gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator

from ..errors import OutputError

LOCK_NAME = "lock"


class OutputLock:
    """Held from :meth:`acquire` until :meth:`release` (or the process ends)."""

    def __init__(self, partial_dir: str, output: str) -> None:
        self.dir = partial_dir
        self.output = output
        self.path = os.path.join(partial_dir, LOCK_NAME)
        self.fd: int | None = None
        self.created_dir = False
        self.previous_pid: int | None = None  # a run that held it and died

    def acquire(self) -> None:
        """Take the lock, or fail at once naming the run that holds it."""
        while True:
            if not os.path.isdir(self.dir):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self.dir)
                    self.created_dir = True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the directory went away meanwhile: a run finished
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                who = f"pid {pid}" if pid else "another process"
                raise OutputError(
                    f"{self.output}: another codescaler run ({who}) is writing this output; "
                    "wait for it to finish, or choose another -o"
                ) from None
            # A run that just finished may have removed the file we opened: lock the one
            # that is there now, or the next run would lock another file than ours.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.fd = fd
            pid = _read_pid(fd)
            self.previous_pid = pid if pid and pid != os.getpid() else None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return

    @property
    def holds_new_dir(self) -> bool:
        """Held, on a directory this run created (so removing it loses nothing)."""
        return self.fd is not None and self.created_dir

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def holding(output: str) -> Iterator[None]:
    """The output's lock for a task that writes ``output`` in one go at its end."""
    if output in ("", "-"):
        yield
        return
    lock = OutputLock(output.rstrip("/" + os.sep) + ".partial", output)
    lock.acquire()
    try:
        yield
    finally:
        if lock.created_dir:  # removed while still held: no other run can be in it
            shutil.rmtree(lock.dir, ignore_errors=True)
        lock.release()
