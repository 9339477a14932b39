"""``volar system ...``, ``volar events`` and ``volar setup``."""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
import sys
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from volant.cli.errors import CliError
from volant.cli.eventstream import EventFollower
from volant.cli.session import Session, session

app = typer.Typer(help="Daemon status, facts and the dashboard summary.", no_args_is_help=True)


def _show_flat(s: Session, result: Any) -> None:
    if s.output.json:
        s.output.emit_json(result)
    else:
        s.output.fields(list(result.items()) if isinstance(result, dict) else [("result", result)])


@app.command("status")
def status(ctx: typer.Context) -> None:
    """VM count and host CPU/memory usage."""
    s = session(ctx)
    _show_flat(s, s.client.get("/api/v1/system/status"))


@app.command("info")
def info(ctx: typer.Context) -> None:
    """Daemon facts: listen/advertise address, host IP, bridge, hypervisor, version."""
    s = session(ctx)
    _show_flat(s, s.client.get("/api/v1/system/info"))


@app.command("summary")
def summary(ctx: typer.Context) -> None:
    """Counts by status and runtime, and the installed plugins."""
    s = session(ctx)
    result = s.client.get("/api/v1/system/summary")
    if s.output.json:
        s.output.emit_json(result)
        return
    s.output.fields([(k, v) for k, v in result.items() if k != "plugins"])
    plugins = result.get("plugins") or []
    if plugins:
        s.output.line("")
        s.output.table(("PLUGIN", "VERSION", "ENABLED"),
                       [[p.get("name"), p.get("version"), p.get("enabled")] for p in plugins])


EVENT_COLUMNS = ("ID", "TIME", "TYPE", "NAME", "STATUS", "MESSAGE")


def _event_line(event: dict[str, Any]) -> str:
    return "  ".join(str(part) for part in (
        event.get("id", "-"), event.get("timestamp", "-"), event.get("type", "-"),
        event.get("name") or "-", event.get("status") or "-", event.get("message") or ""
    )).rstrip()


def events(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream live events (SSE).")
                      ] = False,
    name: Annotated[list[str] | None, typer.Option(
        "--name", help="Only events of this VM (repeatable).")] = None,
    type_: Annotated[list[str] | None, typer.Option(
        "--type", help="Only this event type, e.g. VM_CRASHED (repeatable).")] = None,
    since: Annotated[int | None, typer.Option(
        "--since", min=0, help="Start after this event id.")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Without --follow: page size (default 100).")] = None,
    count: Annotated[int | None, typer.Option(
        "--count", min=1, help="With --follow: exit after this many events.")] = None,
) -> None:
    """Show recent VM events, or follow them live (resumes after disconnects)."""
    s = session(ctx)
    params: dict[str, Any] = {}
    if name:
        params["name"] = ",".join(name)
    if type_:
        params["type"] = ",".join(t.upper() for t in type_)
    if not follow:
        if since is not None:
            params["after"] = since
        if limit is not None:
            params["limit"] = limit
        page = s.client.get("/api/v1/events/vms", params=params,
                            headers={"Accept": "application/json"})
        if s.output.json:
            s.output.emit_json(page)
            return
        rows = [[e.get("id"), e.get("timestamp"), e.get("type"), e.get("name") or None,
                 e.get("status") or None, e.get("message")] for e in page.get("events", [])]
        s.output.table(EVENT_COLUMNS, rows)
        return
    follower = EventFollower(s.client, params, last_id=since)
    for seen, event in enumerate(follower.events(), start=1):
        if s.output.json:
            import json

            s.output.line(json.dumps(event, separators=(",", ":")))
        else:
            s.output.line(_event_line(event))
        if count is not None and seen >= count:
            return


def _is_local(api: str) -> bool:
    host = urlsplit(api).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SETUP_ENV = {
    "bridge": "VOLANT_BRIDGE", "subnet": "VOLANT_SUBNET", "host_ip": "VOLANT_HOST_IP",
    "work_dir": "VOLANT_STATE_DIR", "runtime_dir": "VOLANT_RUNTIME_DIR",
    "log_dir": "VOLANT_LOG_DIR", "bzimage": "VOLANT_KERNEL_BZIMAGE",
    "vmlinux": "VOLANT_KERNEL_VMLINUX",
}


def setup(
    ctx: typer.Context,
    bridge: Annotated[str | None, typer.Option(help="Bridge name (VOLANT_BRIDGE).")] = None,
    subnet: Annotated[str | None, typer.Option(help="VM subnet CIDR (VOLANT_SUBNET).")] = None,
    host_ip: Annotated[str | None, typer.Option(help="Bridge address (VOLANT_HOST_IP).")] = None,
    work_dir: Annotated[str | None, typer.Option(help="State directory (VOLANT_STATE_DIR).")
                        ] = None,
    runtime_dir: Annotated[str | None, typer.Option(help="Runtime directory.")] = None,
    log_dir: Annotated[str | None, typer.Option(help="Log directory.")] = None,
    bzimage: Annotated[str | None, typer.Option(help="Kernel bzImage path.")] = None,
    vmlinux: Annotated[str | None, typer.Option(help="Kernel vmlinux path.")] = None,
    service_file: Annotated[str | None, typer.Option(help="systemd unit path to write.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the steps only.")] = False,
    run: Annotated[bool, typer.Option(
        "--run", help="Run it now (only as root, against a local daemon).")] = False,
) -> None:
    """Host setup is done by `volantd setup` on the daemon's host (root); this prints or runs it."""
    s = session(ctx)
    values = {"bridge": bridge, "subnet": subnet, "host_ip": host_ip, "work_dir": work_dir,
              "runtime_dir": runtime_dir, "log_dir": log_dir, "bzimage": bzimage,
              "vmlinux": vmlinux}
    env = {SETUP_ENV[k]: v for k, v in values.items() if v}
    args = ["setup"] + (["--unit-path", service_file] if service_file else []) + (
        ["--dry-run"] if dry_run else [])
    command = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), "volantd",
                        *map(shlex.quote, args)])
    if not run:
        s.output.line("Host setup (bridge, NAT, directories, systemd unit) needs root on the "
                      "daemon's host. Run there:")
        s.output.line(f"  sudo {command}")
        return
    if not _is_local(s.api):
        raise CliError(f"--run works only against a local volantd; {s.api} is remote: "
                       f"run `sudo {command}` on that host")
    if os.geteuid() != 0:
        raise CliError(f"--run needs root: run `sudo {command}`")
    exe = shutil.which("volantd")
    argv = [exe, *args] if exe else [sys.executable, "-m", "volant.daemon", *args]
    code = subprocess.call(argv, env={**os.environ, **env})
    if code != 0:
        raise CliError(f"volantd setup failed with exit code {code}")
