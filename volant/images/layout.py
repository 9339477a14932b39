"""An in-memory description of a guest filesystem tree.

Building the tree as a mapping "guest path -> entry" instead of a staging
directory keeps ownership, modes and device nodes under our control (no root
needed for ``/dev/console``) and lets the cpio writer emit entries in a fixed
order, which is what makes archives reproducible.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from volant.errors import ValidationError

EntryKind = Literal["file", "dir", "symlink", "chardev"]


@dataclass(frozen=True)
class Entry:
    """One node of the guest tree; exactly one of source/data/target is meaningful."""

    kind: EntryKind
    mode: int  # permission bits only (no file type)
    source: Path | None = None  # host file whose bytes become the content
    data: bytes | None = None  # inline content (takes precedence over source)
    target: str | None = None  # symlink target
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.source is not None:
            return self.source.read_bytes()
        return b""

    def size(self) -> int:
        if self.kind == "symlink":
            return len((self.target or "").encode())
        if self.kind != "file":
            return 0
        if self.data is not None:
            return len(self.data)
        return self.source.stat().st_size if self.source is not None else 0


def normalize_guest_path(path: str) -> str:
    """Return ``path`` as an absolute POSIX path without ``.``/``..`` or duplicate slashes."""
    if not path.startswith("/"):
        raise ValidationError(f"guest path {path!r} must be absolute")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValidationError(f"guest path {path!r} must not contain '..'")
    return "/" + "/".join(parts)


def sort_key(path: str) -> tuple[str, ...]:
    """Component-wise order: a directory always sorts right before its own contents."""
    return tuple(PurePosixPath(path).parts[1:])


class Layout:
    """Guest path -> :class:`Entry`, with parent directories created implicitly."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {"/": Entry("dir", 0o755)}

    def __contains__(self, path: str) -> bool:
        return normalize_guest_path(path) in self._entries

    def __getitem__(self, path: str) -> Entry:
        return self._entries[normalize_guest_path(path)]

    def __len__(self) -> int:
        return len(self._entries)

    def _put(self, path: str, entry: Entry, *, replace: bool = True) -> str:
        path = normalize_guest_path(path)
        if path == "/":
            return path
        self.add_dir(str(PurePosixPath(path).parent))
        existing = self._entries.get(path)
        if existing is not None and not replace:
            return path
        if existing is not None and existing.kind == "dir" and entry.kind != "dir":
            raise ValidationError(f"cannot place a {entry.kind} at {path}: it is a directory")
        self._entries[path] = entry
        return path

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        path = normalize_guest_path(path)
        if path == "/":
            return
        existing = self._entries.get(path)
        if existing is not None:
            if existing.kind != "dir":
                raise ValidationError(f"cannot create directory {path}: a {existing.kind} is there")
            return
        self.add_dir(str(PurePosixPath(path).parent))
        self._entries[path] = Entry("dir", mode)

    def set_dir_mode(self, path: str, mode: int) -> None:
        self.add_dir(path)
        self._entries[normalize_guest_path(path)] = Entry("dir", mode)

    def add_file(self, path: str, source: Path, mode: int | None = None) -> None:
        if mode is None:
            mode = stat.S_IMODE(source.stat().st_mode)
        self._put(path, Entry("file", mode, source=source))

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._put(path, Entry("file", mode, data=data))

    def add_symlink(self, path: str, target: str, *, replace: bool = True) -> None:
        self._put(path, Entry("symlink", 0o777, target=target), replace=replace)

    def add_chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._put(path, Entry("chardev", mode, rdev=(major, minor)))

    def add_tree(self, host_dir: Path, guest_dir: str) -> None:
        """Copy a host directory's files, dirs and symlinks (modes kept) under ``guest_dir``."""
        self.add_dir(guest_dir)
        base = normalize_guest_path(guest_dir).rstrip("/")
        for root, dirs, files in os.walk(host_dir):
            dirs.sort()
            rel_root = Path(root).relative_to(host_dir)
            for name in [*dirs, *sorted(files)]:
                host = Path(root) / name
                guest = f"{base}/{(rel_root / name).as_posix()}"
                st = host.lstat()
                if stat.S_ISLNK(st.st_mode):
                    self.add_symlink(guest, os.readlink(host))
                elif stat.S_ISDIR(st.st_mode):
                    self.set_dir_mode(guest, stat.S_IMODE(st.st_mode))
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(guest, host, stat.S_IMODE(st.st_mode))
            # os.walk does not descend into symlinked dirs; they were recorded as symlinks.

    def entries(self) -> Iterator[tuple[str, Entry]]:
        """All entries in archive order (sorted by path components; parents first)."""
        for path in sorted(self._entries, key=sort_key):
            yield path, self._entries[path]

    def total_size(self) -> int:
        return sum(entry.size() for entry in self._entries.values())

    def materialize(self, dest: Path, mtime: int) -> None:
        """Write the tree to ``dest`` (for ``mke2fs -d``), normalising mtimes.

        Device nodes need root; without it they are skipped (kestrel mounts devtmpfs).
        """
        dest.mkdir(parents=True, exist_ok=True)
        for path, entry in self.entries():
            host = dest / path.lstrip("/") if path != "/" else dest
            if entry.kind == "dir":
                host.mkdir(exist_ok=True)
                os.chmod(host, entry.mode)
            elif entry.kind == "file":
                host.write_bytes(entry.content())
                os.chmod(host, entry.mode)
            elif entry.kind == "symlink":
                os.symlink(entry.target or "", host)
            elif entry.kind == "chardev":
                if os.geteuid() != 0:
                    continue
                os.mknod(host, stat.S_IFCHR | entry.mode, os.makedev(*entry.rdev))
        # Second pass bottom-up so writing children does not bump a parent's mtime again.
        paths = sorted((path for path, _entry in self.entries()), key=sort_key, reverse=True)
        for path in paths:
            host = dest / path.lstrip("/") if path != "/" else dest
            if os.path.lexists(host):
                os.utime(host, (mtime, mtime), follow_symlinks=False)
