"""ext4 images via mke2fs -d: reproducible despite e2fsprogs stamping the clock."""

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from volant.images import ext4
from volant.images.layout import Layout


def _layout(tmp_path: Path) -> Layout:
    source = tmp_path / "app.py"
    source.write_text("print('app')\n")
    layout = Layout()
    layout.add_file("/opt/app/app.py", source, 0o644)
    layout.add_bytes("/etc/hostname", b"vm\n")
    layout.add_symlink("/bin/sh", "/bin/busybox")
    layout.set_dir_mode("/tmp", 0o1777)
    return layout


def _build(tmp_path: Path, name: str, epoch: int) -> Path:
    image = tmp_path / name
    ext4.make_ext4(_layout(tmp_path), image, size_buffer_mb=1, mtime=epoch, identity="demo:1")
    return image


def test_same_inputs_give_identical_images_and_a_clean_fs(tmp_path: Path) -> None:
    first = _build(tmp_path, "a.img", 1_000_000)
    time.sleep(1.1)  # the clock moves on: nothing of it may leak into the image
    second = _build(tmp_path, "b.img", 1_000_000)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(
        second.read_bytes()).digest()
    check = subprocess.run(["e2fsck", "-fn", str(first)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    label = subprocess.run(["e2label", str(first)], capture_output=True, text=True, check=True)
    assert label.stdout.strip() == "volant-root"
    stat = subprocess.run(["debugfs", "-R", "stat /opt/app/app.py", str(first)],
                          capture_output=True, text=True, check=True).stdout
    assert "ctime: 0x000f4240" in stat and "crtime: 0x000f4240" in stat  # 1_000_000
    content = subprocess.run(["debugfs", "-R", "cat /opt/app/app.py", str(first)],
                             capture_output=True, text=True, check=True).stdout
    assert content == "print('app')\n"


def test_epoch_changes_the_image(tmp_path: Path) -> None:
    first = _build(tmp_path, "a.img", 0)
    second = _build(tmp_path, "b.img", 86400)
    assert first.read_bytes() != second.read_bytes()


@pytest.mark.parametrize(("data", "expected"), [
    (b"123456789", 0xE3069283),  # the standard CRC-32C check value
    (b"", 0x00000000),
])
def test_crc32c_check_value(data: bytes, expected: int) -> None:
    # ext4 stores the raw register (no final xor); the standard value is its complement
    assert ext4.crc32c(data) ^ 0xFFFFFFFF == expected
