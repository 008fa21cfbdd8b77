"""Write docs/cli.md from the commands' own --help (run: python docs/gen_cli.py).

tests/test_docs.py fails when docs/cli.md differs from what this writes, so the
reference can never go stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "cli.md"
WIDTH = 100
COMMANDS = ["score", "extract", "rerank", "eval-pairs", "make-test-model"]


def help_text(*args: str) -> str:
    env = {
        **os.environ,
        "TERMINAL_WIDTH": str(WIDTH),
        "COLUMNS": str(WIDTH),
        "NO_COLOR": "1",
        "TERM": "dumb",
        "PYTHONPATH": str(REPO),
    }
    cmd = [sys.executable, "-m", "codescaler_cli", *args, "--help"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return "\n".join(line.rstrip() for line in out.strip("\n").splitlines())


def render() -> str:
    parts = [
        "# Command-line reference",
        "",
        "Generated from the commands' `--help` by `python docs/gen_cli.py`; a test fails",
        "when this page and the commands disagree.",
        "",
        "```",
        help_text(),
        "```",
    ]
    for name in COMMANDS:
        parts += ["", f"## codescaler {name}", "", "```", help_text(name), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}")
