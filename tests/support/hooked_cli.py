"""``codescaler`` with test hooks, run as a script in a subprocess:

    python tests/support/hooked_cli.py score ...

Environment:
- ``CODESCALER_TEST_BLOCK_AFTER=N``: after the N-th finished chunk is checkpointed, create
  ``CODESCALER_TEST_SIGNAL`` (a path) and block until ``CODESCALER_TEST_RELEASE`` (a path)
  exists, or until killed when it is not set.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from codescaler_cli.io.checkpoint import PartialRun

block_after = int(os.environ.get("CODESCALER_TEST_BLOCK_AFTER", "0"))

if block_after:
    real_write = PartialRun.write_part
    written = []

    def write_part(self, index, *args, **kwargs):
        real_write(self, index, *args, **kwargs)
        written.append(index)
        if len(written) == block_after:
            Path(os.environ["CODESCALER_TEST_SIGNAL"]).touch()
            release = os.environ.get("CODESCALER_TEST_RELEASE")
            while not (release and os.path.exists(release)):
                time.sleep(0.05)

    PartialRun.write_part = write_part

if __name__ == "__main__":
    from codescaler_cli.cli import main

    sys.argv[0] = "codescaler"
    main()
