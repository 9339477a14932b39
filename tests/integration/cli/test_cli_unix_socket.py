"""``volar --api unix://PATH`` talks to volantd's Unix-socket listener (e.g. the demo's)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from volar_run import volar

from tests.daemon_process import running_daemon
from tests.vmtools import install, write_plugin


def test_unix_socket_api(tmp_path: Path) -> None:
    sock = Path(tempfile.mkdtemp(prefix="vu-")) / "api.sock"  # short: sun_path limit
    with running_daemon(tmp_path, env={"VOLANT_API_UNIX_SOCKET": str(sock)}) as daemon:
        with daemon.client() as client:
            install(client, write_plugin(tmp_path))
        listed = volar(f"unix://{sock}", "plugins", "list", "-o", "json")
        assert listed.code == 0, listed.err
        assert listed.json()["plugins"] == ["demo"]
        console = volar(f"unix://{sock}", "vms", "console", "nope")
        console.assert_one_line_error("Unix socket")
    missing = volar(f"unix://{sock}", "vms", "list")
    missing.assert_one_line_error("cannot reach volantd")
