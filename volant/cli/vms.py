"""``volar vms ...``: VM lifecycle, config, waiting, console/logs and workload calls."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from volant.cli.common import NoWait, Timeout, key_values, load_json_arg, seg
from volant.cli.errors import CliError
from volant.cli.session import Session, session

app = typer.Typer(help="Manage microVMs.", no_args_is_help=True)
config_app = typer.Typer(help="Show and change a VM's versioned configuration.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")

VM_COLUMNS = ("NAME", "STATUS", "RUNTIME", "IP", "MAC", "CPU", "MEM")
STATES = ("running", "stopped", "crashed", "failed")
WAIT_SLACK = 30.0


def _row(vm: dict[str, Any]) -> list[Any]:
    return [vm.get("name"), vm.get("status"), vm.get("runtime"), vm.get("ip_address") or None,
            vm.get("mac_address") or None, vm.get("cpu_cores"),
            f"{vm.get('memory_mb')} MiB" if vm.get("memory_mb") is not None else None]


def show_vm(s: Session, vm: dict[str, Any]) -> None:
    if s.output.json:
        s.output.emit_json(vm)
        return
    order = ["name", "status", "runtime", "plugin", "pid", "ip_address", "mac_address",
             "cpu_cores", "memory_mb", "network_mode", "tap", "vsock_cid", "deployment",
             "restart_policy", "restart_count", "desired_state", "config_version", "last_exit",
             "kernel_cmdline", "serial_socket", "console_log", "created_at", "updated_at"]
    keys = [k for k in order if k in vm] + [k for k in vm if k not in order and k != "id"]
    s.output.fields([(k, vm[k]) for k in keys])


@app.command("list")
def list_vms(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option(
        "--status", help="Only these states (repeatable or comma list).")] = None,
    runtime: Annotated[str | None, typer.Option(help="Only this runtime.")] = None,
    plugin: Annotated[str | None, typer.Option(help="Only VMs of this plugin.")] = None,
    query: Annotated[str | None, typer.Option(
        "--query", "-q", help="Substring of name, IP or runtime.")] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="Page size.")] = None,
    offset: Annotated[int | None, typer.Option(min=0, help="Page start.")] = None,
    sort: Annotated[str | None, typer.Option(
        help="name|status|runtime|created_at|updated_at")] = None,
    desc: Annotated[bool, typer.Option("--desc", help="Sort descending.")] = False,
) -> None:
    """List VMs (NAME STATUS RUNTIME IP MAC CPU MEM)."""
    s = session(ctx)
    params: dict[str, Any] = {"status": status or [], "runtime": runtime, "plugin": plugin,
                              "q": query, "limit": limit, "offset": offset, "sort": sort,
                              "order": "desc" if desc else None}
    vms = s.client.get("/api/v1/vms", params={k: v for k, v in params.items()
                                              if v not in (None, [])})
    if s.output.json:
        s.output.emit_json(vms)
        return
    s.output.table(VM_COLUMNS, [_row(vm) for vm in vms])


@app.command("get")
def get_vm(ctx: typer.Context, name: str) -> None:
    """Show one VM in detail."""
    s = session(ctx)
    show_vm(s, s.client.get(f"/api/v1/vms/{seg(name)}"))


@app.command("create")
def create_vm(
    ctx: typer.Context,
    name: str,
    plugin: Annotated[str | None, typer.Option(help="Plugin (manifest) to boot.")] = None,
    runtime: Annotated[str | None, typer.Option(help="Runtime (default: the plugin's).")] = None,
    cpu: Annotated[int | None, typer.Option(
        "--cpu", min=1, help="vCPUs (default: the manifest's resources).")] = None,
    memory: Annotated[int | None, typer.Option(
        "--memory", min=16, help="Memory in MiB (default: the manifest's).")] = None,
    kernel_cmdline: Annotated[str | None, typer.Option(
        help="Extra kernel command line arguments.")] = None,
    kernel: Annotated[str | None, typer.Option(
        "--kernel", help="Host kernel path (config.kernel_override).")] = None,
    initramfs: Annotated[str | None, typer.Option(help="Initramfs URL or path override.")] = None,
    initramfs_checksum: Annotated[str | None, typer.Option(
        help="sha256 of --initramfs.")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", help="VM config JSON: file path, '-' or inline ({...}); "
        "a {\"config\": ...} envelope is accepted.")] = None,
    api_host: Annotated[str | None, typer.Option(help="Host the guest calls back.")] = None,
    api_port: Annotated[int | None, typer.Option(min=1, max=65535,
                                                 help="Port the guest calls back.")] = None,
    device: Annotated[list[str] | None, typer.Option(
        "--device", help="PCI address to pass through (repeatable).")] = None,
    device_allowlist: Annotated[list[str] | None, typer.Option(
        "--device-allowlist", help="Allowed vendor:device IDs (repeatable).")] = None,
    restart_policy: Annotated[str | None, typer.Option(
        help="no | always | on-failure")] = None,
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Create a VM and (unless --no-wait) wait until it is running."""
    s = session(ctx)
    cfg: dict[str, Any] = {}
    if config is not None:
        loaded = load_json_arg(config, "--config")
        if isinstance(loaded, dict) and isinstance(loaded.get("config"), dict):
            loaded = loaded["config"]
        if not isinstance(loaded, dict):
            raise CliError("--config: expected a JSON object")
        cfg = loaded
    if kernel:
        cfg["kernel_override"] = kernel
    if initramfs:
        cfg["initramfs"] = {"url": initramfs, **(
            {"checksum": initramfs_checksum} if initramfs_checksum else {})}
    if device or device_allowlist:
        plugin_name = plugin or cfg.get("plugin")
        if not plugin_name:
            raise CliError("--device needs --plugin (or a config naming the plugin)")
        manifest = cfg.get("manifest")
        if not isinstance(manifest, dict):
            manifest = s.client.get(f"/api/v1/plugins/{seg(str(plugin_name))}")
        devices = dict(manifest.get("devices") or {})
        if device:
            devices["pci_passthrough"] = device
        if device_allowlist:
            devices["allowlist"] = device_allowlist
        cfg["manifest"] = {**manifest, "devices": devices}
    body: dict[str, Any] = {"name": name, "plugin": plugin, "runtime": runtime, "cpu_cores": cpu,
                            "memory_mb": memory, "kernel_cmdline": kernel_cmdline,
                            "api_host": api_host, "api_port": api_port,
                            "restart_policy": restart_policy, "config": cfg or None}
    body = {k: v for k, v in body.items() if v is not None}
    params = {} if no_wait else {"wait": "running", "timeout": str(int(timeout))}
    with s.output.progress(f"creating {name}" + ("" if no_wait else ", waiting for running")):
        vm = s.client.post("/api/v1/vms", json=body, params=params,
                           timeout=timeout + WAIT_SLACK)
    if s.output.json:
        s.output.emit_json(vm)
        return
    ip = vm.get("ip_address") or "-"
    s.output.line(f"VM {vm.get('name', name)} created with IP {ip} ({vm.get('status')})")


@app.command("delete")
def delete_vm(ctx: typer.Context, name: str) -> None:
    """Destroy a VM (stops it, releases its tap, IP and files)."""
    s = session(ctx)
    with s.output.progress(f"deleting {name}"):
        s.client.delete(f"/api/v1/vms/{seg(name)}", timeout=120)
    if s.output.json:
        s.output.emit_json({"name": name, "deleted": True})
    else:
        s.output.line(f"VM {name} deleted")


def _lifecycle(ctx: typer.Context, name: str, action: str, target: str, no_wait: bool,
               timeout: float) -> None:
    s = session(ctx)
    params = {} if no_wait else {"wait": target, "timeout": str(int(timeout))}
    with s.output.progress(f"{action} {name}" + ("" if no_wait else f", waiting for {target}")):
        vm = s.client.post(f"/api/v1/vms/{seg(name)}/{action}", params=params,
                           timeout=timeout + WAIT_SLACK)
        if not no_wait and isinstance(vm, dict) and vm.get("status") != target:
            vm = _wait(s, name, target, timeout)
    if s.output.json:
        s.output.emit_json(vm)
    else:
        s.output.line(f"VM {name} {vm.get('status') if isinstance(vm, dict) else action}")


def _wait(s: Session, name: str, state: str, timeout: float) -> Any:
    return s.client.get(f"/api/v1/vms/{seg(name)}/wait",
                        params={"state": state, "timeout": str(int(timeout))},
                        timeout=timeout + WAIT_SLACK)


@app.command("start")
def start_vm(ctx: typer.Context, name: str, no_wait: NoWait = False,
             timeout: Timeout = 120.0) -> None:
    """Start a stopped VM and wait until it is running."""
    _lifecycle(ctx, name, "start", "running", no_wait, timeout)


@app.command("stop")
def stop_vm(ctx: typer.Context, name: str, no_wait: NoWait = False,
            timeout: Timeout = 120.0) -> None:
    """Stop a VM (guest power-off, then VMM, then signals) and wait until it is stopped."""
    _lifecycle(ctx, name, "stop", "stopped", no_wait, timeout)


@app.command("restart")
def restart_vm(ctx: typer.Context, name: str, no_wait: NoWait = False,
               timeout: Timeout = 180.0) -> None:
    """Stop then start a VM and wait until it is running again."""
    _lifecycle(ctx, name, "restart", "running", no_wait, timeout)


@app.command("wait")
def wait_vm(
    ctx: typer.Context,
    name: str,
    state: Annotated[str, typer.Option(help=f"Target state: {'|'.join(STATES)}.")] = "running",
    timeout: Timeout = 60.0,
) -> None:
    """Block until a VM reaches a state; exit 1 on timeout or if it settles elsewhere."""
    if state not in STATES:
        raise typer.BadParameter(f"expected one of {', '.join(STATES)}", param_hint="--state")
    s = session(ctx)
    with s.output.progress(f"waiting for {name} to be {state}"):
        vm = _wait(s, name, state, timeout)
    if s.output.json:
        s.output.emit_json(vm)
    else:
        s.output.line(f"VM {name} is {vm.get('status')}")


@app.command("scale")
def scale_vm(
    ctx: typer.Context,
    name: str,
    cpu: Annotated[int | None, typer.Option("--cpu", min=1, help="New vCPU count.")] = None,
    memory: Annotated[int | None, typer.Option("--memory", min=16,
                                               help="New memory in MiB.")] = None,
    restart: Annotated[bool, typer.Option(
        "--restart", help="Restart the VM so the new resources apply now.")] = False,
    replicas: Annotated[int | None, typer.Option(
        "--replicas", min=0, help="Scale the deployment of this name instead.")] = None,
    no_wait: NoWait = False,
    timeout: Timeout = 180.0,
) -> None:
    """Change a VM's CPU/memory (config PATCH), or a deployment's replicas."""
    s = session(ctx)
    if replicas is not None:
        if cpu is not None or memory is not None:
            raise typer.BadParameter("use either --replicas or --cpu/--memory",
                                     param_hint="--replicas")
        from volant.cli.deployments import scale_deployment_to

        scale_deployment_to(s, name, replicas, no_wait, timeout)
        return
    if cpu is None and memory is None:
        raise typer.BadParameter("give --cpu, --memory or --replicas", param_hint="--cpu")
    resources: dict[str, int] = {}
    if cpu is not None:
        resources["cpu_cores"] = cpu
    if memory is not None:
        resources["memory_mb"] = memory
    result = s.client.patch(f"/api/v1/vms/{seg(name)}/config", json={"resources": resources})
    if restart:
        _lifecycle(ctx, name, "restart", "running", no_wait, timeout)
        return
    if s.output.json:
        s.output.emit_json(result)
    else:
        version = result.get("version") if isinstance(result, dict) else None
        s.output.line(f"VM {name} config updated (version {version}); "
                      "restart it for the change to apply")


@config_app.command("get")
def config_get(
    ctx: typer.Context,
    name: str,
    raw: Annotated[bool, typer.Option("--raw", help="Only the config, not the version envelope.")
                   ] = False,
    output_file: Annotated[str | None, typer.Option(
        "--output-file", "--file", help="Write the JSON to this file.")] = None,
) -> None:
    """Print a VM's current config (version, updated_at, config)."""
    s = session(ctx)
    result = s.client.get(f"/api/v1/vms/{seg(name)}/config")
    if raw and isinstance(result, dict) and "config" in result:
        result = result["config"]
    if output_file:
        try:
            with open(output_file, "w") as fh:
                fh.write(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {output_file}: {exc.strerror or exc}") from None
        s.output.note(f"config written to {output_file}")
        return
    s.output.emit_json(result)


@config_app.command("set")
def config_set(
    ctx: typer.Context,
    name: str,
    file: Annotated[str, typer.Option(
        "--file", "-f", help="Patch JSON: file path, '-' or inline ({...}).")],
) -> None:
    """PATCH a VM's config with a JSON document (takes effect on next start)."""
    s = session(ctx)
    patch = load_json_arg(file, "--file")
    if not isinstance(patch, dict):
        raise CliError("--file: expected a JSON object")
    result = s.client.patch(f"/api/v1/vms/{seg(name)}/config", json=patch)
    if s.output.json:
        s.output.emit_json(result)
    else:
        version = result.get("version") if isinstance(result, dict) else None
        s.output.line(f"VM {name} config updated to version {version}")


@config_app.command("history")
def config_history(
    ctx: typer.Context,
    name: str,
    limit: Annotated[int | None, typer.Option(min=1, help="Newest N versions.")] = None,
) -> None:
    """List a VM's config versions, newest first."""
    s = session(ctx)
    params = {"limit": limit} if limit else {}
    result = s.client.get(f"/api/v1/vms/{seg(name)}/config/history", params=params)
    if s.output.json:
        s.output.emit_json(result)
        return
    entries = result.get("history", result.get("items", [])) if isinstance(result, dict) else result
    rows = []
    for entry in entries or []:
        resources = (entry.get("config") or {}).get("resources") or {}
        rows.append([entry.get("version"), entry.get("updated_at"), resources.get("cpu_cores"),
                     resources.get("memory_mb")])
    s.output.table(("VERSION", "UPDATED", "CPU", "MEMORY"), rows)


@app.command("console")
def console(
    ctx: typer.Context,
    name: str,
    escape: Annotated[str, typer.Option(
        help="Key that ends the session, as ^X notation.")] = "^]",
    socket: Annotated[str | None, typer.Option(
        "--socket", help="Attach to this local serial socket directly (upstream's flag; "
                         "only on the daemon's host) instead of the API websocket.")] = None,
) -> None:
    """Attach to a VM's serial console through the API (Ctrl-] leaves)."""
    from volant.cli import websocket  # trio + trio-websocket: loaded only when needed

    if socket:
        websocket.run_socket_console(socket, websocket.parse_escape(escape))
        return
    s = session(ctx)
    websocket.run_console(s.client, name, websocket.parse_escape(escape))


@app.command("logs")
def logs(
    ctx: typer.Context,
    name: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming new lines.")
                      ] = False,
    tail: Annotated[int, typer.Option(min=0, help="Start with this many recent lines.")
                    ] = 100,
) -> None:
    """Print the workload's log lines (stdout/stderr) from the guest agent."""
    from volant.cli import websocket

    s = session(ctx)
    websocket.run_logs(s.client, s.output, name, follow, tail)


def _openapi(s: Session, name: str) -> dict[str, Any]:
    doc = s.client.get(f"/api/v1/vms/{seg(name)}/openapi")
    if isinstance(doc, str):
        try:
            import yaml  # type: ignore[import-untyped]

            doc = yaml.safe_load(doc)
        except Exception:
            raise CliError(f"vm {name}: the workload's OpenAPI document is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        raise CliError(f"vm {name}: the workload's OpenAPI document has no 'paths' object")
    return doc


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations_of(doc: dict[str, Any]) -> list[dict[str, str]]:
    found = []
    for path, item in sorted(doc["paths"].items()):
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                found.append({"operation_id": str(op.get("operationId", "")),
                              "method": method.upper(), "path": str(path),
                              "summary": str(op.get("summary", ""))})
    return found


@app.command("operations")
def operations(ctx: typer.Context, name: str) -> None:
    """List the operations of the VM workload's OpenAPI document."""
    s = session(ctx)
    ops = operations_of(_openapi(s, name))
    if s.output.json:
        s.output.emit_json(ops)
        return
    s.output.table(("OPERATION", "METHOD", "PATH", "SUMMARY"),
                   [[o["operation_id"] or None, o["method"], o["path"], o["summary"] or None]
                    for o in ops])


@app.command("call")
def call(
    ctx: typer.Context,
    name: str,
    operation: Annotated[str, typer.Argument(help="operationId, or METHOD:PATH (GET:/health).")],
    query: Annotated[list[str] | None, typer.Option(
        "--query", help="Query parameter KEY=VALUE (repeatable).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Path parameter KEY=VALUE substituted into {KEY} (repeatable).")] = None,
    body: Annotated[str | None, typer.Option(help="Request body (JSON text).")] = None,
    body_file: Annotated[str | None, typer.Option(help="Request body from a file.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Request timeout in seconds.")] = 60.0,
) -> None:
    """Call the VM workload's API through volantd's agent proxy."""
    s = session(ctx)
    method, sep, path = operation.partition(":")
    if sep and method.isalpha() and path.startswith("/"):
        method = method.upper()
    else:
        match = [o for o in operations_of(_openapi(s, name)) if o["operation_id"] == operation]
        if not match:
            raise CliError(f"vm {name}: no operation {operation!r} (see: volar vms operations)")
        method, path = match[0]["method"], match[0]["path"]
    for key, value in key_values(param, "--param").items():
        path = path.replace("{" + key + "}", seg(value))
    if "{" in path:
        raise CliError(f"path {path} has unfilled parameters; give them with --param KEY=VALUE")
    if body is not None and body_file is not None:
        raise typer.BadParameter("use --body or --body-file, not both", param_hint="--body")
    content: bytes | None = body.encode() if body is not None else None
    if body_file is not None:
        try:
            with open(body_file, "rb") as fh:
                content = fh.read()
        except OSError as exc:
            raise CliError(f"cannot read {body_file}: {exc.strerror or exc}") from None
    headers = {"Content-Type": "application/json"} if content is not None else {}
    response = s.client.response(method, f"/api/v1/vms/{seg(name)}/agent{path}",
                                 params=key_values(query, "--query"), content=content,
                                 headers=headers, timeout=timeout)
    try:
        s.output.emit_json(response.json())
    except ValueError:
        s.output.line(response.text)
