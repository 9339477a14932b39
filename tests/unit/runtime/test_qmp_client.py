"""The QMP client against a scripted fake server on a Unix socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from volant.runtime.qmp import QMPClient, QMPError, qmp_command

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}

Script = Callable[[trio.SocketStream, list[dict]], Awaitable[None]]


async def read_command(stream: trio.SocketStream, buf: bytearray) -> dict:
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            raise EOFError
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    message: dict = json.loads(line)
    return message


async def send(stream: trio.SocketStream, message: dict) -> None:
    await stream.send_all(json.dumps(message).encode() + b"\r\n")


async def serve(tmp_path: Path, nursery: trio.Nursery, script: Script) -> tuple[Path, list[dict]]:
    path = tmp_path / "qmp.sock"
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(1)
    received: list[dict] = []

    async def run() -> None:
        conn, _ = await sock.accept()
        stream = trio.SocketStream(conn)
        async with stream:
            await script(stream, received)

    nursery.start_soon(run)
    return path, received


async def well_behaved(stream: trio.SocketStream, received: list[dict]) -> None:
    buf = bytearray()
    await send(stream, GREETING)
    while True:
        try:
            cmd = await read_command(stream, buf)
        except EOFError:
            return
        received.append(cmd)
        name = cmd["execute"]
        if name == "qmp_capabilities":
            await send(stream, {"return": {}})
        elif name == "system_powerdown":
            # An event may arrive before the reply.
            await send(stream, {"event": "POWERDOWN", "timestamp": {"seconds": 1}})
            await send(stream, {"return": {}})
        elif name == "query-status":
            await send(stream, {"return": {"status": "running", "running": True}})
        else:
            await send(stream, {"error": {"class": "CommandNotFound", "desc": f"no {name}"}})


async def test_handshake_commands_events_and_errors(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        path, received = await serve(tmp_path, nursery, well_behaved)
        async with await QMPClient.connect(path, timeout=5) as qmp:
            assert qmp.greeting["version"]["qemu"]["major"] == 7
            assert await qmp.execute("system_powerdown") == {}
            assert (await qmp.next_event())["event"] == "POWERDOWN"
            assert (await qmp.execute("query-status", {"x": 1}))["status"] == "running"
            with pytest.raises(QMPError, match="no bogus") as caught:
                await qmp.execute("bogus")
            assert caught.value.details["qmp_class"] == "CommandNotFound"
    assert [c["execute"] for c in received] == [
        "qmp_capabilities",
        "system_powerdown",
        "query-status",
        "bogus",
    ]
    assert received[2]["arguments"] == {"x": 1}


async def test_silent_server_times_out(tmp_path: Path) -> None:
    async def silent(stream: trio.SocketStream, received: list[dict]) -> None:
        await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        path, _ = await serve(tmp_path, nursery, silent)
        with trio.fail_after(3), pytest.raises(QMPError, match="did not answer"):
            await QMPClient.connect(path, timeout=0.3)
        nursery.cancel_scope.cancel()


async def test_bad_greeting_and_early_close(tmp_path: Path) -> None:
    async def wrong(stream: trio.SocketStream, received: list[dict]) -> None:
        await send(stream, {"hello": "world"})

    async with trio.open_nursery() as nursery:
        path, _ = await serve(tmp_path, nursery, wrong)
        with pytest.raises(QMPError, match="unexpected QMP greeting"):
            await QMPClient.connect(path, timeout=2)

    async def closes(stream: trio.SocketStream, received: list[dict]) -> None:
        await send(stream, GREETING)
        received.append(await read_command(stream, bytearray()))  # then hang up, no reply

    (tmp_path / "qmp.sock").unlink()
    async with trio.open_nursery() as nursery:
        path, _ = await serve(tmp_path, nursery, closes)
        with pytest.raises(QMPError, match="closed by the VMM"):
            await QMPClient.connect(path, timeout=2)


async def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(QMPError, match="cannot connect"):
        await qmp_command(tmp_path / "nope.sock", "quit", timeout=1)
