"""``volar deployments ...``: groups of identical VMs, scaling and rollout status."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from volant.cli.common import NoWait, Timeout, load_json_arg, seg
from volant.cli.errors import CliError
from volant.cli.session import Session, session

app = typer.Typer(help="Manage deployments (replicated VMs).", no_args_is_help=True)
POLL = 0.5


def _rollout(d: dict[str, Any]) -> dict[str, Any]:
    rollout = d.get("rollout")
    return rollout if isinstance(rollout, dict) else {}


def _row(d: dict[str, Any]) -> list[Any]:
    return [d.get("name"), d.get("desired_replicas"), d.get("ready_replicas"),
            d.get("status") or _rollout(d).get("state"), d.get("config_version"),
            d.get("updated_at")]


def _show(s: Session, d: dict[str, Any]) -> None:
    if s.output.json:
        s.output.emit_json(d)
        return
    keys = [k for k in d if k != "config"]
    s.output.fields([(k, d[k]) for k in keys])


def rollout_done(d: dict[str, Any]) -> bool:
    """True once the deployment is settled; raises ``CliError`` if its rollout failed.

    volantd reports one ``status`` word (ready, scaling, rolling_out, degraded,
    rollout_failed); an older daemon only has the counts (upstream).
    """
    rollout = _rollout(d)
    if rollout.get("state") == "failed" or d.get("status") == "rollout_failed":
        reason = rollout.get("reason") or rollout.get("error") or "failed"
        replica = rollout.get("failed_replica")
        raise CliError(f"deployment {d.get('name')}: rollout failed"
                       + (f" at {replica}" if replica else "") + f": {reason}")
    if "status" in d:
        return bool(d["status"] == "ready")
    return bool(d.get("ready_replicas") == d.get("desired_replicas")
                and rollout.get("state") in (None, "none", "completed"))


def _wait_rollout(s: Session, name: str, timeout: float) -> dict[str, Any]:
    """Poll until the deployment is settled; CliError on timeout or a failed rollout."""
    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = s.client.get(f"/api/v1/deployments/{seg(name)}")
        if rollout_done(d):
            return d
        if time.monotonic() >= deadline:
            raise CliError(f"deployment {name}: {d.get('ready_replicas')}/"
                           f"{d.get('desired_replicas')} ready ({d.get('status', 'not settled')})"
                           f" after {timeout:.0f}s")
        time.sleep(POLL)


def _finish(s: Session, name: str, d: Any, verb: str, no_wait: bool, timeout: float) -> None:
    if not no_wait:
        with s.output.progress(f"waiting for {name} to roll out"):
            d = _wait_rollout(s, name, timeout)
    if s.output.json:
        s.output.emit_json(d)
    else:
        s.output.line(f"deployment {name} {verb}: {d.get('ready_replicas')}/"
                      f"{d.get('desired_replicas')} ready")


@app.command("list")
def list_deployments(ctx: typer.Context) -> None:
    """List deployments (NAME DESIRED READY STATUS CONFIG-VERSION UPDATED)."""
    s = session(ctx)
    result = s.client.get("/api/v1/deployments")
    if s.output.json:
        s.output.emit_json(result)
        return
    items: list[dict[str, Any]] = (
        result.get("deployments", result.get("items", [])) if isinstance(result, dict)
        else result) or []
    s.output.table(("NAME", "DESIRED", "READY", "STATUS", "CONFIG", "UPDATED"),
                   [_row(d) for d in items])


@app.command("get")
def get(ctx: typer.Context, name: str) -> None:
    """Show one deployment."""
    s = session(ctx)
    _show(s, s.client.get(f"/api/v1/deployments/{seg(name)}"))


@app.command("status")
def status(
    ctx: typer.Context,
    name: str,
    watch: Annotated[bool, typer.Option("--wait", "-w", help="Wait until the rollout is done.")
                     ] = False,
    timeout: Timeout = 300.0,
) -> None:
    """Rollout status: desired vs ready replicas and any rollout in progress."""
    s = session(ctx)
    if watch:
        with s.output.progress(f"waiting for {name} to roll out"):
            d = _wait_rollout(s, name, timeout)
    else:
        d = s.client.get(f"/api/v1/deployments/{seg(name)}")
    if s.output.json:
        s.output.emit_json(d)
        return
    rollout = _rollout(d)
    line = (f"deployment {name}: {d.get('ready_replicas')}/{d.get('desired_replicas')} "
            f"replicas ready, status {d.get('status', '-')}")
    if rollout.get("state") not in (None, "none"):
        line += f", rollout {rollout['state']}"
        if rollout.get("target_version") is not None:
            line += f" to config version {rollout['target_version']}"
        if rollout.get("reason"):
            line += f" ({rollout['reason']})"
    s.output.line(line)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    config: Annotated[str, typer.Option(
        "--config", help="VM config JSON for every replica: path, '-' or inline.")],
    replicas: Annotated[int, typer.Option(min=0, help="Replica count.")] = 1,
    no_wait: NoWait = False,
    timeout: Timeout = 300.0,
) -> None:
    """Create a deployment and wait until its replicas are running."""
    s = session(ctx)
    cfg = load_json_arg(config, "--config")
    if isinstance(cfg, dict) and isinstance(cfg.get("config"), dict):
        cfg = cfg["config"]
    d = s.client.post("/api/v1/deployments",
                      json={"name": name, "replicas": replicas, "config": cfg},
                      timeout=120)
    _finish(s, name, d, "created", no_wait, timeout)


def scale_deployment_to(s: Session, name: str, replicas: int, no_wait: bool,
                        timeout: float) -> None:
    d = s.client.patch(f"/api/v1/deployments/{seg(name)}", json={"replicas": replicas},
                       timeout=120)
    _finish(s, name, d, f"scaled to {replicas}", no_wait, timeout)


@app.command("scale")
def scale(
    ctx: typer.Context,
    name: str,
    replicas: Annotated[int, typer.Argument(min=0, help="New replica count.")],
    no_wait: NoWait = False,
    timeout: Timeout = 300.0,
) -> None:
    """Change a deployment's replica count and wait for it."""
    scale_deployment_to(session(ctx), name, replicas, no_wait, timeout)


@app.command("update")
def update(
    ctx: typer.Context,
    name: str,
    config: Annotated[str, typer.Option(
        "--config", help="New VM config JSON: path, '-' or inline.")],
    no_wait: NoWait = False,
    timeout: Timeout = 600.0,
) -> None:
    """Roll a new config out to a deployment, one replica at a time."""
    s = session(ctx)
    cfg = load_json_arg(config, "--config")
    if isinstance(cfg, dict) and isinstance(cfg.get("config"), dict):
        cfg = cfg["config"]
    d = s.client.patch(f"/api/v1/deployments/{seg(name)}", json={"config": cfg}, timeout=120)
    _finish(s, name, d, "updated", no_wait, timeout)


@app.command("delete")
def delete(ctx: typer.Context, name: str) -> None:
    """Delete a deployment and all its replicas."""
    s = session(ctx)
    with s.output.progress(f"deleting {name}"):
        s.client.delete(f"/api/v1/deployments/{seg(name)}", timeout=300)
    if s.output.json:
        s.output.emit_json({"name": name, "deleted": True})
    else:
        s.output.line(f"deployment {name} deleted")
