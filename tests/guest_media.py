"""A minimal bootable guest for tests: Debian's cloud kernel + a busybox initramfs.

The init prints a boot marker once the guest is up and powers off on the ACPI power
button. Media are cached under /var/cache/volant-test/runtime-boot/<key>, the key being
the Debian package versions and the init script, so only the first run downloads.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import attrs

CACHE_ROOT = Path("/var/cache/volant-test/runtime-boot")
BOOT_MARKER = "VOLANT-RUNTIME-TEST-BOOTED"
# The init loads the ACPI power button driver and runs busybox acpid, so QMP
# system_powerdown makes the guest power off (the graceful rung of the stop ladder).
INIT_TEMPLATE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\\npoweroff -f\\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /dev/null 2>/dev/null
# acpid opens the input device after it daemonizes: announce the boot only once it
# listens, so a power-down request right after the marker is not lost.
i=0
while [ $i -lt 100 ]; do
  ls -l /proc/$(pidof acpid)/fd 2>/dev/null | grep -q /dev/input/event && break
  i=$((i+1)); sleep 0.1
done
echo "@MARKER@ epoch=$(date +%s)"
i=0
while true; do i=$((i+1)); echo "volant-test tick $i"; sleep 1; done
"""


def _run(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


def _candidate(package: str) -> str:
    out = _run("apt-cache", "policy", package)
    match = re.search(r"Candidate:\s*(\S+)", out)
    if not match or match.group(1) == "(none)":
        raise RuntimeError(f"apt has no candidate for {package}")
    return match.group(1)


def _image_package() -> str:
    out = _run("apt-cache", "depends", "linux-image-cloud-amd64")
    match = re.search(r"Depends:\s*(linux-image-\S+-cloud-amd64)", out)
    if not match:
        raise RuntimeError("cannot resolve linux-image-cloud-amd64's image package")
    return match.group(1)


def _download(package: str, dest: Path) -> Path:
    _run("apt-get", "download", package, cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} produced no .deb")
    root = dest / package
    _run("dpkg", "-x", str(debs[0]), str(root))
    return root


def extract_pvh_vmlinux(bzimage: Path, out: Path) -> None:
    """Unpack the LZ4-compressed ELF payload of a bzImage (see qemu-boot-notes.md)."""
    data = bzimage.read_bytes()
    setup_sects = data[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = data[start : start + payload_length]
    if payload[:4] != b"\x02\x21\x4c\x18":
        raise RuntimeError("bzImage payload is not an LZ4 legacy frame")
    packed = out.with_suffix(".lz4")
    packed.write_bytes(payload)
    subprocess.run(["lz4", "-d", "-f", str(packed), str(out)], check=False, capture_output=True)
    packed.unlink()
    if not out.exists() or out.read_bytes()[:4] != b"\x7fELF":
        raise RuntimeError("lz4 did not produce an ELF vmlinux")


def _build_initramfs(busybox: Path, modules: list[Path], out: Path, init_script: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("bin", "proc", "sys", "dev", "etc", "lib/modules", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")
        for module in modules:
            shutil.copy2(module, root / "lib" / "modules" / module.name)
        init = root / "init"
        init.write_text(init_script)
        init.chmod(0o755)
        files = subprocess.run(
            ["find", ".", "-print0"], cwd=root, check=True, capture_output=True
        ).stdout
        archive = subprocess.run(
            ["cpio", "--null", "-o", "-H", "newc", "--quiet"],
            cwd=root,
            input=files,
            check=True,
            capture_output=True,
        ).stdout
        packed = subprocess.run(["gzip", "-9n"], input=archive, check=True, capture_output=True)
        out.write_bytes(packed.stdout)


@attrs.frozen
class BootMedia:
    kernel: Path
    initramfs: Path
    marker: str


def build_boot_media(marker: str = BOOT_MARKER) -> BootMedia:
    init_script = INIT_TEMPLATE.replace("@MARKER@", marker)
    image = _image_package()
    script = hashlib.sha256(init_script.encode()).hexdigest()[:8]
    key = f"{image}_{_candidate(image)}__busybox_{_candidate('busybox-static')}__init_{script}"
    key = key.replace(":", "-")
    target = CACHE_ROOT / key
    kernel, initramfs = target / "vmlinux", target / "initrd.gz"
    if not (kernel.exists() and initramfs.exists()):
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE_ROOT) as tmp:
            work = Path(tmp)
            kroot = _download(image, work)
            broot = _download("busybox-static", work)
            staging = work / "out"
            staging.mkdir()
            bzimage = next((kroot / "boot").glob("vmlinuz-*"))
            extract_pvh_vmlinux(bzimage, staging / "vmlinux")
            # The ACPI power button and the evdev handler that gives acpid /dev/input/event*.
            modules = [
                m
                for pattern in ("drivers/acpi/button.ko*", "drivers/input/evdev.ko*")
                for m in sorted(kroot.glob(f"lib/modules/*/kernel/{pattern}"))
            ]
            unpacked = []
            for module in modules:
                if module.suffix == ".xz":
                    subprocess.run(["xz", "-dk", str(module)], check=True)
                    module = module.with_suffix("")
                unpacked.append(module)
            _build_initramfs(broot / "bin" / "busybox", unpacked, staging / "initrd.gz",
                             init_script)
            if not target.exists():
                os.replace(staging, target)
    return BootMedia(kernel=kernel, initramfs=initramfs, marker=marker)


