"""QEMU argv building: acceleration choice, devices, escaping, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from volant.runtime.base import DiskSpec, LaunchSpec, RuntimeUnsupported
from volant.runtime.qemu import HostCaps, build_argv, choose_accel, cpu_has_virt_flags, detect_host

CPUINFO_PLAIN = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr hypervisor
bugs\t\t: spectre_v1
"""
CPUINFO_VMX = CPUINFO_PLAIN.replace("hypervisor", "hypervisor vmx ept")
CPUINFO_SVM = CPUINFO_PLAIN.replace("hypervisor", "svm npt")
# "vmx" only inside another field must not count.
CPUINFO_TRICK = CPUINFO_PLAIN + "model name\t: vmx svm emulator\nvmx flags\t: ept\n"

TCG_HOST = HostCaps(kvm_usable=False, vhost_vsock=False)
KVM_HOST = HostCaps(kvm_usable=True, vhost_vsock=True)


def spec(tmp: Path = Path("/run/v/vm1"), **kw: object) -> LaunchSpec:
    fields: dict[str, object] = {
        "name": "vm1",
        "instance_id": "inst",
        "cpu_cores": 2,
        "memory_mb": 512,
        "kernel": Path("/media/vmlinux"),
        "initramfs": Path("/media/initrd.gz"),
        "cmdline": "console=ttyS0 volant.a=1",
        "run_dir": tmp,
        "console_log": tmp / "console.log",
    }
    fields.update(kw)
    return LaunchSpec(**fields)  # type: ignore[arg-type]


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [(CPUINFO_PLAIN, False), (CPUINFO_VMX, True), (CPUINFO_SVM, True), (CPUINFO_TRICK, False)],
)
def test_virt_flags(cpuinfo: str, expected: bool) -> None:
    assert cpu_has_virt_flags(cpuinfo) is expected


def test_kvm_needs_flags_and_a_device_that_opens() -> None:
    assert detect_host(CPUINFO_VMX, dev_kvm_opens=lambda: True).kvm_usable
    assert not detect_host(CPUINFO_VMX, dev_kvm_opens=lambda: False).kvm_usable
    # A nested guest without vmx/svm whose /dev/kvm opens: TCG.
    assert not detect_host(CPUINFO_PLAIN, dev_kvm_opens=lambda: True).kvm_usable


def test_vhost_vsock_detection(tmp_path: Path) -> None:
    dev = tmp_path / "vhost-vsock"
    assert not detect_host(CPUINFO_PLAIN, vhost_vsock_path=str(dev)).vhost_vsock
    dev.touch()
    assert detect_host(CPUINFO_PLAIN, vhost_vsock_path=str(dev)).vhost_vsock


def test_accel_choice() -> None:
    assert choose_accel("auto", TCG_HOST) == "tcg"
    assert choose_accel("auto", KVM_HOST) == "kvm"
    assert choose_accel("tcg", KVM_HOST) == "tcg"
    with pytest.raises(RuntimeUnsupported, match="KVM is not usable"):
        choose_accel("kvm", TCG_HOST)
    with pytest.raises(RuntimeUnsupported):
        choose_accel("hvf", KVM_HOST)


def test_base_argv_under_tcg() -> None:
    argv = build_argv(spec(), TCG_HOST)
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-name") == ["guest=inst:vm1"]
    assert option(argv, "-M") == ["microvm,x-option-roms=off,isa-serial=on,rtc=on"]
    assert option(argv, "-accel") == ["tcg,thread=multi"]  # 2 vCPUs: one host thread each
    one_vcpu = build_argv(spec(cpu_cores=1), TCG_HOST)
    assert option(one_vcpu, "-accel") == ["tcg,thread=single"]
    assert "-cpu" not in argv
    assert option(argv, "-m") == ["512M"]
    assert option(argv, "-smp") == ["2"]
    for flag in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"):
        assert flag in argv
    assert option(argv, "-chardev") == [
        "socket,id=serial0,path=/run/v/vm1/serial.sock,server=on,wait=off,"
        "logfile=/run/v/vm1/console.log,logappend=on"
    ]
    assert option(argv, "-serial") == ["chardev:serial0"]
    assert option(argv, "-qmp") == ["unix:/run/v/vm1/qmp.sock,server=on,wait=off"]
    assert option(argv, "-kernel") == ["/media/vmlinux"]
    assert option(argv, "-initrd") == ["/media/initrd.gz"]
    assert option(argv, "-append") == ["console=ttyS0 volant.a=1"]
    assert "-netdev" not in argv
    assert "-drive" not in argv


def test_kvm_argv() -> None:
    argv = build_argv(spec(accel="auto"), KVM_HOST)
    assert option(argv, "-accel") == ["kvm"]
    assert option(argv, "-cpu") == ["host"]


def test_rootfs_boot_without_initramfs() -> None:
    argv = build_argv(spec(initramfs=None), TCG_HOST)
    assert "-initrd" not in argv


def test_tap_and_mac() -> None:
    argv = build_argv(spec(tap="vtap0", mac="02:00:00:00:00:01"), TCG_HOST)
    assert option(argv, "-netdev") == ["tap,id=net0,ifname=vtap0,script=no,downscript=no"]
    assert option(argv, "-device") == ["virtio-net-device,netdev=net0,mac=02:00:00:00:00:01"]


def test_disks_in_order_with_readonly_honoured() -> None:
    disks = (
        DiskSpec(Path("/var/lib/v/root.img"), readonly=False, id="root"),
        DiskSpec(Path("/var/lib/v/seed,1.iso"), readonly=True, id="seed"),
    )
    argv = build_argv(spec(disks=disks), TCG_HOST)
    assert option(argv, "-drive") == [
        "if=none,id=root,file=/var/lib/v/root.img,format=raw,readonly=off",
        # A comma in a path is doubled, or QEMU would split the option there.
        "if=none,id=seed,file=/var/lib/v/seed,,1.iso,format=raw,readonly=on",
    ]
    assert option(argv, "-device") == [
        "virtio-blk-device,drive=root",
        "virtio-blk-device,drive=seed",
    ]


def test_bad_disk_id_is_refused() -> None:
    disks = (DiskSpec(Path("/d.img"), readonly=False, id="1,file=/etc/shadow"),)
    with pytest.raises(RuntimeUnsupported, match="not a valid QEMU id"):
        build_argv(spec(disks=disks), TCG_HOST)


def test_vsock_refused_without_vhost_vsock() -> None:
    with pytest.raises(RuntimeUnsupported, match="/dev/vhost-vsock"):
        build_argv(spec(vsock_cid=42), TCG_HOST)


def test_vsock_with_vhost_vsock() -> None:
    argv = build_argv(spec(vsock_cid=42), KVM_HOST)
    assert "vhost-vsock-device,guest-cid=42" in option(argv, "-device")


def test_vfio_enables_pcie() -> None:
    argv = build_argv(spec(vfio_devices=("/sys/bus/pci/devices/0000:01:00.0",)), TCG_HOST)
    assert option(argv, "-M")[0].endswith(",pcie=on")
    assert "vfio-pci,sysfsdev=/sys/bus/pci/devices/0000:01:00.0" in option(argv, "-device")


def test_custom_binary() -> None:
    assert build_argv(spec(), TCG_HOST, binary="/opt/qemu/bin/qemu-system-x86_64")[0] == (
        "/opt/qemu/bin/qemu-system-x86_64"
    )


CPUINFO_TSC = """processor\t: 0
cpu MHz\t\t: 2596.128
flags\t\t: fpu tsc constant_tsc nonstop_tsc tsc_known_freq
"""


def test_host_tsc_rate_only_when_constant() -> None:
    assert detect_host(CPUINFO_TSC).tsc_khz == 2596128
    assert detect_host(CPUINFO_TSC.replace(" constant_tsc", "")).tsc_khz is None
    assert detect_host(CPUINFO_PLAIN).tsc_khz is None


def test_tcg_guest_gets_the_tsc_hint_unless_given() -> None:
    host = HostCaps(kvm_usable=False, vhost_vsock=False, tsc_khz=2596128)
    assert option(build_argv(spec(), host), "-append") == [
        "console=ttyS0 volant.a=1 tsc_early_khz=2596128"
    ]
    explicit = spec(cmdline="console=ttyS0 tsc_early_khz=1000")
    assert option(build_argv(explicit, host), "-append") == ["console=ttyS0 tsc_early_khz=1000"]
    kvm = HostCaps(kvm_usable=True, vhost_vsock=False, tsc_khz=2596128)
    assert option(build_argv(spec(), kvm), "-append") == ["console=ttyS0 volant.a=1"]
