"""The websocket adapter (trio-websocket): the VM console and the log stream.

Both go through volantd (``/ws/v1/vms/{name}/console`` and ``/logs``), so they
work from any host that can reach the API. Handshake rejections are mapped to
the same one-line errors as plain HTTP calls.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from volant.cli.client import API_KEY_HEADER, ApiClient, is_no_route
from volant.cli.common import seg
from volant.cli.errors import ApiError, CliError
from volant.cli.render import Output
from volant.cli.terminal import parse_escape as _parse_escape
from volant.cli.terminal import raw_mode

#: Close codes volantd uses for "try again later" / internal trouble (upstream section 1.7).
RETRY_LATER = 1013
INTERNAL = 1011
IDLE_END = 2.0  # without --follow: stop once the backlog has gone quiet this long


def parse_escape(text: str) -> bytes:
    try:
        return _parse_escape(text)
    except ValueError as exc:
        import typer

        raise typer.BadParameter(str(exc), param_hint="--escape") from None


def _rejection(exc: ConnectionRejected) -> ApiError:
    message = ""
    if exc.body:
        try:
            decoded = json.loads(exc.body)
            if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
                message = decoded["error"]
        except ValueError:
            message = exc.body.decode(errors="replace").strip().splitlines()[0][:300]
    message = message or f"websocket handshake rejected with {exc.status_code}"
    no_route = is_no_route(exc.status_code, message)
    if no_route:
        message += " (this volantd does not serve this websocket yet)"
    return ApiError(exc.status_code, message, no_route=no_route)


@asynccontextmanager
async def connect(client: ApiClient, path: str) -> AsyncIterator[WebSocketConnection]:
    url = client.ws_url(path)
    headers = [(API_KEY_HEADER.encode(), client.api_key.encode())] if client.api_key else []
    client._trace(f"> WEBSOCKET {url}")
    try:
        async with open_websocket_url(url, extra_headers=headers, connect_timeout=15,
                                      disconnect_timeout=2,
                                      max_message_size=4 * 1024 * 1024) as ws:
            client._trace("< 101 Switching Protocols")
            yield ws
    except ConnectionRejected as exc:
        raise _rejection(exc) from None
    except HandshakeError as exc:
        raise CliError(f"cannot open websocket to {url}: {exc or type(exc).__name__}") from None
    except OSError as exc:
        raise CliError(f"cannot reach volantd at {client.base}: {exc.strerror or exc}") from None


def _close_error(exc: ConnectionClosed, name: str) -> CliError | None:
    reason = exc.reason
    if reason is None:
        return None
    detail = reason.reason or reason.name
    if reason.code in (1000, 1001, 1005):
        # volantd accepts first and then closes normally with "vm not found".
        return CliError(f"vm {name} not found") if "not found" in detail else None
    return CliError(f"vm {name}: stream closed by volantd ({reason.code}): {detail}")


# ---------------------------------------------------------------------- console

def run_console(client: ApiClient, name: str, escape: bytes) -> None:
    trio.run(_console, client, name, escape)


async def _console(client: ApiClient, name: str, escape: bytes) -> None:
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    closed: list[CliError | None] = []
    async with connect(client, f"/ws/v1/vms/{seg(name)}/console") as ws:
        key = "Ctrl-" + chr(escape[0] ^ 0x40) if escape[0] < 0x20 else escape.decode()
        print(f"volar: connected to {name}'s console; {key} to leave\r", file=sys.stderr,
              flush=True)
        with raw_mode(in_fd):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_guest_to_terminal, ws, name, out_fd, closed,
                                   nursery.cancel_scope)
                nursery.start_soon(_terminal_to_guest, ws, in_fd, escape, nursery.cancel_scope)
    print("\r\nvolar: console closed", file=sys.stderr, flush=True)
    if closed and closed[0] is not None:
        raise closed[0]


def run_socket_console(path: str, escape: bytes) -> None:
    """Upstream's ``vms console --socket``: attach to a local serial socket directly.

    Only works on the daemon's host (the socket is a local file); the API websocket is the
    default because it works from anywhere and goes through volantd's auth.
    """
    trio.run(_socket_console, path, escape)


async def _socket_console(path: str, escape: bytes) -> None:
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        stream = await trio.open_unix_socket(path)
    except OSError as exc:
        raise CliError(f"cannot open serial socket {path}: {exc.strerror or exc}") from None
    key = "Ctrl-" + chr(escape[0] ^ 0x40) if escape[0] < 0x20 else escape.decode()
    print(f"volar: connected to {path}; {key} to leave\r", file=sys.stderr, flush=True)
    async with stream:
        with raw_mode(in_fd):
            async with trio.open_nursery() as nursery:

                async def guest_to_terminal() -> None:
                    while data := await stream.receive_some(4096):
                        await trio.to_thread.run_sync(_write_all, out_fd, data)
                    nursery.cancel_scope.cancel()

                async def terminal_to_guest() -> None:
                    while True:
                        data = await trio.to_thread.run_sync(os.read, in_fd, 4096,
                                                             abandon_on_cancel=True)
                        cut = data.find(escape) if data else 0
                        if cut > 0:
                            await stream.send_all(data[:cut])
                        if not data or cut >= 0:
                            break
                        await stream.send_all(data)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(guest_to_terminal)
                nursery.start_soon(terminal_to_guest)
    print("\r\nvolar: console closed", file=sys.stderr, flush=True)


async def _guest_to_terminal(ws: WebSocketConnection, name: str, out_fd: int,
                             closed: list[CliError | None], scope: trio.CancelScope) -> None:
    try:
        while True:
            message = await ws.get_message()
            data = message.encode() if isinstance(message, str) else message
            await trio.to_thread.run_sync(_write_all, out_fd, data)
    except ConnectionClosed as exc:
        closed.append(_close_error(exc, name))
    scope.cancel()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


async def _terminal_to_guest(ws: WebSocketConnection, in_fd: int, escape: bytes,
                             scope: trio.CancelScope) -> None:
    while True:
        data = await trio.to_thread.run_sync(os.read, in_fd, 4096, abandon_on_cancel=True)
        if not data:
            # Input ended (a pipe): give the guest a moment to answer, then leave.
            await trio.sleep(1.0)
            break
        cut = data.find(escape)
        if cut >= 0:
            if cut:
                await _send(ws, data[:cut])
            break
        if not await _send(ws, data):
            break
    scope.cancel()


async def _send(ws: WebSocketConnection, data: bytes) -> bool:
    try:
        await ws.send_message(data)
    except ConnectionClosed:
        return False
    return True


# ------------------------------------------------------------------------- logs

def run_logs(client: ApiClient, output: Output, name: str, follow: bool, tail: int) -> None:
    trio.run(_logs, client, output, name, follow, tail)


async def _logs(client: ApiClient, output: Output, name: str, follow: bool, tail: int) -> None:
    """Print the last ``tail`` lines; with ``follow`` keep streaming, else stop when quiet.

    The agent's stream never ends by itself, so without ``--follow`` the backlog
    is considered complete once no line has arrived for ``IDLE_END`` seconds.
    """
    async with connect(client, f"/ws/v1/vms/{seg(name)}/logs?tail={tail}") as ws:
        try:
            while True:
                if follow:
                    message = await ws.get_message()
                else:
                    with trio.move_on_after(IDLE_END) as idle:
                        message = await ws.get_message()
                    if idle.cancelled_caught:
                        return
                _print_log(output, message)
        except ConnectionClosed as exc:
            error = _close_error(exc, name)
            if error is not None:
                raise error from None


def _print_log(output: Output, message: str | bytes) -> None:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    try:
        frame: Any = json.loads(text)
    except ValueError:
        frame = None
    if output.json:
        output.line(json.dumps(frame) if frame is not None else json.dumps({"line": text}))
        return
    if isinstance(frame, dict) and "line" in frame:
        stream = frame.get("stream") or "stdout"
        line = str(frame["line"]).rstrip("\n")
        if stream == "stderr":
            print(line, file=sys.stderr, flush=True)
        else:
            output.line(line)
    else:
        output.line(text.rstrip("\n"))
