"""``volar plugins ...``: install, list, show, enable/disable and remove manifests.

``volar plugins artifacts ...`` (a plugin's artifacts) lives in ``artifacts.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from volant.cli import artifacts
from volant.cli.common import seg
from volant.cli.session import session

app = typer.Typer(help="Manage plugins (manifests that describe a microVM image).",
                  no_args_is_help=True)
app.add_typer(artifacts.app, name="artifacts")


@app.command("list")
def list_plugins(ctx: typer.Context) -> None:
    """List installed plugins (NAME VERSION ENABLED RUNTIME)."""
    s = session(ctx)
    result = s.client.get("/api/v1/plugins")
    if s.output.json:
        s.output.emit_json(result)
        return
    items: list[dict[str, Any]] = result.get("items") or [
        {"name": name} for name in result.get("plugins", [])]
    s.output.table(("NAME", "VERSION", "ENABLED", "RUNTIME"),
                   [[p.get("name"), p.get("version"), p.get("enabled"), p.get("runtime")]
                    for p in sorted(items, key=lambda p: str(p.get("name")))])


@app.command("show")
def show(ctx: typer.Context, name: str) -> None:
    """Print a plugin's manifest (JSON)."""
    s = session(ctx)
    s.output.emit_json(s.client.get(f"/api/v1/plugins/{seg(name)}"))


def _set_enabled(ctx: typer.Context, name: str, enabled: bool) -> None:
    s = session(ctx)
    result = s.client.post(f"/api/v1/plugins/{seg(name)}/enabled", json={"enabled": enabled})
    if s.output.json:
        s.output.emit_json(result)
    else:
        s.output.line(f"plugin {name} {'enabled' if enabled else 'disabled'}")


@app.command("enable")
def enable(ctx: typer.Context, name: str) -> None:
    """Enable a plugin (new VMs may use it)."""
    _set_enabled(ctx, name, True)


@app.command("disable")
def disable(ctx: typer.Context, name: str) -> None:
    """Disable a plugin (existing VMs keep running; new ones are refused)."""
    _set_enabled(ctx, name, False)


@app.command("install")
def install(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Argument(
        help="Manifest file path or http(s) URL.", show_default=False)] = None,
    manifest: Annotated[str | None, typer.Option(
        "--manifest", "-m", help="Manifest file path.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Manifest http(s) URL.")] = None,
) -> None:
    """Install a manifest: relative paths resolved, cloud-init files inlined, validated locally."""
    given = [x for x in (source, manifest, url) if x]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of PATH|URL, --manifest or --url",
                                 param_hint="SOURCE")
    if url and not url.lower().startswith(("http://", "https://")):
        raise typer.BadParameter("must be an http:// or https:// URL", param_hint="--url")
    from volant.cli.manifest_files import prepare  # the manifest model: only when installing

    s = session(ctx)
    body = prepare(given[0])
    result = s.client.post("/api/v1/plugins", json=body)
    if s.output.json:
        s.output.emit_json(result)
    else:
        version = result.get("version") if isinstance(result, dict) else body.get("version")
        s.output.line(f"plugin {body.get('name')} {version} installed")


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove an installed plugin."""
    s = session(ctx)
    s.client.delete(f"/api/v1/plugins/{seg(name)}")
    if s.output.json:
        s.output.emit_json({"name": name, "removed": True})
    else:
        s.output.line(f"plugin {name} removed")
