"""Pure-Python hollow VMM, used only where gcc is missing (same arguments as hollow_vmm.c).

Costs a Python interpreter per VM (~8 MB RSS, ~20 ms CPU to start), so scale benchmarks
should use the C build. Runs no guest; it only honours the VMM contract.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from types import FrameType


class _Terminate(Exception):
    pass


def _console(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _listen(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    sock.setblocking(False)
    return sock


GREETING = {
    "QMP": {
        "version": {"qemu": {"micro": 0, "minor": 0, "major": 0}, "package": "hollow-vmm"},
        "capabilities": [],
    }
}


def _answer(command: str, name: str, ignore_powerdown: bool) -> tuple[dict[str, object], bool]:
    if command == "qmp_capabilities":
        return {"return": {}}, False
    if command == "query-status":
        return {"return": {"status": "running", "singlestep": False, "running": True}}, False
    if command == "query-name":
        return {"return": {"name": name}}, False
    if command == "system_powerdown" and ignore_powerdown:
        return {"return": {}}, False
    if command in ("system_powerdown", "quit"):
        return {"return": {}}, True
    desc = f"The command {command} has not been found"
    return {"error": {"class": "CommandNotFound", "desc": desc}}, False


def _drop(
    selector: selectors.BaseSelector, buffers: dict[socket.socket, bytes], sock: socket.socket
) -> None:
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(sock)
    buffers.pop(sock, None)
    sock.close()


def _send_or_drop(
    selector: selectors.BaseSelector,
    buffers: dict[socket.socket, bytes],
    sock: socket.socket,
    data: bytes,
) -> None:
    """A client that went away (e.g. a readiness probe) must not take the VMM down with it."""
    try:
        sock.sendall(data)
    except OSError:
        _drop(selector, buffers, sock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hollow-vmm")
    parser.add_argument("--name", default="hollow")
    parser.add_argument("--serial", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--console-log", required=True)
    parser.add_argument("--cmdline", default="")
    parser.add_argument("--boot-marker", default="hollow-vmm: boot complete")
    parser.add_argument("--crash-after", type=float, default=-1.0)
    parser.add_argument("--boot-delay", type=float, default=0.0)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--ignore-powerdown", action="store_true")
    args = parser.parse_args(argv)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise _Terminate(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, terminate)
    signal.signal(signal.SIGHUP, terminate)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_sigterm else terminate)

    selector = selectors.DefaultSelector()
    listeners = {"serial": _listen(args.serial), "control": _listen(args.control)}
    for kind, sock in listeners.items():
        selector.register(sock, selectors.EVENT_READ, ("listen", kind))
    _console(args.console_log, f"hollow-vmm: starting {args.name}")
    _console(args.console_log, f"hollow-vmm: Command line: {args.cmdline}")
    booted_at: float | None = time.monotonic() + args.boot_delay
    if args.boot_delay <= 0:
        _console(args.console_log, args.boot_marker)
        booted_at = None
    deadline = time.monotonic() + args.crash_after if args.crash_after >= 0 else None
    buffers: dict[socket.socket, bytes] = {}
    code = 0
    try:
        while True:
            timeout = None
            if booted_at is not None:
                timeout = booted_at - time.monotonic()
                if timeout <= 0:
                    _console(args.console_log, args.boot_marker)
                    booted_at = timeout = None
            if deadline is not None:
                crash_in = deadline - time.monotonic()
                timeout = crash_in if timeout is None else min(timeout, crash_in)
                if crash_in <= 0:
                    _console(args.console_log, f"hollow-vmm: simulated crash of {args.name}")
                    signal.signal(signal.SIGABRT, signal.SIG_DFL)
                    os.abort()
            for key, _ in selector.select(timeout):
                role, kind = key.data
                fileobj = key.fileobj
                assert isinstance(fileobj, socket.socket)
                sock = fileobj
                if role == "listen":
                    conn, _addr = sock.accept()
                    selector.register(conn, selectors.EVENT_READ, ("client", kind))
                    buffers[conn] = b""
                    greeting = (
                        json.dumps(GREETING) + "\r\n"
                        if kind == "control"
                        else f"hollow-vmm console for {args.name}\r\n"
                    )
                    _send_or_drop(selector, buffers, conn, greeting.encode())
                    continue
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    _drop(selector, buffers, sock)
                    continue
                if kind == "serial":
                    _send_or_drop(selector, buffers, sock, data)
                    continue
                buffers[sock] += data
                *lines, buffers[sock] = buffers[sock].split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        command = str(json.loads(line).get("execute", ""))
                    except (ValueError, AttributeError):
                        command = ""
                    reply, stop = _answer(command, args.name, args.ignore_powerdown)
                    _send_or_drop(selector, buffers, sock, json.dumps(reply).encode() + b"\r\n")
                    if stop:
                        note = f"hollow-vmm: power down requested via {command}"
                        _console(args.console_log, note)
                        return code
    except _Terminate as exc:
        _console(args.console_log, f"hollow-vmm: terminating on signal {exc}")
        return code
    finally:
        for path in (args.serial, args.control):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
