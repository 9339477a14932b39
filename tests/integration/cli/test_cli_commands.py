"""Every command that has a route today, as a subprocess against a live volantd (hollow)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import VolantdProcess, free_port
from tests.integration.cli.volar_run import VOLAR, volar


@pytest.fixture(scope="module")
def plugin(daemon: VolantdProcess, manifest_path: Path) -> str:
    result = volar(daemon.url, "plugins", "install", str(manifest_path))
    assert result.code == 0, result.err
    assert result.out.strip() == "plugin demo 1.0.0 installed"
    return "demo"


def api(daemon: VolantdProcess, path: str, **kwargs: Any) -> Any:
    with daemon.client() as client:
        response = client.get(path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()


def test_plugins_list_show_enable_disable(daemon: VolantdProcess, plugin: str) -> None:
    table = volar(daemon.url, "plugins", "list")
    assert table.code == 0
    header, row = table.out.splitlines()[:2]
    assert header.split() == ["NAME", "VERSION", "ENABLED", "RUNTIME"]
    assert row.split() == ["demo", "1.0.0", "yes", "demo"]
    as_json = volar(daemon.url, "plugins", "list", "-o", "json")
    assert as_json.json() == api(daemon, "/api/v1/plugins")

    shown = volar(daemon.url, "plugins", "show", plugin)
    manifest = shown.json()
    assert manifest == api(daemon, f"/api/v1/plugins/{plugin}")
    # The relative initramfs path was resolved against the manifest's directory.
    assert manifest["initramfs"]["url"].startswith("/")

    assert volar(daemon.url, "plugins", "disable", plugin).out.strip() == "plugin demo disabled"
    refused = volar(daemon.url, "vms", "create", "refused", "--plugin", plugin)
    refused.assert_one_line_error("http 409", "disabled")
    enabled = volar(daemon.url, "-o", "json", "plugins", "enable", plugin)
    assert enabled.json()["enabled"] is True


def test_vm_lifecycle_table_and_json(daemon: VolantdProcess, plugin: str) -> None:
    created = volar(daemon.url, "vms", "create", "cli-a", "--plugin", plugin, "-o", "json")
    assert created.code == 0, created.err
    view = created.json()
    assert view["status"] == "running"
    assert view["name"] == "cli-a"

    table = volar(daemon.url, "vms", "list")
    rows = [line.split() for line in table.out.splitlines()]
    assert rows[0] == ["NAME", "STATUS", "RUNTIME", "IP", "MAC", "CPU", "MEM"]
    assert ["cli-a", "running", "demo", view["ip_address"], view["mac_address"], "1", "128",
            "MiB"] in rows
    assert volar(daemon.url, "vms", "list", "-o", "json").json() == api(daemon, "/api/v1/vms")
    filtered = volar(daemon.url, "vms", "list", "--status", "stopped", "-o", "json").json()
    assert all(vm["status"] == "stopped" for vm in filtered)
    assert "cli-a" not in [vm["name"] for vm in filtered]

    got = volar(daemon.url, "vms", "get", "cli-a", "-o", "json").json()
    assert got == api(daemon, "/api/v1/vms/cli-a")
    fields = dict(line.split(None, 1) for line in
                  volar(daemon.url, "vms", "get", "cli-a").out.splitlines() if line.strip())
    assert fields["status"].strip() == "running"
    assert fields["ip_address"].strip() == view["ip_address"]

    stopped = volar(daemon.url, "vms", "stop", "cli-a")
    assert stopped.out.strip() == "VM cli-a stopped"
    assert api(daemon, "/api/v1/vms/cli-a")["status"] == "stopped"
    waited = volar(daemon.url, "vms", "wait", "cli-a", "--state", "stopped", "--timeout", "5")
    assert waited.out.strip() == "VM cli-a is stopped"
    never = volar(daemon.url, "vms", "wait", "cli-a", "--state", "running", "--timeout", "1")
    never.assert_one_line_error("cli-a")

    started = volar(daemon.url, "-o", "json", "vms", "start", "cli-a").json()
    assert started["status"] == "running"
    restarted = volar(daemon.url, "vms", "restart", "cli-a", "-o", "json").json()
    assert restarted["status"] == "running"
    assert restarted["pid"] != started["pid"]

    deleted = volar(daemon.url, "vms", "delete", "cli-a")
    assert deleted.out.strip() == "VM cli-a deleted"
    with daemon.client() as client:
        assert client.get("/api/v1/vms/cli-a").status_code == 404


def test_create_no_wait_then_wait(daemon: VolantdProcess, plugin: str) -> None:
    created = volar(daemon.url, "vms", "create", "cli-b", "--plugin", plugin, "--no-wait",
                    "--cpu", "2", "--memory", "256", "-o", "json").json()
    assert created["cpu_cores"] == 2
    assert created["memory_mb"] == 256
    waited = volar(daemon.url, "-o", "json", "vms", "wait", "cli-b", "--timeout", "30").json()
    assert waited["status"] == "running"
    assert volar(daemon.url, "vms", "delete", "cli-b", "-o", "json").json() == {
        "name": "cli-b", "deleted": True}


def test_system_commands(daemon: VolantdProcess, plugin: str) -> None:
    for what in ("status", "info", "summary"):
        as_json = volar(daemon.url, "system", what, "-o", "json")
        assert as_json.code == 0, as_json.err
        expected = api(daemon, f"/api/v1/system/{what}")
        if what == "status":  # host usage moves between two reads; the shape must not
            assert as_json.json().keys() == expected.keys()
        else:
            assert as_json.json() == expected
        table = volar(daemon.url, "system", what)
        assert table.code == 0
        first_keys = [line.split()[0] for line in table.out.splitlines() if line.strip()]
        assert next(iter(expected)) in first_keys
    summary = volar(daemon.url, "system", "summary").out
    for entry in api(daemon, "/api/v1/system/summary")["plugins"]:
        assert entry["name"] in summary and "PLUGIN" in summary


def test_events_page(daemon: VolantdProcess, plugin: str) -> None:
    volar(daemon.url, "vms", "create", "cli-ev", "--plugin", plugin)
    page = volar(daemon.url, "events", "--name", "cli-ev", "-o", "json").json()
    expected = api(daemon, "/api/v1/events/vms", params={"name": "cli-ev"},
                   headers={"Accept": "application/json"})
    assert page["events"] == expected["events"]
    assert {"VM_CREATED", "VM_RUNNING"} <= {e["type"] for e in page["events"]}
    table = volar(daemon.url, "events", "--name", "cli-ev", "--type", "VM_RUNNING")
    lines = table.out.splitlines()
    assert lines[0].split() == ["ID", "TIME", "TYPE", "NAME", "STATUS", "MESSAGE"]
    assert lines[1:] and all(line.split()[2] == "VM_RUNNING" for line in lines[1:])
    volar(daemon.url, "vms", "delete", "cli-ev")


def test_verbose_shows_the_http_exchange(daemon: VolantdProcess) -> None:
    result = volar(daemon.url, "vms", "list", "--verbose")
    assert result.code == 0
    assert f"> GET {daemon.url}/api/v1/vms" in result.err
    assert "< 200 OK" in result.err and " ms" in result.err


def test_unknown_vm_is_one_line_exit_1(daemon: VolantdProcess) -> None:
    for args in (("vms", "get", "ghost"), ("vms", "stop", "ghost"), ("vms", "delete", "ghost"),
                 ("plugins", "show", "ghost")):
        volar(daemon.url, *args).assert_one_line_error("http 404", "ghost")


def test_routes_not_served_yet_fail_cleanly_or_answer(daemon: VolantdProcess) -> None:
    """Deployments/config commands: a clean one-line error until their routes land."""
    with daemon.client() as client:
        served = client.get("/api/v1/deployments").status_code != 404
    result = volar(daemon.url, "deployments", "list", "-o", "json")
    if served:
        assert result.code == 0, result.err
        assert result.json() == api(daemon, "/api/v1/deployments")
    else:
        result.assert_one_line_error("http 404", "no route")


def test_down_daemon_is_one_line_exit_1() -> None:
    result = volar(f"http://127.0.0.1:{free_port()}", "vms", "list")
    result.assert_one_line_error("cannot reach volantd")


def test_bad_flags_exit_2(daemon: VolantdProcess) -> None:
    assert volar(daemon.url, "vms", "list", "--no-such-flag").code == 2
    assert volar(daemon.url, "-o", "yaml", "vms", "list").code == 2
    assert volar(daemon.url, "vms", "wait", "x", "--state", "bogus").code == 2
    assert volar(daemon.url, "vms", "create").code == 2  # missing NAME


def test_invalid_manifest_is_refused_before_sending(daemon: VolantdProcess,
                                                     tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "Bad Name", "version": "1"}')
    result = volar(daemon.url, "plugins", "install", str(bad))
    result.assert_one_line_error("invalid manifest")
    assert "Bad Name" not in str(api(daemon, "/api/v1/plugins"))


def test_setup_prints_the_daemon_command(daemon: VolantdProcess) -> None:
    result = volar(daemon.url, "setup", "--bridge", "br9", "--dry-run")
    assert result.code == 0
    assert "sudo VOLANT_BRIDGE=br9 volantd setup --dry-run" in result.out


def test_version() -> None:
    from volant import __version__

    assert volar("http://127.0.0.1:9", "version").out.strip() == f"volar {__version__}"


def test_vm_config_commands(daemon: VolantdProcess, plugin: str) -> None:
    """`vms config get/history` and `vms scale --cpu` (a config PATCH) against the API."""
    volar(daemon.url, "vms", "create", "cli-cfg", "--plugin", plugin)
    got = volar(daemon.url, "vms", "config", "get", "cli-cfg", "-o", "json")
    assert got.code == 0, got.err
    assert got.json() == api(daemon, "/api/v1/vms/cli-cfg/config")
    assert got.json()["version"] == 1
    scaled = volar(daemon.url, "vms", "scale", "cli-cfg", "--cpu", "2", "-o", "json")
    assert scaled.code == 0, scaled.err
    current = api(daemon, "/api/v1/vms/cli-cfg/config")
    assert current["version"] == 2 and current["config"]["resources"]["cpu_cores"] == 2
    history = volar(daemon.url, "vms", "config", "history", "cli-cfg", "-o", "json")
    assert history.json() == api(daemon, "/api/v1/vms/cli-cfg/config/history")
    assert [entry["version"] for entry in history.json()] == [2, 1]


def test_debug_shows_the_traceback(daemon: VolantdProcess) -> None:
    plain = volar(daemon.url, "vms", "get", "ghost")
    debug = volar(daemon.url, "--debug", "vms", "get", "ghost")
    assert "Traceback" not in plain.err
    assert debug.code == 1 and "Traceback" in debug.err
    assert debug.err.strip().splitlines()[-1] == plain.err.strip()


def test_version_flag_and_completion() -> None:
    from volant import __version__

    assert volar("http://127.0.0.1:9", "--version").out.strip() == f"volar {__version__}"
    # typer finds the shell from the process tree, so run it the way a user does: from bash
    # (under a detached runner, pytest's own ancestors may hold no shell at all).
    command = " ".join(shlex.quote(part) for part in [*VOLAR, "--show-completion"])
    # ("; exit $?" keeps bash as the parent: a lone command would be exec'd in its place)
    script = subprocess.run(["bash", "-c", f"{command}; exit $?"], capture_output=True, text=True,
                            timeout=60)
    assert script.returncode == 0 and "_volar_completion" in script.stdout, script.stderr


def test_setup_run_refuses_a_remote_daemon() -> None:
    # No request is made: the refusal happens before anything is contacted.
    result = volar("http://192.0.2.1:7777", "setup", "--run", "--dry-run")
    result.assert_one_line_error("only against a local volantd", "volantd setup --dry-run")
