"""Cloud Hypervisor adapter: argv as upstream Volant builds it, plus the REST API it never used.

Differences from upstream (upstream-volant.md section 7.2), on purpose:
- ``--vsock`` carries ``socket=<run_dir>/vsock.sock``: Cloud Hypervisor's hybrid vsock needs
  the host-side Unix socket, and upstream's launch without it fails.
- vsock and tap are emitted independently, from the spec (upstream picked one or the other);
  the VM actor decides which the VM gets.
- ``--event-monitor path=<run_dir>/events.json`` records the VMM's lifecycle events.
- Kernel, initramfs and disks are used in place: media staging and caching is the VM
  actor's job, not the launcher's (upstream copied them on every boot).
- The api-socket is used: shutdown, power button, pause, resume, info, ping.

Cloud Hypervisor's serial socket has no log file of its own, so the console log is whatever a
console reader attached to ``serial.sock`` records (the identity still names it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from volant.errors import UpstreamError
from volant.logging import get_logger
from volant.runtime.base import (
    LaunchSpec,
    VMMHandle,
    VMMIdentity,
    adopt_identity,
    remove_stale,
)
from volant.runtime.process import launch_process

KIND = "cloud-hypervisor"
API_PREFIX = "/api/v1"

_log = get_logger("volant.runtime.cloud_hypervisor")


class CloudHypervisorAPIError(UpstreamError):
    """The api-socket refused the request, answered with an error, or is unreachable."""


def paths(spec: LaunchSpec) -> dict[str, Path]:
    return {
        "api": spec.run_dir / "api.sock",
        "serial": spec.run_dir / "serial.sock",
        "vsock": spec.run_dir / "vsock.sock",
        "events": spec.run_dir / "events.json",
    }


def _onoff(flag: bool) -> str:
    return "on" if flag else "off"


def build_argv(spec: LaunchSpec, binary: str = "cloud-hypervisor") -> list[str]:
    p = paths(spec)
    argv = [
        binary,
        "--api-socket",
        f"path={p['api']}",
        "--cpus",
        f"boot={spec.cpu_cores}",
        "--memory",
        f"size={spec.memory_mb}M",
        "--kernel",
        str(spec.kernel),
        "--serial",
        f"socket={p['serial']}",
        "--console",
        "off",
    ]
    if spec.tap:
        net = f"tap={spec.tap}"
        if spec.mac:
            net += f",mac={spec.mac}"
        argv += ["--net", net]
    if spec.vsock_cid is not None:
        argv += ["--vsock", f"cid={spec.vsock_cid},socket={p['vsock']}"]
    if spec.initramfs is not None:
        argv += ["--initramfs", str(spec.initramfs)]
    for disk in spec.disks:
        argv += ["--disk", f"path={disk.path},readonly={_onoff(disk.readonly)},id={disk.id}"]
    for device in spec.vfio_devices:
        argv += ["--device", f"path={device}"]
    argv += ["--cmdline", spec.cmdline, "--event-monitor", f"path={p['events']}"]
    return argv


class CloudHypervisorAPI:
    """The REST API on the api-socket. One short-lived connection per call."""

    def __init__(self, socket_path: Path | str, timeout: float = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    async def _request(self, method: str, endpoint: str, body: Any = None) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(uds=self.socket_path)
        content = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost", timeout=self.timeout
            ) as client:
                response = await client.request(
                    method, f"{API_PREFIX}/{endpoint}", content=content, headers=headers
                )
        except httpx.HTTPError as exc:
            raise CloudHypervisorAPIError(
                f"cloud-hypervisor API {method} {endpoint} failed: {exc!r}",
                socket=self.socket_path,
            ) from exc
        if response.status_code >= 300:
            raise CloudHypervisorAPIError(
                f"cloud-hypervisor API {method} {endpoint} answered {response.status_code}: "
                f"{response.text[:500]}",
                status_code=response.status_code,
            )
        return response

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self._request("GET", "vmm.ping")).json()
        return result

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self._request("GET", "vm.info")).json()
        return result

    async def shutdown(self) -> None:
        await self._request("PUT", "vm.shutdown")

    async def power_button(self) -> None:
        await self._request("PUT", "vm.power-button")

    async def pause(self) -> None:
        await self._request("PUT", "vm.pause")

    async def resume(self) -> None:
        await self._request("PUT", "vm.resume")

    async def shutdown_vmm(self) -> None:
        await self._request("PUT", "vmm.shutdown")


class CloudHypervisorLauncher:
    kind = KIND

    def __init__(
        self,
        binary: str = "cloud-hypervisor",
        *,
        ready_timeout: float = 10.0,
        api_timeout: float = 5.0,
    ) -> None:
        self.binary = binary
        self._ready_timeout = ready_timeout
        self._api_timeout = api_timeout

    def build_argv(self, spec: LaunchSpec) -> list[str]:
        return build_argv(spec, self.binary)

    def api(self, handle: VMMHandle) -> CloudHypervisorAPI:
        return CloudHypervisorAPI(handle.identity.control_socket, self._api_timeout)

    async def launch(self, spec: LaunchSpec) -> VMMHandle:
        p = paths(spec)
        return await launch_process(
            spec,
            self.build_argv(spec),
            kind=KIND,
            serial_socket=p["serial"],
            control_socket=p["api"],
            ready_timeout=self._ready_timeout,
            extra_sockets=(p["vsock"],),
        )

    def adopt(self, identity: VMMIdentity) -> VMMHandle | None:
        return adopt_identity(identity, KIND)

    async def request_shutdown(self, handle: VMMHandle) -> bool:
        """The ACPI power button; if the VM cannot take it, ``vm.shutdown`` + ``vmm.shutdown``.

        The power button is the graceful request: the guest shuts down in order and Cloud
        Hypervisor exits when it powers off. ``vm.shutdown`` alone would stop the vCPUs
        without the guest's cooperation *and* leave the VMM process running (it waits for a
        new ``vm.boot``), so it is only the fallback for a VM that is not running (never
        booted, paused), followed by ``vmm.shutdown`` so the process exits.
        """
        api = self.api(handle)
        try:
            await api.power_button()
            return True
        except CloudHypervisorAPIError as exc:
            _log.info("ch_power_button_failed", pid=handle.pid, error=str(exc))
        try:
            await api.shutdown()
        except CloudHypervisorAPIError as exc:
            _log.info("ch_vm_shutdown_failed", pid=handle.pid, error=str(exc))
        try:
            await api.shutdown_vmm()
        except CloudHypervisorAPIError as exc:
            _log.info("ch_vmm_shutdown_failed", pid=handle.pid, error=str(exc))
            return False
        return True

    def cleanup(self, identity: VMMIdentity) -> None:
        run_dir = Path(identity.control_socket).parent
        remove_stale(identity.serial_socket, identity.control_socket, run_dir / "vsock.sock")
