"""``volar plugins artifacts ...``: list, add (fetch and verify), show and remove artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from volant.cli.common import NoWait, Timeout, seg
from volant.cli.session import session

app = typer.Typer(help="Manage a plugin's artifacts (files fetched and verified by volantd).",
                  no_args_is_help=True)

WAIT_SLACK = 30.0
COLUMNS = ("VERSION", "NAME", "KIND", "STATUS", "SIZE", "SHA256")
VersionOption = Annotated[str, typer.Option("--version", help="Artifact version.")]


def _base(plugin: str) -> str:
    return f"/api/v1/plugins/{seg(plugin)}/artifacts"


def _row(artifact: dict[str, Any]) -> list[Any]:
    digest = artifact.get("sha256")
    return [artifact.get("version"), artifact.get("artifact_name"),
            artifact.get("kind") or None, artifact.get("status"),
            artifact.get("size_bytes") or None, digest[:12] if digest else None]


@app.command("list")
def list_artifacts(
    ctx: typer.Context,
    plugin: str,
    version: Annotated[str | None, typer.Option("--version", help="Only this version.")
                       ] = None,
) -> None:
    """List a plugin's artifacts (VERSION NAME KIND STATUS SIZE SHA256)."""
    s = session(ctx)
    artifacts = s.client.get(_base(plugin), params={"version": version} if version else {})
    if s.output.json:
        s.output.emit_json(artifacts)
        return
    s.output.table(COLUMNS, [_row(a) for a in artifacts])


@app.command("show")
def show(ctx: typer.Context, plugin: str, name: str, version: VersionOption) -> None:
    """Show one artifact: source, checksum, status, error, cached path."""
    s = session(ctx)
    artifact = s.client.get(f"{_base(plugin)}/{seg(name)}", params={"version": version})
    if s.output.json:
        s.output.emit_json(artifact)
        return
    s.output.fields([(key, None if value == "" else value)
                     for key, value in artifact.items() if key != "id"])


@app.command("add")
def add(
    ctx: typer.Context,
    plugin: str,
    name: str,
    version: VersionOption,
    source_url: Annotated[str | None, typer.Option(
        "--source-url", help="http(s):// or file:/// URL to fetch (needs --checksum).")] = None,
    local_path: Annotated[Path | None, typer.Option(
        "--local-path", help="A file on volantd's host (made absolute here).")] = None,
    checksum: Annotated[str | None, typer.Option(
        "--checksum", help="sha256:<hex> (or bare hex) the bytes must match.")] = None,
    kind: Annotated[str | None, typer.Option(help="Free label, e.g. kernel, rootfs.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Free label, e.g. raw.")] = None,
    size: Annotated[int | None, typer.Option(
        "--size", min=0, help="Expected size in bytes (checked).")] = None,
    no_wait: NoWait = False,
    timeout: Timeout = 300.0,
) -> None:
    """Create or replace an artifact; volantd fetches and verifies it (waits unless --no-wait).

    Without --source-url or --local-path the record is metadata only (status registered).
    """
    if source_url and local_path:
        raise typer.BadParameter("give --source-url or --local-path, not both",
                                 param_hint="--local-path")
    body: dict[str, Any] = {
        "version": version, "artifact_name": name, "kind": kind, "format": fmt,
        "source_url": source_url, "checksum": checksum, "size_bytes": size,
        "local_path": str(local_path.absolute()) if local_path else None,
    }
    body = {key: value for key, value in body.items() if value is not None}
    params = {} if no_wait else {"wait": "ready", "timeout": str(int(timeout))}
    s = session(ctx)
    with s.output.progress(f"adding {name} {version}" + ("" if no_wait else ", fetching")):
        artifact = s.client.post(_base(plugin), json=body, params=params,
                                 timeout=timeout + WAIT_SLACK)
    if s.output.json:
        s.output.emit_json(artifact)
        return
    status = artifact.get("status")
    digest = f" sha256:{artifact['sha256']}" if artifact.get("sha256") else ""
    s.output.line(f"artifact {name} {version} of plugin {plugin} {status}{digest}")


@app.command("rm")
def remove(
    ctx: typer.Context,
    plugin: str,
    name: Annotated[str | None, typer.Argument(
        help="One artifact (needs --version); omit to delete by version or --all.",
        show_default=False)] = None,
    version: Annotated[str | None, typer.Option(
        "--version", help="Only this version.")] = None,
    remove_all: Annotated[bool, typer.Option(
        "--all", help="Every artifact of the plugin, all versions.")] = False,
) -> None:
    """Delete one artifact, a version's artifacts, or (--all) all of a plugin's."""
    if name and not version:
        raise typer.BadParameter("deleting one artifact needs its --version",
                                 param_hint="--version")
    if not name and not version and not remove_all:
        raise typer.BadParameter("give NAME --version V, --version V, or --all",
                                 param_hint="NAME")
    if remove_all and (name or version):
        raise typer.BadParameter("--all deletes every version; do not combine it",
                                 param_hint="--all")
    s = session(ctx)
    params = {"version": version} if version else {}
    path = f"{_base(plugin)}/{seg(name)}" if name else _base(plugin)
    s.client.delete(path, params=params)
    what = (f"artifact {name} {version}" if name else
            f"artifacts {version}" if version else "all artifacts")
    if s.output.json:
        s.output.emit_json({"name": name or plugin, "version": version, "deleted": True})
    else:
        s.output.line(f"{what} of plugin {plugin} deleted")
