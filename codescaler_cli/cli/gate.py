"""``--fail-under``: gate a CI job on a metric."""

from __future__ import annotations

import math
from typing import Annotated

import typer

from ..errors import UsageError
from .options import OUTPUT, option

FailUnder = Annotated[
    float | None,
    option(
        "--fail-under",
        help="Exit 1 if the gated metric (see the command's help) is below X.",
        panel=OUTPUT,
        metavar="X",
    ),
]


def check_threshold(threshold: float | None) -> None:
    """Before any work: a threshold is a fraction (``nan`` would always pass, 25 never)."""
    if threshold is None:
        return
    if not math.isfinite(threshold) or not 0 <= threshold <= 1:
        raise UsageError(
            f"--fail-under is a fraction between 0 and 1 (e.g. 0.25 for 25%), got {threshold:g}"
        )


def check_gate(name: str, value: float | None, threshold: float | None) -> None:
    """Exit 1 when ``value`` is below ``threshold`` (a missing or nan value fails too)."""
    if threshold is None:
        return
    if value is None or math.isnan(value) or value < threshold:
        shown = "none" if value is None else f"{value:.4f}"
        typer.echo(f"codescaler: {name} {shown} is below --fail-under {threshold}", err=True)
        raise typer.Exit(1)
    typer.echo(f"codescaler: {name} {value:.4f} >= --fail-under {threshold}: passed", err=True)
