"""Where the scoring step runs: one resumable loop (loop.py) over engines that score chunks
in this process (local.py) or on a Ray cluster (ray/). The HTTP server (``serve/``) is not
an engine of this loop: it has its own coalescing worker over the same scorer."""
