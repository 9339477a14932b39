"""Drive a terminal program the way a person does: a private tmux server per test."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path


class Tmux:
    """A private tmux server (own socket) so nothing of the user's is touched."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.session = f"volar-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True,
                              text=True, timeout=10).stdout

    def start(self, command: str) -> None:
        self.run("new-session", "-d", "-s", self.session, "-x", "120", "-y", "30", command)
        self.run("set-option", "-t", self.session, "remain-on-exit", "on")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def dead(self) -> bool:
        return self.run("display-message", "-p", "-t", self.session, "#{pane_dead}").strip() == "1"

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what}; screen:\n{self.screen()}")

    def kill_server(self) -> None:
        self.run("kill-server")
