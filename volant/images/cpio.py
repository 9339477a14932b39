"""cpio "newc" (SVR4, no CRC) writer and reader, the format the kernel unpacks as initramfs.

Written in Python rather than by shelling out to cpio so that entry order,
inode numbers, owners and mtimes are fixed: two builds of the same inputs give
byte-identical archives.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from volant.images.layout import Entry, Layout

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
              "chardev": stat.S_IFCHR}


def _pad(length: int) -> bytes:
    return b"\0" * ((4 - length % 4) % 4)


def _header(*, ino: int, mode: int, nlink: int, mtime: int, size: int,
            rdev: tuple[int, int], name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    header = MAGIC + b"".join(b"%08X" % value for value in fields) + name + b"\0"
    return header + _pad(len(header))


def write_entry(out: BinaryIO, name: str, entry: Entry, *, ino: int, mtime: int) -> None:
    if entry.kind == "symlink":
        data = (entry.target or "").encode()
    elif entry.kind == "file":
        data = entry.content()
    else:
        data = b""
    mode = _TYPE_BITS[entry.kind] | entry.mode
    nlink = 2 if entry.kind == "dir" else 1
    out.write(_header(ino=ino, mode=mode, nlink=nlink, mtime=mtime, size=len(data),
                      rdev=entry.rdev, name=name.encode()))
    out.write(data)
    out.write(_pad(len(data)))


def write_newc(layout: Layout, out: BinaryIO, mtime: int) -> None:
    """Write every entry of ``layout`` (root excluded, it exists already) plus the trailer."""
    ino = 0
    for path, entry in layout.entries():
        if path == "/":
            continue
        ino += 1
        write_entry(out, path.lstrip("/"), entry, ino=ino, mtime=mtime)
    out.write(_header(ino=0, mode=0, nlink=1, mtime=0, size=0, rdev=(0, 0),
                      name=TRAILER.encode()))


def write_gzip_newc(layout: Layout, path: Path, mtime: int, level: int = 9) -> None:
    """Write a gzip-compressed archive with a fixed gzip header (no name, mtime 0)."""
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                compresslevel=level, mtime=0) as gz:
        write_newc(layout, gz, mtime)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Member:
    name: str
    mode: int
    uid: int
    gid: int
    mtime: int
    data: bytes
    rdev: tuple[int, int]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


def read_newc(data: bytes) -> Iterator[Member]:
    """Parse a newc archive (uncompressed bytes) up to its trailer."""
    offset = 0
    while True:
        if data[offset:offset + 6] != MAGIC:
            raise ValueError(f"bad cpio magic at offset {offset}")
        fields = [int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i in range(13)]
        _ino, mode, uid, gid, _nlink, mtime, size, _maj, _min, rmaj, rmin, namesize, _chk = fields
        name_start = offset + 110
        name = data[name_start:name_start + namesize - 1].decode()
        offset = name_start + namesize
        offset += (4 - offset % 4) % 4
        body = data[offset:offset + size]
        offset += size
        offset += (4 - offset % 4) % 4
        if name == TRAILER:
            return
        yield Member(name, mode, uid, gid, mtime, body, (rmaj, rmin))


def read_gzip_newc(path: Path) -> list[Member]:
    return list(read_newc(gzip.decompress(path.read_bytes())))
