"""Websockets: a VM's serial console and its agent's log stream.

The console bridges the websocket to the VM's serial Unix socket in both
directions, byte for byte, in every network mode (upstream required an IP even
though the serial socket has nothing to do with networking). The log stream
relays kestrel's ``/v1/logs/stream`` SSE as JSON frames with upstream's close
codes, and republishes each line as a ``VM_LOG`` event.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio
from quart import Blueprint, websocket

from volant.api import spec
from volant.api.agent import agent_base
from volant.api.common import service
from volant.errors import VolantError
from volant.orchestrator.events import EventBus
from volant.orchestrator.vms import VMManager

blueprint = Blueprint("ws", __name__)

CHUNK = 4096
CLOSE_NORMAL = 1000
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013


@blueprint.websocket("/ws/v1/vms/<name>/console")
@spec.api_doc(summary="Serial console of a VM (binary frames both ways)", tags=["vm"],
              operation_id="vmConsole", websocket=True)
async def console(name: str) -> None:
    manager: VMManager = service("vm_manager")
    await websocket.accept()
    try:
        view = manager.get_view(name)
    except VolantError as exc:
        await websocket.close(CLOSE_NORMAL, exc.message)
        return
    serial = Path(view["serial_socket"])
    if view["status"] not in ("running", "starting") or not serial.exists():
        await websocket.close(CLOSE_TRY_AGAIN, f"vm {name} has no console (status "
                                               f"{view['status']})")
        return
    try:
        stream = await trio.open_unix_socket(str(serial))
    except OSError as exc:
        await websocket.close(CLOSE_TRY_AGAIN, f"console unavailable: {exc.strerror or exc}")
        return
    async with stream, trio.open_nursery() as nursery:

        async def serial_to_client() -> None:
            while chunk := await stream.receive_some(CHUNK):
                await websocket.send(chunk)
            nursery.cancel_scope.cancel()

        async def client_to_serial() -> None:
            while True:
                data = await websocket.receive()
                await stream.send_all(data.encode() if isinstance(data, str) else data)

        nursery.start_soon(serial_to_client)
        nursery.start_soon(client_to_serial)
    await websocket.close(CLOSE_NORMAL, "console closed")


@blueprint.websocket("/ws/v1/vms/<name>/logs")
@spec.api_doc(summary="The guest agent's log stream as JSON frames", tags=["vm"],
              operation_id="vmLogs", websocket=True,
              parameters=[spec.query_param("tail", spec.INTEGER, "lines of backlog first")])
async def logs(name: str) -> None:
    manager: VMManager = service("vm_manager")
    bus: EventBus = service("events")
    await websocket.accept()
    try:
        manager.get_view(name)
    except VolantError:
        await websocket.close(CLOSE_NORMAL, "vm not found")
        return
    try:
        base = agent_base(name)
    except VolantError:
        await websocket.close(CLOSE_TRY_AGAIN, "vm not ready")
        return
    tail = websocket.args.get("tail", "0")
    try:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client,
            client.stream("GET", f"{base}/v1/logs/stream", params={"tail": tail},
                          headers={"Accept": "text/event-stream"}) as response,
        ):
                if response.status_code != 200:
                    await websocket.close(CLOSE_TRY_AGAIN,
                                          f"agent returned {response.status_code}")
                    return
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip())
                        continue
                    if line or not data:
                        continue
                    try:
                        entry = json.loads("\n".join(data))
                    except ValueError:
                        entry = {"stream": "stdout", "line": "\n".join(data)}
                    data = []
                    frame = {"name": name, "stream": entry.get("stream", "stdout"),
                             "line": entry.get("line", ""),
                             "timestamp": entry.get("timestamp", "")}
                    await websocket.send(json.dumps(frame))
                    bus.publish("VM_LOG", name, "running", stream=frame["stream"],
                                line=frame["line"])
    except httpx.HTTPError:
        await websocket.close(CLOSE_TRY_AGAIN, "agent unreachable")
        return
    await websocket.close(CLOSE_NORMAL, "stream closed")
