"""Adapter for e2fsprogs: an ext4 image from a directory with ``mke2fs -d`` (no loop mount).

e2fsprogs 1.47.0 stamps the clock into the image (superblock times, inode ctime/crtime,
atimes bumped while reading the staging tree), so after ``mke2fs`` every inode time is
reset with ``debugfs`` and the superblocks' write time is patched (with their crc32c):
the same inputs then give a byte-identical image.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import uuid
from pathlib import Path

from volant.images.apt import ToolError
from volant.images.layout import Layout

LABEL = "volant-root"
_BLOCK = 4096
_SUPERBLOCK_MAGIC = 0xEF53
# Inodes mke2fs creates itself: 1-10 reserved (2 = root, 7 = resize, 8 = journal), 11 = lost+found.
_RESERVED_INODES = range(1, 12)
_TIME_FIELDS = ("atime", "ctime", "mtime", "crtime")


def image_size_bytes(layout: Layout, size_buffer_mb: int) -> int:
    """Content rounded to blocks, plus room for metadata and the user's buffer."""
    content = sum(-(-entry.size() // _BLOCK) * _BLOCK for _path, entry in layout.entries())
    inode_space = len(layout) * 256
    metadata = content // 10 + inode_space + 16 * 1024 * 1024
    total = content + metadata + size_buffer_mb * 1024 * 1024
    mib = 1024 * 1024
    return -(-total // mib) * mib


def make_ext4(layout: Layout, image: Path, *, size_buffer_mb: int, mtime: int,
              identity: str, label: str = LABEL) -> None:
    """Build ``image`` from ``layout``; UUID and hash seed derive from ``identity``."""
    for tool in ("mke2fs", "debugfs"):
        if shutil.which(tool) is None:
            raise ToolError(f"{tool} is not installed (Debian package e2fsprogs)")
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"volant-image:{identity}"))
    with tempfile.TemporaryDirectory(dir=image.parent, prefix=".rootfs-") as tmp:
        tree = Path(tmp) / "tree"
        layout.materialize(tree, mtime)
        partial = Path(tmp) / image.name
        with partial.open("wb") as handle:
            handle.truncate(image_size_bytes(layout, size_buffer_mb))
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(_BLOCK), "-L", label,
              "-U", fs_uuid, "-E", f"hash_seed={fs_uuid},root_owner=0:0",
              "-d", str(tree), str(partial)])
        commands = Path(tmp) / "debugfs.cmds"
        commands.write_text(debugfs_time_commands(
            [path for path, _entry in layout.entries()], mtime))
        _run(["debugfs", "-w", "-f", str(commands), str(partial)])
        set_superblock_write_time(partial, mtime)
        partial.replace(image)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolError(f"{argv[0]} failed: {result.stderr.strip()}")


def debugfs_time_commands(paths: list[str], epoch: int) -> str:
    targets = [f"<{number}>" for number in _RESERVED_INODES]
    targets += [f'"{path}"' for path in paths]
    lines = [f"sif {target} {field} @{epoch}" for target in targets for field in _TIME_FIELDS]
    lines += [f"ssv mkfs_time @{epoch}", f"ssv lastcheck @{epoch}"]
    return "\n".join(lines) + "\n"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """ext4's metadata checksum (Castagnoli, no final inversion, seeded with ~0)."""
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def set_superblock_write_time(image: Path, epoch: int) -> int:
    """Set ``s_wtime`` in the primary and every backup superblock; returns how many."""
    patched = 0
    with image.open("r+b") as handle:
        handle.seek(1024)
        primary = handle.read(1024)
        first_data_block, log_block_size, blocks_per_group = struct.unpack_from(
            "<III", primary, 0x14)
        block_size = 1024 << log_block_size
        handle.seek(0, 2)
        groups = -(-handle.tell() // (blocks_per_group * block_size))
        offsets = [1024] + [(group * blocks_per_group + first_data_block) * block_size
                            for group in range(1, groups)]
        for offset in offsets:
            handle.seek(offset)
            block = bytearray(handle.read(1024))
            if len(block) < 1024 or struct.unpack_from("<H", block, 0x38)[0] != _SUPERBLOCK_MAGIC:
                continue  # sparse_super: no backup in this group
            struct.pack_into("<I", block, 0x30, epoch & 0xFFFFFFFF)
            block[0x274] = (epoch >> 32) & 0xFF
            struct.pack_into("<I", block, 0x3FC, crc32c(bytes(block[:0x3FC])))
            handle.seek(offset)
            handle.write(block)
            patched += 1
    return patched
