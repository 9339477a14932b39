"""What runs before kestrel's API listens: how /init starts it and what it imports.

Under TCG the boot time up to the API is dominated by code the interpreter runs for
the first time, so the modules imported before the API listens are kept to what the
interpreter already has (plus ctypes for the PID-1 syscalls). These tests keep the
heavy ones (asyncio, threading, socket, json, pathlib, dataclasses...) off that path.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from kestrel import pid1

REPO = Path(__file__).resolve().parents[3]

# Imported eagerly by the stdlib modules we avoid; any of them before the API listens
# means a heavy import crept back onto the boot path.
HEAVY = {
    "asyncio", "threading", "socket", "selectors", "subprocess", "signal", "json", "re",
    "enum", "pathlib", "dataclasses", "typing", "collections", "functools", "contextlib",
    "logging", "urllib", "ipaddress", "inspect", "runpy", "site", "queue", "traceback",
}  # fmt: skip

SNAPSHOT_AT_API = """
import os, sys
sys.path.insert(0, {repo!r})
# The PID-1-only modules are not reached outside PID 1: import them like stage 1 does.
import kestrel.pid1, kestrel.ipconfig, kestrel.netconfig
from kestrel import console

original = console.Timeline.mark

def mark(self, name, at=None):
    original(self, name, at)
    if name == "api":
        print("MODULES " + " ".join(sorted(sys.modules)), flush=True)
        os._exit(0)

console.Timeline.mark = mark
from kestrel.main import main
main([])
"""


def test_nothing_heavy_is_imported_before_the_api_listens(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KESTREL_LISTEN": "127.0.0.1:0",
        "KESTREL_CMDLINE": "",
        "KESTREL_PID1": "0",
    }
    result = subprocess.run(
        [sys.executable, "-X", "frozen_modules=on", "-I", "-S", "-c",
         SNAPSHOT_AT_API.format(repo=str(REPO))],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    line = next(
        (line for line in result.stdout.splitlines() if line.startswith("MODULES ")), None
    )
    assert line is not None, result.stdout + result.stderr
    modules = set(line.split()[1:])
    assert "kestrel.httpserver" in modules and "kestrel.agent" in modules
    top_level = {name.split(".")[0] for name in modules}
    assert not top_level & HEAVY, sorted(top_level & HEAVY)


def test_init_script_and_switch_root_start_kestrel_the_same_way() -> None:
    from volant.images.builder import INIT_SCRIPT

    exec_line = next(line for line in INIT_SCRIPT.splitlines() if line.startswith("exec "))
    assert tuple(shlex.split(exec_line)[1:]) == pid1.PYTHON_ARGV
    assert "-m" not in pid1.PYTHON_ARGV and "-S" in pid1.PYTHON_ARGV


def test_the_startup_code_runs_main_and_exits_with_its_status(tmp_path: Path) -> None:
    """PYTHON_ARGV's -c code, with this checkout standing in for dist-packages."""
    code = pid1.PYTHON_ARGV[-1].replace(pid1.KESTREL_PATH, str(REPO))
    assert code != pid1.PYTHON_ARGV[-1]
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        env={"KESTREL_LISTEN": "nonsense", "KESTREL_CMDLINE": ""},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "must be host:port" in result.stdout
