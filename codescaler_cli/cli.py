"""The `codescaler` command line: thin commands over the library.

Data goes to stdout (only with ``-o -``); progress, summaries and errors go to stderr.
Every user-fixable problem is a :class:`CodescalerError`, printed as one line with its
exit code; ``CODESCALER_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from ._version import __version__
from .errors import CodescalerError

app = typer.Typer(
    name="codescaler",
    help="Score code candidates with the CodeScaler execution-free reward model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def _err(message: str) -> None:
    typer.echo(f"codescaler: error: {message}", err=True)


def handle_errors(func: F) -> F:
    """The one place errors become messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = os.environ.get("CODESCALER_DEBUG") == "1"
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except CodescalerError as exc:
            if debug:
                raise
            _err(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("interrupted; rerun the same command to resume from the last finished chunk")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): not an error of ours.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:
            if debug:
                raise
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
            _err(
                f"unexpected {type(exc).__name__}: {text} (set CODESCALER_DEBUG=1 for a traceback)"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"codescaler {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Score code candidates with the CodeScaler execution-free reward model."""


# Commands live in codescaler_cli/commands/, one module each; this module only wires them.
from .commands import eval_pairs, extract, rerank, score  # noqa: E402

app.command("score")(handle_errors(score.score))
app.command("extract")(handle_errors(extract.extract))
app.command("rerank")(handle_errors(rerank.rerank))
app.command("eval-pairs")(handle_errors(eval_pairs.eval_pairs))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
