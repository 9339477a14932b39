import struct
import subprocess
from pathlib import Path

import pytest

from volant.errors import ValidationError
from volant.images import kernel


def _fake_bzimage(payload_elf: bytes, *, setup_sects: int = 3) -> bytes:
    """A bzImage-shaped blob: boot header fields + an LZ4 legacy payload + 4-byte size."""
    compressed = subprocess.run(["lz4", "-l", "-c"], input=payload_elf, capture_output=True,
                                check=True).stdout
    payload = compressed + struct.pack("<I", len(payload_elf))
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    payload_offset = 0x100
    struct.pack_into("<II", setup, 0x248, payload_offset, len(payload))
    return bytes(setup) + b"\0" * payload_offset + payload + b"trailing-setup-data"


def test_extracts_the_elf_payload() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 300
    assert kernel.extract_vmlinux(_fake_bzimage(elf)) == elf


def test_rejects_non_bzimage() -> None:
    with pytest.raises(ValidationError, match="HdrS"):
        kernel.extract_vmlinux(b"\0" * 4096)


def test_rejects_non_lz4_payload() -> None:
    image = bytearray(_fake_bzimage(b"\x7fELF" + b"x" * 1000))
    start = (3 + 1) * 512 + 0x100
    image[start:start + 4] = b"\x1f\x8b\x08\x00"  # gzip magic
    with pytest.raises(ValidationError, match="not LZ4"):
        kernel.extract_vmlinux(bytes(image))


def test_release_of_package_names() -> None:
    assert kernel.release_of("linux-image-6.1.0-56-cloud-amd64") == "6.1.0-56-cloud-amd64"
    assert kernel.release_of("linux-image-6.1.0-56-cloud-amd64-unsigned") == "6.1.0-56-cloud-amd64"


def test_cached_requires_the_completion_marker(tmp_path: Path) -> None:
    directory = tmp_path / "kernel" / "6.1.0-1-cloud-amd64"
    directory.mkdir(parents=True)
    assert kernel.cached(tmp_path, "6.1.0-1-cloud-amd64") is None
    (directory / kernel.MARKER).write_text("{}")
    found = kernel.cached(tmp_path, "6.1.0-1-cloud-amd64")
    assert found is not None
    assert found.to_json() == {
        "version": "6.1.0-1-cloud-amd64",
        "bzimage": str(directory / "bzImage"),
        "vmlinux": str(directory / "vmlinux"),
        "modules": str(directory / "modules" / "6.1.0-1-cloud-amd64"),
    }
