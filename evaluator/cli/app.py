"""`policy-evaluator`: the typer app, its commands in the order `--help` lists them, and `main`.

The commands are thin (`evaluation`: run, entrypoint, sweep; `lookups`: suites, summary, view, schema, results;
`serving`: serve); their options are declared once (`options`, offered by `option_sets`); exceptions map to exit
codes in one place (`command`). Here: usage errors found while parsing get the same format, and `--help` groups
the options by panel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from evaluator.cli.command import Output, redactor
from evaluator.cli.evaluation import entrypoint, run, sweep
from evaluator.cli.lookups import results, schema, suites, summary, view
from evaluator.cli.serving import serve
from evaluator.markers import MARKER_END, MARKER_START
from evaluator.options import PANELS
from sim.errors import ExitCode

__all__ = ["MARKER_END", "MARKER_START", "app", "main"]


class _Commands(TyperGroup):
    """Usage errors found while parsing (an unknown flag, `--device gpu`, a non-number in an env var) in the
    product's own format: one line on stderr, the error JSON on stdout, the command's usage exit code. (typer's
    `cls=` takes a `TyperGroup`; parse errors surface only in its `main`.)"""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # typer's vendored click: ClickException and its usage errors
            callback = exc.ctx.command.callback if getattr(exc, "ctx", None) and exc.ctx.command else None
            code = getattr(callback, "usage_exit", ExitCode.USAGE)
            output = Output(markers=getattr(callback, "always_markers", False), redact=redactor({}))
            output.error(" ".join(exc.format_message().split()), code)
        except typer.Abort:
            code = ExitCode.FAILED
        if not standalone_mode:
            return code
        sys.exit(int(code or 0))


class _Panelled(TyperCommand):
    """`--help` with the options under their panels (`rich_help_panel`), in `PANELS` order, then the command's
    own. typer draws panels only with rich markup, which would read the `[...]` in our help texts (URI syntax,
    `[default: ...]`) as markup: `rich_markup_mode=None` keeps the plain help, and this groups it."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                argument = param.param_type_name == "argument"
                title = "Arguments" if argument else getattr(param, "rich_help_panel", None) or "Options"
                sections.setdefault(title, []).append(record)
        for title in sorted(sections, key=("Arguments", *PANELS, "Options").index):
            with formatter.section(title):
                formatter.write_dl(sections[title])


app = typer.Typer(
    cls=_Commands,
    name="policy-evaluator",
    rich_markup_mode=None,  # help texts hold URI syntax like project[/run_id], which is not markup
    help="Evaluate MettaGrid policy checkpoints on an evaluation suite with Ray actors.",
    pretty_exceptions_enable=False,
    add_completion=False,
)
for _command in (run, entrypoint, suites, summary, view, schema, results, sweep, serve):
    app.command(cls=_Panelled)(_command)


@app.callback(invoke_without_command=True)
def _no_command(ctx: typer.Context) -> None:
    # `policy-evaluator` alone: the help on stderr, exit 2.
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help(), err=True)
        raise typer.Exit(ExitCode.USAGE)


def main() -> None:
    """The `policy-evaluator` command. Once a command has returned, every output is written and renamed into
    place, Ray is shut down and the database committed: the process then leaves without tearing down the
    modules it imported (torch, scipy, mettagrid: ~0.5 s of a 3-4 s quick check), after flushing what it
    printed and logged."""
    # Ray prints the autoscaler's events ("Adding 1 node(s) of type gpu") on a driver's stdout, which carries
    # only the JSON; the driver logs its own wait for nodes on stderr. Read by Ray when it is imported.
    os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")
    try:
        app()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`| head`) has what it wanted
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
