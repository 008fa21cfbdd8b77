"""The docs stay true: the CLI reference is generated, help is never cut, the README is short."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))

import gen_cli  # noqa: E402


def test_cli_reference_is_generated_from_the_help():
    current = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == gen_cli.render(), "docs/cli.md is stale: run python docs/gen_cli.py"


def test_help_at_80_columns_cuts_no_option_or_word():
    commands = ["", *gen_cli.COMMANDS]
    for name, text in zip(commands, gen_cli.help_texts(commands, width=80), strict=True):
        assert "Usage: codescaler" in text, name
        assert "…" not in text, (name, [ln for ln in text.splitlines() if "…" in ln])
        assert "<bool>" not in text, name


def test_readme_is_under_10_kb_and_links_the_docs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 10 * 1024
    for page in (
        "docs/cli.md",
        "docs/benchmarks.md",
        "docs/ray.md",
        "docs/serve.md",
        "docs/extraction.md",
    ):
        assert page in readme and (REPO / page).is_file(), page
