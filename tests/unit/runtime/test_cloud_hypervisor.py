"""Cloud Hypervisor: exact argv, and the REST exchange against a recorded fake api-socket."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import h11
import pytest
import trio

from volant.runtime.base import DiskSpec, LaunchSpec, VMMHandle, VMMIdentity
from volant.runtime.cloud_hypervisor import (
    CloudHypervisorAPI,
    CloudHypervisorAPIError,
    CloudHypervisorLauncher,
    build_argv,
)


def spec(**kw: object) -> LaunchSpec:
    run = Path("/run/v/web")
    fields: dict[str, object] = {
        "name": "web",
        "instance_id": "inst",
        "cpu_cores": 2,
        "memory_mb": 1024,
        "kernel": Path("/media/vmlinux"),
        "initramfs": None,
        "cmdline": "console=ttyS0 volant.manifest=abc",
        "run_dir": run,
        "console_log": run / "console.log",
    }
    fields.update(kw)
    return LaunchSpec(**fields)  # type: ignore[arg-type]


def test_argv_tap_rootfs_disks_devices() -> None:
    argv = build_argv(
        spec(
            tap="vtap3",
            mac="02:aa:bb:cc:dd:ee",
            initramfs=Path("/media/initrd.cpio.gz"),
            disks=(
                DiskSpec(Path("/vms/web/root.img"), readonly=False, id="root"),
                DiskSpec(Path("/vms/web/seed.iso"), readonly=True, id="seed"),
            ),
            vfio_devices=("/sys/bus/pci/devices/0000:3b:00.0",),
        )
    )
    assert argv == [
        "cloud-hypervisor",
        "--api-socket", "path=/run/v/web/api.sock",
        "--cpus", "boot=2",
        "--memory", "size=1024M",
        "--kernel", "/media/vmlinux",
        "--serial", "socket=/run/v/web/serial.sock",
        "--console", "off",
        "--net", "tap=vtap3,mac=02:aa:bb:cc:dd:ee",
        "--initramfs", "/media/initrd.cpio.gz",
        "--disk", "path=/vms/web/root.img,readonly=off,id=root",
        "--disk", "path=/vms/web/seed.iso,readonly=on,id=seed",
        "--device", "path=/sys/bus/pci/devices/0000:3b:00.0",
        "--cmdline", "console=ttyS0 volant.manifest=abc",
        "--event-monitor", "path=/run/v/web/events.json",
    ]  # fmt: skip


def test_argv_vsock_carries_its_socket() -> None:
    argv = build_argv(spec(vsock_cid=7), binary="/opt/ch/cloud-hypervisor")
    assert argv[0] == "/opt/ch/cloud-hypervisor"
    assert argv[argv.index("--vsock") + 1] == "cid=7,socket=/run/v/web/vsock.sock"
    assert "--net" not in argv
    assert "--initramfs" not in argv


@attrs.define
class Recorded:
    method: str
    target: str
    body: bytes
    headers: dict[str, str]


@attrs.define
class FakeCH:
    """Answers like Cloud Hypervisor's api-socket; ``responses`` maps a path to (status, body)."""

    path: Path
    requests: list[Recorded] = attrs.field(factory=list)
    responses: dict[str, tuple[int, bytes]] = attrs.field(factory=dict)

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                target = request.target.decode()
                self.requests.append(
                    Recorded(
                        request.method.decode(),
                        target,
                        body,
                        {k.decode(): v.decode() for k, v in request.headers},
                    )
                )
                status, payload = self.responses.get(target, (204, b""))
                headers = [("content-length", str(len(payload)))]
                if payload:
                    headers.append(("content-type", "application/json"))
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                if payload:
                    await stream.send_all(conn.send(h11.Data(data=payload)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()


@pytest.fixture
async def fake_ch(tmp_path: Path) -> AsyncIterator[FakeCH]:
    path = tmp_path / "api.sock"
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(8)
    fake = FakeCH(path)
    async with trio.open_nursery() as nursery:
        listener = trio.SocketListener(sock)
        nursery.start_soon(trio.serve_listeners, fake.handle, [listener])
        yield fake
        nursery.cancel_scope.cancel()


def handle_for(path: Path) -> VMMHandle:
    identity = VMMIdentity(
        pid=1, start_time=1, marker="inst:web", kind="cloud-hypervisor",
        serial_socket=str(path.with_name("serial.sock")), control_socket=str(path),
        console_log=str(path.with_name("console.log")),
    )  # fmt: skip
    return VMMHandle(identity, pidfd=-1)


async def test_rest_calls(fake_ch: FakeCH) -> None:
    info_body = {"config": {"cpus": {"boot_vcpus": 2}}, "state": "Running"}
    fake_ch.responses["/api/v1/vm.info"] = (200, json.dumps(info_body).encode())
    fake_ch.responses["/api/v1/vmm.ping"] = (200, b'{"build_version":"v41.0","version":"v41.0"}')
    api = CloudHypervisorAPI(fake_ch.path)
    assert (await api.ping())["version"] == "v41.0"
    assert (await api.info())["state"] == "Running"
    await api.pause()
    await api.resume()
    await api.power_button()
    await api.shutdown()
    assert [(r.method, r.target, r.body) for r in fake_ch.requests] == [
        ("GET", "/api/v1/vmm.ping", b""),
        ("GET", "/api/v1/vm.info", b""),
        ("PUT", "/api/v1/vm.pause", b""),
        ("PUT", "/api/v1/vm.resume", b""),
        ("PUT", "/api/v1/vm.power-button", b""),
        ("PUT", "/api/v1/vm.shutdown", b""),
    ]
    assert fake_ch.requests[0].headers["host"] == "localhost"


async def test_rest_error_status_is_an_upstream_error(fake_ch: FakeCH) -> None:
    fake_ch.responses["/api/v1/vm.pause"] = (500, b'"VM is not running"')
    with pytest.raises(CloudHypervisorAPIError, match="answered 500") as caught:
        await CloudHypervisorAPI(fake_ch.path).pause()
    assert caught.value.status == 502
    assert caught.value.details["status_code"] == 500


async def test_unreachable_socket(tmp_path: Path) -> None:
    with pytest.raises(CloudHypervisorAPIError, match="failed"):
        await CloudHypervisorAPI(tmp_path / "missing.sock", timeout=1).ping()


async def test_request_shutdown_presses_the_power_button(fake_ch: FakeCH) -> None:
    launcher = CloudHypervisorLauncher()
    assert await launcher.request_shutdown(handle_for(fake_ch.path)) is True
    assert [(r.method, r.target) for r in fake_ch.requests] == [("PUT", "/api/v1/vm.power-button")]


async def test_request_shutdown_falls_back_to_vm_and_vmm_shutdown(fake_ch: FakeCH) -> None:
    fake_ch.responses["/api/v1/vm.power-button"] = (500, b'"VM not booted"')
    launcher = CloudHypervisorLauncher()
    assert await launcher.request_shutdown(handle_for(fake_ch.path)) is True
    assert [(r.method, r.target) for r in fake_ch.requests] == [
        ("PUT", "/api/v1/vm.power-button"),
        ("PUT", "/api/v1/vm.shutdown"),
        ("PUT", "/api/v1/vmm.shutdown"),
    ]


async def test_request_shutdown_not_delivered(fake_ch: FakeCH) -> None:
    for endpoint in ("vm.power-button", "vm.shutdown", "vmm.shutdown"):
        fake_ch.responses[f"/api/v1/{endpoint}"] = (500, b'"no"')
    assert await CloudHypervisorLauncher().request_shutdown(handle_for(fake_ch.path)) is False
