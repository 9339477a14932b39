"""``volantd``: the control-plane daemon.

``volantd`` (or ``volantd run``) loads the configuration, starts the root
supervision tree and serves the API until SIGTERM/SIGINT, then shuts the tree
down in reverse order. VMMs are detached processes: stopping volantd never
stops a VM; the next start adopts them.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Annotated

import trio
import typer

from volant import __version__
from volant.config import Config, load_config
from volant.errors import ConfigError
from volant.logging import configure_logging, get_logger

app = typer.Typer(
    name="volantd",
    help="Volant control plane: boots plugin manifests as microVMs and keeps them running.",
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: $VOLANT_CONFIG)."),
]
ListenOption = Annotated[
    str | None,
    typer.Option("--listen", help="API listen address HOST:PORT (default: $VOLANT_API_LISTEN)."),
]


def _load_or_exit(config: Path | None, **overrides: object) -> Config:
    try:
        return load_config(config, None, **overrides)
    except ConfigError as exc:
        typer.echo(f"volantd: invalid configuration: {exc.message}", err=True)
        raise typer.Exit(2) from None


async def _wait_for_signal(cancel_scope: trio.CancelScope, stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            get_logger("volantd").info("signal received, shutting down", signal=signum)
            stop.set()
            return


async def run_daemon(cfg: Config) -> None:
    """Run the root supervisor until a termination signal arrives."""
    from volant.orchestrator.root import run_root

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_wait_for_signal, nursery.cancel_scope, stop)
        await run_root(cfg, stop)
        nursery.cancel_scope.cancel()


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    config: ConfigOption = None,
    listen: ListenOption = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Run the daemon (the default command)."""
    if version:
        typer.echo(f"volantd {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is not None:
        return
    cfg = _load_or_exit(config, api_listen=listen)
    configure_logging(cfg.log_level, None if cfg.log_format == "auto" else cfg.log_format == "json")
    log = get_logger("volantd")
    try:
        _check_listen(cfg)
    except OSError as exc:
        typer.echo(f"volantd: cannot listen on {cfg.api_listen}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    log.info(
        "volantd starting",
        version=__version__,
        listen=cfg.api_listen,
        state_dir=str(cfg.state_dir),
        hypervisor=cfg.hypervisor,
    )
    try:
        trio.run(run_daemon, cfg)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        leaf = _first_leaf(exc)
        if isinstance(leaf, ConfigError):
            typer.echo(f"volantd: invalid configuration: {leaf.message}", err=True)
            raise typer.Exit(2) from None
        if isinstance(leaf, OSError):
            typer.echo(f"volantd: cannot start: {leaf}", err=True)
            raise typer.Exit(1) from None
        raise
    log.info("volantd stopped")


def _check_listen(cfg: Config) -> None:
    """Fail fast, with one line, when the API address is taken (before any actor starts)."""
    host = cfg.listen_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, cfg.listen_port))


def _first_leaf(exc: BaseException) -> BaseException:
    """Trio wraps failures in exception groups; the operator needs the cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _host_setup(action: str, config: Path | None, dry_run: bool, unit_path: Path,
                no_unit: bool, no_systemctl: bool) -> None:
    from volant.errors import VolantError
    from volant.network.setup import SetupOptions, run_setup, run_teardown

    cfg = _load_or_exit(config)
    options = SetupOptions(unit_path=None if no_unit else unit_path, systemd=not no_systemctl)
    try:
        if action == "setup":
            run_setup(cfg, options, dry_run=dry_run, echo=typer.echo)
        else:
            run_teardown(cfg, options, dry_run=dry_run, echo=typer.echo)
    except VolantError as exc:
        typer.echo(f"volantd {action}: {exc.message}", err=True)
        raise typer.Exit(2) from None


DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the steps; change nothing.")]
UnitPath = Annotated[Path, typer.Option("--unit-path", help="Where to write the systemd unit.")]
NoUnit = Annotated[bool, typer.Option("--no-unit", help="Do not write a systemd unit.")]
NoSystemctl = Annotated[bool, typer.Option("--no-systemctl",
                                           help="Write the unit but do not run systemctl.")]


@app.command()
def setup(
    config: ConfigOption = None,
    dry_run: DryRun = False,
    unit_path: UnitPath = Path("/etc/systemd/system/volantd.service"),
    no_unit: NoUnit = False,
    no_systemctl: NoSystemctl = False,
) -> None:
    """Prepare the host (idempotent): bridge, NAT, forwarding, directories, systemd unit."""
    _host_setup("setup", config, dry_run, unit_path, no_unit, no_systemctl)


@app.command()
def teardown(
    config: ConfigOption = None,
    dry_run: DryRun = False,
    unit_path: UnitPath = Path("/etc/systemd/system/volantd.service"),
    no_unit: NoUnit = False,
    no_systemctl: NoSystemctl = False,
) -> None:
    """Undo exactly what `volantd setup` did (recorded in the state directory)."""
    _host_setup("teardown", config, dry_run, unit_path, no_unit, no_systemctl)


def main() -> None:
    app(prog_name="volantd")


if __name__ == "__main__":  # pragma: no cover
    main()
