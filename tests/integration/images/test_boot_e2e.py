"""Boot the hello initramfs in a real QEMU microVM (TCG) and watch the serial console."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from volant.images import cli, paths

REPO = Path(__file__).resolve().parents[3]
HELLO = REPO / "conf" / "plugins" / "hello"
QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 300.0  # TCG on a shared 2-core machine: early boot alone can take minutes

# Runs before kestrel (rdinit=), proves python and kestrel import, then hands over to /init.
PROBE_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "PROBE: init ok"
/usr/bin/python3 -X frozen_modules=on -I -c "import sys, json, asyncio, kestrel.main; \\
print('PROBE: python', sys.version.split()[0], kestrel.main.__file__)"
exec /init
"""

pytestmark = pytest.mark.e2e


def _clock_params() -> str:
    """Under TCG the guest TSC runs at the host's TSC rate. Early PIT calibration can fail
    on a busy host ("tsc: Unable to calibrate against PIT"), and the kernel then crawls on
    jiffies for minutes. Telling it the frequency avoids that."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            khz = int(float(line.split(":")[1]) * 1000)
            return f" tsc_early_khz={khz} tsc=reliable"
    return ""


def _build_probe_image(directory: Path) -> tuple[Path, Path]:
    shutil.copytree(HELLO, directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "probe-init").write_text(PROBE_INIT)
    (directory / "probe-init").chmod(0o755)
    fledge = directory / "fledge.toml"
    fledge.write_text(fledge.read_text().replace(
        "[mappings]\n", '[mappings]\n"probe-init" = "/probe-init"\n', 1))
    runner = CliRunner()
    cache = str(paths.cache_root())
    built = runner.invoke(cli.app, ["build", str(fledge), "--output", str(directory / "out"),
                                    "--cache-dir", cache])
    assert built.exit_code == 0, built.output
    manifest = json.loads(Path(built.output.strip().splitlines()[-1]).read_text())
    kernel = runner.invoke(cli.app, ["kernel", "--json", "--cache-dir", cache])
    assert kernel.exit_code == 0, kernel.output
    return Path(json.loads(kernel.output)["vmlinux"]), Path(manifest["initramfs"]["url"])


def test_hello_initramfs_boots_python_and_kestrel(tmp_path: Path) -> None:
    assert shutil.which(QEMU), "qemu-system-x86 is missing (make setup installs it)"
    vmlinux, initramfs = _build_probe_image(tmp_path / "hello")
    console = tmp_path / "console.log"
    argv = [QEMU, "-M", "microvm", "-accel", "tcg", "-m", "256", "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-serial", f"file:{console}", "-kernel", str(vmlinux), "-initrd", str(initramfs),
            "-append", "console=ttyS0 quiet panic=-1 reboot=t rdinit=/probe-init" + _clock_params()]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = ""
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            text = console.read_text(errors="replace") if console.exists() else ""
            if "kestrel:" in text:
                break
            time.sleep(1.0)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = console.read_text(errors="replace") if console.exists() else ""
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    assert "PROBE: init ok" in text, f"qemu exit {process.returncode}: {stderr}\n{text[-3000:]}"
    assert "PROBE: python 3.11" in text, text[-3000:]
    assert "/usr/lib/python3/dist-packages/kestrel/main.py" in text, text[-3000:]
    assert "Kernel panic" not in text, text[-3000:]
    assert "kestrel:" in text, text[-3000:]
