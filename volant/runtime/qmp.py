"""A small trio client for QMP, QEMU's JSON control protocol (also spoken by the hollow VMM).

Protocol: the server sends a greeting, the client must send ``qmp_capabilities`` before any
other command; every command gets exactly one ``return`` or ``error`` reply; asynchronous
``event`` messages may arrive at any time in between and are queued for ``next_event``.
Every read is bounded by a timeout, so a wedged VMM cannot hang the caller.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from volant.errors import UpstreamError
from volant.logging import get_logger

MAX_LINE = 1 << 20


class QMPError(UpstreamError):
    """QMP answered with an error, broke the protocol, or did not answer in time."""


class QMPClient:
    def __init__(self, stream: trio.SocketStream, timeout: float) -> None:
        self._stream = stream
        self._timeout = timeout
        self._buffer = bytearray()
        self._events: deque[dict[str, Any]] = deque()
        self.greeting: dict[str, Any] = {}

    @classmethod
    async def connect(cls, path: Path | str, timeout: float = 5.0) -> QMPClient:
        """Connect, read the greeting and negotiate capabilities."""
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_unix_socket(str(path))
        except (OSError, trio.TooSlowError) as exc:
            raise QMPError(f"cannot connect to QMP socket {path}: {exc}", path=str(path)) from exc
        client = cls(stream, timeout)
        try:
            greeting = await client._read_message()
            if "QMP" not in greeting:
                raise QMPError(f"unexpected QMP greeting: {greeting!r}")
            client.greeting = greeting["QMP"]
            await client.execute("qmp_capabilities")
        except BaseException:
            await client.aclose()
            raise
        return client

    async def __aenter__(self) -> QMPClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command and return its ``return`` value; raises QMPError on ``error``."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            with trio.fail_after(self._timeout):
                await self._stream.send_all(json.dumps(message).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            raise QMPError(f"QMP {command}: send failed: {exc}") from exc
        while True:
            reply = await self._read_message()
            if "event" in reply:
                self._events.append(reply)
                continue
            if "error" in reply:
                error = reply["error"]
                raise QMPError(
                    f"QMP {command} failed: {error.get('desc', error)}",
                    qmp_class=error.get("class"),
                )
            if "return" in reply:
                return reply["return"]
            raise QMPError(f"QMP {command}: unexpected reply {reply!r}")

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next asynchronous event (queued ones first)."""
        if self._events:
            return self._events.popleft()
        limit = self._timeout if timeout is None else timeout
        try:
            with trio.fail_after(limit):
                while True:
                    message = await self._read_message(bounded=False)
                    if "event" in message:
                        return message
        except trio.TooSlowError as exc:
            raise QMPError(f"no QMP event within {limit}s") from exc

    async def _read_message(self, *, bounded: bool = True) -> dict[str, Any]:
        if bounded:
            try:
                with trio.fail_after(self._timeout):
                    line = await self._read_line()
            except trio.TooSlowError as exc:
                raise QMPError(f"QMP did not answer within {self._timeout}s") from exc
        else:
            line = await self._read_line()
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise QMPError(f"QMP sent invalid JSON: {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise QMPError(f"QMP sent a non-object: {line[:200]!r}")
        return message

    async def _read_line(self) -> bytes:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                if line.strip():
                    return line
                continue
            if len(self._buffer) > MAX_LINE:
                raise QMPError("QMP message too long")
            try:
                chunk = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise QMPError(f"QMP connection lost: {exc}") from exc
            if not chunk:
                raise QMPError("QMP connection closed by the VMM")
            self._buffer += chunk


async def qmp_command(
    path: Path | str, command: str, arguments: dict[str, Any] | None = None, timeout: float = 5.0
) -> Any:
    """Connect, run one command, disconnect. Timeouts surface as QMPError."""
    async with await QMPClient.connect(path, timeout) as client:
        return await client.execute(command, arguments)


async def request_powerdown(control_socket: str, pid: int, timeout: float) -> bool:
    """ACPI power button via QMP ``system_powerdown`` (QEMU, and the hollow stand-in).

    Returns whether the request was delivered; the guest decides what to do with it.
    """
    try:
        await qmp_command(control_socket, "system_powerdown", timeout=timeout)
    except QMPError as exc:
        get_logger("volant.runtime.qmp").info("powerdown_failed", pid=pid, error=str(exc))
        return False
    return True
