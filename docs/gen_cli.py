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
COMMANDS = [
    "score",
    "extract",
    "rerank",
    "eval-pairs",
    "serve",
    "cache",
    "cache info",
    "cache prune",
    "cache clear",
    "make-test-model",
]


# Rendered in one child process: Typer reads the terminal width when it is imported.
_RENDER = """
import sys
from typer.testing import CliRunner
from codescaler_cli.cli import app
for args in sys.argv[1:]:
    result = CliRunner().invoke(app, [*args.split(), "--help"], prog_name="codescaler")
    assert result.exit_code == 0, result.output
    print(result.stdout, end="\\0")
"""


def help_texts(commands: list[str], width: int = WIDTH) -> list[str]:
    """The ``--help`` of ``codescaler COMMAND`` for each command ("" for the root)."""
    env = {
        **os.environ,
        "TERMINAL_WIDTH": str(width),
        "COLUMNS": str(width),
        "NO_COLOR": "1",
        "TERM": "dumb",
        "PYTHONPATH": str(REPO),
    }
    cmd = [sys.executable, "-c", _RENDER, *commands]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    texts = out.split("\0")[: len(commands)]
    return ["\n".join(ln.rstrip() for ln in t.strip("\n").splitlines()) for t in texts]


def render() -> str:
    root, *commands = help_texts(["", *COMMANDS])
    parts = [
        "# Command-line reference",
        "",
        "Generated from the commands' `--help` by `python docs/gen_cli.py`; a test fails",
        "when this page and the commands disagree.",
        "",
        "```",
        root,
        "```",
    ]
    for name, text in zip(COMMANDS, commands, strict=True):
        parts += ["", f"## codescaler {name}", "", "```", text, "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}")
