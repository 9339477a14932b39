"""``volar``: a CLI over the volantd HTTP API (never touches state files or sockets).

Global options follow upstream: ``--api`` (``VOLANT_API_BASE``, default
``http://127.0.0.1:7777``); plus ``--api-key`` (``VOLANT_API_KEY``), ``-o/--output
table|json``, ``--verbose`` (HTTP exchange on stderr) and ``--debug``
(tracebacks). Exit codes: 0 success, 1 API/operation error, 2 usage error.
Errors are one line: ``volar: http 404: vm x not found``.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from volant import __version__
from volant.cli import deployments, plugins, system, vms
from volant.cli.client import DEFAULT_API
from volant.cli.errors import CliError
from volant.cli.render import OUTPUT_FORMATS, Output
from volant.cli.session import Session, session

app = typer.Typer(
    name="volar",
    help="Command-line client for the Volant microVM control plane (talks to volantd's API).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(vms.app, name="vms")
app.add_typer(plugins.app, name="plugins")
app.add_typer(deployments.app, name="deployments")
app.add_typer(system.app, name="system")
app.command("events")(system.events)
app.command("setup")(system.setup)

_debug = False


def _output_format(value: str) -> str:
    if value not in OUTPUT_FORMATS:
        raise typer.BadParameter(f"expected one of {', '.join(OUTPUT_FORMATS)}")
    return value


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"volar {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    api: Annotated[str, typer.Option(
        "--api", "-a", envvar="VOLANT_API_BASE", help="volantd base URL.")] = DEFAULT_API,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="VOLANT_API_KEY",
        help="API key, sent as X-Volant-API-Key.", show_default=False)] = None,
    output: Annotated[str, typer.Option(
        "--output", "-o", callback=_output_format, help="Output format: table or json.")
    ] = "table",
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Print each HTTP exchange (method, URL, status, time) to stderr.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, expose_value=True,
        help="Print the CLI version and exit.")] = False,
) -> None:
    global _debug
    _debug = debug
    ctx.obj = Session(api, api_key, Output(output), verbose=verbose)
    ctx.call_on_close(ctx.obj.close)


@app.command()
def version(ctx: typer.Context) -> None:
    """Print the CLI version."""
    s = session(ctx)
    if s.output.json:
        s.output.emit_json({"volar": __version__})
    else:
        s.output.line(f"volar {__version__}")


@app.command()
def health(ctx: typer.Context) -> None:
    """Check volantd's liveness endpoint (/healthz)."""
    s = session(ctx)
    result = s.client.get("/healthz")
    if s.output.json:
        s.output.emit_json(result)
    else:
        s.output.line(f"volantd {result.get('status')} (version {result.get('version', '?')}, "
                      f"up {result.get('uptime_seconds', '?')}s)")


GLOBAL_VALUE_OPTIONS = ("--api", "-a", "--api-key")
GLOBAL_FLAGS = ("--verbose", "-v", "--debug")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Let global options appear after the subcommand too (``volar vms list -o json``).

    ``-o/--output`` moves only with a value of ``table``/``json``, so a
    subcommand's own option spelled the same way keeps its argument; nothing
    after ``--`` is touched.
    """
    result: list[str] = []
    hoisted: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else None
        name, eq, value = arg.partition("=")
        if arg == "--":
            result.extend(argv[index:])
            break
        if arg in ("-o", "--output") and following in OUTPUT_FORMATS:
            hoisted += [arg, following]
            index += 2
        elif name == "--output" and eq and value in OUTPUT_FORMATS:
            hoisted.append(arg)
            index += 1
        elif arg in GLOBAL_VALUE_OPTIONS and following is not None:
            hoisted += [arg, following]
            index += 2
        elif (name in ("--api", "--api-key") and eq) or arg in GLOBAL_FLAGS:
            hoisted.append(arg)
            index += 1
        else:
            result.append(arg)
            index += 1
    return hoisted + result


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> None:
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="volar", standalone_mode=True)
    except SystemExit:
        raise
    except BaseException as raw:
        exc = _leaf(raw)
        if isinstance(exc, KeyboardInterrupt):
            sys.stderr.write("\nvolar: interrupted\n")
            sys.exit(130)
        if isinstance(exc, (typer.Exit, SystemExit)):
            raise
        if isinstance(exc, BrokenPipeError):
            # `volar ... | head`: the reader left; exit quietly like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        if _debug:
            traceback.print_exception(raw)
        if isinstance(exc, CliError):
            sys.stderr.write(f"volar: {exc.message}\n")
            sys.exit(exc.exit_code)
        detail = str(exc).strip().splitlines()
        sys.stderr.write(f"volar: internal error: {type(exc).__name__}"
                         f"{': ' + detail[0] if detail else ''} (rerun with --debug)\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
