"""`codescaler cache info|prune|clear`: the persistent score cache (docs/cache.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

CACHE_HELP = """Inspect and trim the persistent score cache.

Scores are stored by content (the model's files, dtype, device kind, max length and the
exact input), so a rerun answers rows it saw before without the model. The cache lives in
--cache-dir, else $CODESCALER_CACHE_DIR, else $XDG_CACHE_HOME/codescaler (~/.cache/codescaler).
"""

CacheDir = Annotated[
    str | None,
    typer.Option(
        "--cache-dir",
        metavar="DIR",
        help="The cache's directory (default: $CODESCALER_CACHE_DIR, else "
        "$XDG_CACHE_HOME/codescaler, else ~/.cache/codescaler).",
    ),
]


def _directory(cache_dir: str | None) -> str:
    from ..config import CacheOptions

    options = CacheOptions(cache_dir=cache_dir)
    options.validate()
    return options.directory()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def info(
    cache_dir: CacheDir = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the information as JSON.", metavar="")
    ] = False,
) -> None:
    """Show where the cache is, its size, how many scores it holds, and of which models."""
    from ..cache import admin
    from ..config import CacheOptions

    found = admin.info(_directory(cache_dir))
    limit = CacheOptions().size_limit()
    if json_output:
        typer.echo(admin.as_json({**found.as_dict(), "max_size": limit}))
        return
    typer.echo(f"location  {found.path}")
    if not found.exists:
        typer.echo("(empty: no score has been stored here yet)")
        return
    typer.echo(
        f"size      {_size(found.file_bytes)} (in use {_size(found.used_bytes)}, limit {_size(limit)})"
    )
    typer.echo(f"entries   {found.entries:,}")
    typer.echo(f"models    {len(found.models)}")
    for m in found.models:
        last = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.last_used)) if m.last_used else "-"
        rev = f"@{m.revision}" if m.revision else ""
        typer.echo(
            f"  {m.model}{rev}  digest {m.digest[:12]}  {m.dtype} {m.device}  "
            f"max-length {m.max_length}  {m.entries:,} scores  last used {last}"
        )


def prune(
    max_size: Annotated[
        str,
        typer.Option(
            "--max-size",
            metavar="SIZE",
            help="Keep at most this much (e.g. 500M, 2G); least recently used scores go first.",
        ),
    ],
    cache_dir: CacheDir = None,
) -> None:
    """Drop the least recently used scores until the cache fits in --max-size."""
    from ..cache import admin
    from ..config import parse_size

    limit = parse_size(max_size)
    removed, before, after = admin.prune(_directory(cache_dir), limit)
    typer.echo(f"removed {removed:,} scores; {_size(before)} -> {_size(after)}", err=True)


def clear(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="M",
            help="Only this model's scores: as given to --model (a directory or a Hub id), "
            "or the start of its digest (see `codescaler cache info`).",
        ),
    ] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Remove every cached score, or one model's."""
    from ..cache import admin

    removed, names = admin.clear(_directory(cache_dir), model)
    what = f" of {', '.join(names)}" if names else ""
    if model is not None and not names:
        what = f" (no scores of {model} are cached)"
    typer.echo(f"removed {removed:,} scores{what}", err=True)


def register(app: typer.Typer, command: type, group: type, wrap: Callable[[Any], Any]) -> None:
    """Add `codescaler cache` with its subcommands to ``app``."""
    sub = typer.Typer(
        name="cache",
        cls=group,
        help=CACHE_HELP,
        no_args_is_help=True,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    sub.command("info", cls=command)(wrap(info))
    sub.command("prune", cls=command)(wrap(prune))
    sub.command("clear", cls=command)(wrap(clear))
    app.add_typer(sub, name="cache")
