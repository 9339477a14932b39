"""QEMU adapter: the ``microvm`` machine with virtio-mmio devices, controlled over QMP.

Layout of a VM's run dir: ``serial.sock`` (the guest's ttyS0; every byte is also appended to
the console log by QEMU itself, so the console is both connectable and recorded even with no
client attached), ``qmp.sock`` (control), ``vmm.log`` (QEMU's own stderr).

Acceleration: KVM only when the CPU flags show vmx/svm *and* /dev/kvm opens. A nested guest
without those flags may still expose a /dev/kvm that is far slower than TCG (see DESIGN.md
section 8), so /dev/kvm alone is not trusted.

Guest clock: ``rtc=on`` gives the guest a CMOS RTC, so it boots with the host's wall-clock
time; with ``rtc=off`` (as in qemu-boot-notes.md) a TCG guest has no clock source for the
date and starts in 1970, which breaks TLS certificate checks and log timestamps in the guest.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from volant.logging import get_logger
from volant.runtime.base import (
    LaunchError,
    LaunchSpec,
    RuntimeUnsupported,
    VMMHandle,
    VMMIdentity,
    adopt_identity,
    remove_stale,
)
from volant.runtime.process import launch_process, log_tail
from volant.runtime.qmp import QMPError, qmp_command, request_powerdown

KIND = "qemu"
ACCELS = ("auto", "kvm", "tcg")
_QEMU_ID = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")

_log = get_logger("volant.runtime.qemu")


@attrs.frozen
class HostCaps:
    """The host facts argv depends on, detected once, passed in so argv building stays pure."""

    kvm_usable: bool
    vhost_vsock: bool
    tsc_khz: int | None = None


def cpu_has_virt_flags(cpuinfo: str) -> bool:
    """True if any ``flags`` line of /proc/cpuinfo lists vmx (Intel) or svm (AMD)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags" and {"vmx", "svm"} & set(value.split()):
            return True
    return False


def host_tsc_khz(cpuinfo: str) -> int | None:
    """The host TSC rate in kHz, if the TSC is constant (else None: no hint is safe)."""
    constant = False
    mhz: float | None = None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key == "flags":
            constant = constant or "constant_tsc" in value.split()
        elif sep and key == "cpu MHz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                mhz = None
    if not constant or not mhz:
        return None
    return round(mhz * 1000)


def _dev_kvm_opens(path: str = "/dev/kvm") -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def detect_host(
    cpuinfo: str | None = None,
    dev_kvm_opens: Callable[[], bool] = _dev_kvm_opens,
    vhost_vsock_path: str = "/dev/vhost-vsock",
) -> HostCaps:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    kvm = cpu_has_virt_flags(cpuinfo) and dev_kvm_opens()
    return HostCaps(
        kvm_usable=kvm,
        vhost_vsock=os.path.exists(vhost_vsock_path),
        tsc_khz=host_tsc_khz(cpuinfo),
    )


def choose_accel(requested: str, host: HostCaps) -> str:
    if requested not in ACCELS:
        raise RuntimeUnsupported(f"accel must be one of {', '.join(ACCELS)}, got {requested!r}")
    if requested == "auto":
        return "kvm" if host.kvm_usable else "tcg"
    if requested == "kvm" and not host.kvm_usable:
        raise RuntimeUnsupported(
            "accel 'kvm' requested but KVM is not usable here (no vmx/svm CPU flag or "
            "/dev/kvm does not open); use 'auto' or 'tcg'"
        )
    return requested


def _opt(value: str | Path) -> str:
    """Escape a value inside a QEMU ``key=value,...`` option (commas are doubled)."""
    return str(value).replace(",", ",,")


def _check_id(disk_id: str) -> str:
    if not _QEMU_ID.match(disk_id):
        raise RuntimeUnsupported(
            f"disk id {disk_id!r} is not a valid QEMU id (letter first, then letters, "
            "digits, '.', '_' or '-'; at most 64)"
        )
    return disk_id


def guest_cmdline(cmdline: str, accel: str, host: HostCaps) -> str:
    """The kernel command line, plus ``tsc_early_khz`` for TCG guests when the host's is known.

    Under TCG the guest's TSC ticks at the host's TSC rate, but the guest kernel measures
    it against the emulated PIT; on a busy host that calibration fails, the kernel falls
    back to jiffies and stalls in early boot (seen here: no progress for minutes at load 4
    on 2 cores, a 4 s boot with the hint). Telling the kernel the rate skips calibration.
    An explicit ``tsc_early_khz=`` in the command line wins.
    """
    if accel != "tcg" or host.tsc_khz is None or "tsc_early_khz=" in cmdline:
        return cmdline
    return f"{cmdline} tsc_early_khz={host.tsc_khz}".strip()


def tcg_accel(cpu_cores: int) -> str:
    """Single-threaded TCG for one vCPU: multi-threaded TCG emits barriers and atomic
    helpers for cross-vCPU consistency that a lone vCPU never needs (measured here:
    PID 1 -> agent API up about 0.3 s faster and steadier on the hello image)."""
    return "tcg,thread=single" if cpu_cores <= 1 else "tcg,thread=multi"


def sockets(spec: LaunchSpec) -> tuple[Path, Path]:
    return spec.run_dir / "serial.sock", spec.run_dir / "qmp.sock"


def build_argv(spec: LaunchSpec, host: HostCaps, binary: str = "qemu-system-x86_64") -> list[str]:
    """The full QEMU command line for ``spec`` on a host with ``host`` capabilities."""
    serial, qmp = sockets(spec)
    accel = choose_accel(spec.accel, host)
    machine = "microvm,x-option-roms=off,isa-serial=on,rtc=on"
    if spec.vfio_devices:
        machine += ",pcie=on"  # vfio-pci needs a PCI host bridge; microvm has none by default
    argv = [
        binary,
        "-name",
        f"guest={_opt(spec.marker)}",
        "-M",
        machine,
    ]
    if accel == "kvm":
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        argv += ["-accel", tcg_accel(spec.cpu_cores)]
    argv += [
        "-m",
        f"{spec.memory_mb}M",
        "-smp",
        str(spec.cpu_cores),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-chardev",
        f"socket,id=serial0,path={_opt(serial)},server=on,wait=off,"
        f"logfile={_opt(spec.console_log)},logappend=on",
        "-serial",
        "chardev:serial0",
        "-qmp",
        f"unix:{_opt(qmp)},server=on,wait=off",
        "-kernel",
        str(spec.kernel),
    ]
    if spec.initramfs is not None:
        argv += ["-initrd", str(spec.initramfs)]
    argv += ["-append", guest_cmdline(spec.cmdline, accel, host)]
    if spec.tap:
        argv += ["-netdev", f"tap,id=net0,ifname={_opt(spec.tap)},script=no,downscript=no"]
        device = "virtio-net-device,netdev=net0"
        if spec.mac:
            device += f",mac={spec.mac}"
        argv += ["-device", device]
    for disk in spec.disks:
        disk_id = _check_id(disk.id)
        readonly = "on" if disk.readonly else "off"
        argv += [
            "-drive",
            f"if=none,id={disk_id},file={_opt(disk.path)},format=raw,readonly={readonly}",
            "-device",
            f"virtio-blk-device,drive={disk_id}",
        ]
    if spec.vsock_cid is not None:
        if not host.vhost_vsock:
            raise RuntimeUnsupported(
                "vsock requested but /dev/vhost-vsock does not exist on this host "
                "(load the vhost_vsock module, or run without vsock_cid)",
                vsock_cid=spec.vsock_cid,
            )
        argv += ["-device", f"vhost-vsock-device,guest-cid={spec.vsock_cid}"]
    for device_path in spec.vfio_devices:
        argv += ["-device", f"vfio-pci,sysfsdev={_opt(device_path)}"]
    return argv


class QemuLauncher:
    kind = KIND

    def __init__(
        self,
        binary: str = "qemu-system-x86_64",
        *,
        host: HostCaps | None = None,
        ready_timeout: float = 30.0,
        control_timeout: float = 5.0,
    ) -> None:
        self.binary = binary
        self._host = host
        self._ready_timeout = ready_timeout
        self._control_timeout = control_timeout

    @property
    def host(self) -> HostCaps:
        if self._host is None:
            self._host = detect_host()
            _log.info("qemu_host_caps", kvm=self._host.kvm_usable, vsock=self._host.vhost_vsock)
        return self._host

    def build_argv(self, spec: LaunchSpec) -> list[str]:
        return build_argv(spec, self.host, self.binary)

    async def launch(self, spec: LaunchSpec) -> VMMHandle:
        argv = self.build_argv(spec)  # validation errors surface before anything is spawned
        serial, qmp = sockets(spec)
        handle = await launch_process(
            spec,
            argv,
            kind=KIND,
            serial_socket=serial,
            control_socket=qmp,
            ready_timeout=self._ready_timeout,
        )
        await self._confirm_running(handle, spec)
        return handle

    async def _confirm_running(self, handle: VMMHandle, spec: LaunchSpec) -> None:
        """QMP answers only once every device is set up, so a bad tap or disk fails here.

        The QMP socket exists before device initialisation; without this check a launch
        with a missing disk would "succeed" and the VMM would exit a moment later.
        """
        try:
            with trio.fail_after(self._ready_timeout):
                status = await qmp_command(
                    handle.identity.control_socket, "query-status", timeout=self._ready_timeout
                )
            _log.debug("qemu_ready", vm=spec.name, status=status)
            return
        except (QMPError, trio.TooSlowError) as exc:
            problem = str(exc)
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            handle.send_signal(signal.SIGKILL)
            await handle.wait()
        self.cleanup(handle.identity)
        raise LaunchError(
            f"qemu for {spec.name!r} failed to start ({problem}): {log_tail(spec.vmm_log)}",
            vm=spec.name,
        )

    def adopt(self, identity: VMMIdentity) -> VMMHandle | None:
        return adopt_identity(identity, KIND)

    async def request_shutdown(self, handle: VMMHandle) -> bool:
        """ACPI power button via QMP ``system_powerdown``; the guest decides what to do."""
        return await request_powerdown(handle.identity.control_socket, handle.pid,
                                       self._control_timeout)

    async def quit(self, handle: VMMHandle) -> bool:
        """QMP ``quit``: QEMU exits at once (the guest gets no say, like pulling the plug)."""
        try:
            await qmp_command(handle.identity.control_socket, "quit", timeout=self._control_timeout)
        except QMPError as exc:
            _log.info("qemu_quit_failed", pid=handle.pid, error=str(exc))
            return False
        return True

    def cleanup(self, identity: VMMIdentity) -> None:
        remove_stale(identity.serial_socket, identity.control_socket)
