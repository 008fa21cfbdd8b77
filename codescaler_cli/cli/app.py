"""The `codescaler` command line: thin commands over the library.

Data goes to stdout (only with ``-o -``); progress, summaries and errors go to stderr.
Every user-fixable problem is a :class:`CodescalerError`, printed as one line with its
exit code; ``CODESCALER_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
import typer.core

try:
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - a Typer that uses click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from .._version import __version__
from ..errors import CodescalerError, describe_error


class _NoFlagType:
    """--help takes no value: show none (Typer would print <bool>). A help text's paragraphs
    are reflowed to the terminal (Typer keeps the docstring's line breaks, which leaves single
    words on a line in a narrower terminal)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        if self.help:  # type: ignore[attr-defined]
            self.help = reflow(self.help)  # type: ignore[attr-defined]

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class Command(_NoFlagType, typer.core.TyperCommand):
    pass


class Group(_NoFlagType, typer.core.TyperGroup):
    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Usage errors (a typo'd choice, a missing option) as one line on stderr, exit 2,
        like every other error; not click's boxed report."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_exceptions.NoArgsIsHelpError:
            sys.exit(0)  # bare `codescaler`: the help was asked for, and printed
        except click_exceptions.ClickException as exc:
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click_exceptions.UsageError) and ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            _err(exc.format_message().replace("\n", " ") + hint)
            sys.exit(exc.exit_code)
        except typer.Abort:
            _err("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="codescaler",
    cls=Group,
    help="Score code candidates with the CodeScaler execution-free reward model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def reflow(text: str) -> str:
    """Join the lines of each paragraph, so the help renderer wraps them to the terminal."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split("\n")) for p in paragraphs)


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
            _err(f"unexpected {describe_error(exc)} (set CODESCALER_DEBUG=1 for a traceback)")
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
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the version and exit.",
            metavar="",
        ),
    ] = False,
) -> None:
    """Score code candidates with the CodeScaler execution-free reward model."""


# Commands live in one module each; this module only wires them.
from . import cache, eval_pairs, extract, make_test_model, rerank, score, serve  # noqa: E402

app.command("score", cls=Command)(handle_errors(score.score))
app.command("extract", cls=Command)(handle_errors(extract.extract))
app.command("rerank", cls=Command)(handle_errors(rerank.rerank))
app.command("eval-pairs", cls=Command)(handle_errors(eval_pairs.eval_pairs))
app.command("serve", cls=Command)(handle_errors(serve.serve))
app.command("make-test-model", cls=Command)(handle_errors(make_test_model.make_test_model))
cache.register(app, Command, Group, handle_errors)


def main() -> None:
    app(prog_name="codescaler")


if __name__ == "__main__":
    main()
