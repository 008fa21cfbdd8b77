"""Where the scoring step runs: one resumable loop (loop.py) over engines that score chunks
in this process (local.py), on a Ray cluster (ray/), or for HTTP requests (the server)."""
