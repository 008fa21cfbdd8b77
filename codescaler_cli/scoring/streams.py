"""Running forward passes in one or more streams (threads), each with a share of torch's threads.

A pass may return the passes that follow from it (a prompt pass returns its answer
passes); those run before any new pass, so a prompt's cached states are freed soon. No
score depends on which stream ran a pass. The first error (or Ctrl-C) lets the running
passes finish, drops the queued ones (and the states they hold), and is raised.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

# One forward pass; may return the passes that follow from it.
Pass = Callable[[], "list[Pass] | None"]


def run_passes(passes: list[Pass], streams: int) -> None:
    """Run ``passes`` (largest first is best) in up to ``streams`` threads."""
    queue: deque[Pass] = deque(passes)
    # A lone pass (one problem's prompt, say) runs here with every thread; its follow-ups
    # are what the streams share.
    try:
        while queue and (streams <= 1 or len(queue) == 1):
            job = queue.popleft()
            queue.extendleft(reversed(job() or []))
            del job  # an answer pass holds its prompt states: free them before the next
    except BaseException:
        queue.clear()  # the raised error keeps this frame; not the queued prompt states
        raise
    if queue:
        _run_streams(queue, streams)


def _run_streams(queue: deque[Pass], streams: int) -> None:
    import torch

    cond = threading.Condition()
    cancel = threading.Event()  # this run's own: a later run never revives its passes
    finished = threading.Event()
    running, alive = 0, streams
    errors: list[BaseException] = []

    def next_pass() -> Pass | None:
        nonlocal running
        with cond:
            while not queue and running and not cancel.is_set():
                cond.wait()
            if cancel.is_set() or not queue:
                cond.notify_all()
                return None
            running += 1
            return queue.popleft()

    def stop() -> None:
        """Running passes finish; queued ones (and the prompt states they hold) go."""
        with cond:
            cancel.set()
            queue.clear()
            cond.notify_all()

    def stream() -> None:
        nonlocal running, alive
        try:
            while (job := next_pass()) is not None:
                more = None
                try:
                    more = job()
                except BaseException as exc:
                    errors.append(exc)
                    stop()
                del job
                with cond:
                    running -= 1
                    if more and not cancel.is_set():
                        queue.extendleft(reversed(more))
                    del more
                    cond.notify_all()
        finally:
            with cond:
                alive -= 1
                if not alive:
                    finished.set()

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // streams))  # new threads take this count
    workers = [
        threading.Thread(target=stream, name=f"codescaler-stream_{i}", daemon=True)
        for i in range(streams)
    ]
    try:
        for w in workers:
            w.start()
        finished.wait()  # interruptible: Ctrl-C lands here
    except BaseException:
        stop()  # Ctrl-C
        raise
    finally:
        try:
            for w in workers:
                if w.ident is not None:
                    w.join()
        finally:
            torch.set_num_threads(threads)
    if errors:
        raise errors[0]


def serialized(progress: Callable[[int, int], None]) -> Callable[[int, int], None]:
    """``progress`` called from one stream at a time."""
    lock = threading.Lock()

    def tick(candidates: int, tokens: int) -> None:
        with lock:
            progress(candidates, tokens)

    return tick
