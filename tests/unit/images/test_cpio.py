import gzip
import io
import stat
from pathlib import Path

from volant.images import cpio
from volant.images.layout import Layout


def _layout(tmp_path: Path) -> Layout:
    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\necho hi\n")
    source.chmod(0o700)
    layout = Layout()
    layout.add_bytes("/etc/motd", b"hello", 0o644)
    layout.add_file("/usr/bin/tool", source)
    layout.add_symlink("/bin/sh", "/bin/busybox")
    layout.add_chardev("/dev/console", 5, 1)
    return layout


def test_round_trip_keeps_types_modes_content_and_order(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    cpio.write_newc(_layout(tmp_path), buffer, mtime=1234)
    members = list(cpio.read_newc(buffer.getvalue()))
    names = [m.name for m in members]
    assert names == ["bin", "bin/sh", "dev", "dev/console", "etc", "etc/motd", "usr",
                     "usr/bin", "usr/bin/tool"]
    by_name = {m.name: m for m in members}
    assert by_name["etc/motd"].data == b"hello"
    assert stat.S_IMODE(by_name["etc/motd"].mode) == 0o644
    assert by_name["usr/bin/tool"].data == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(by_name["usr/bin/tool"].mode) == 0o700
    assert by_name["bin/sh"].is_symlink and by_name["bin/sh"].data == b"/bin/busybox"
    assert stat.S_ISCHR(by_name["dev/console"].mode) and by_name["dev/console"].rdev == (5, 1)
    assert by_name["usr"].is_dir
    assert {m.mtime for m in members} == {1234}
    assert {(m.uid, m.gid) for m in members} == {(0, 0)}


def test_archive_is_4_byte_aligned_and_ends_with_trailer(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    cpio.write_newc(_layout(tmp_path), buffer, mtime=0)
    data = buffer.getvalue()
    assert len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data[-128:]


def test_gzip_output_is_byte_identical_for_identical_input(tmp_path: Path) -> None:
    first, second = tmp_path / "a.cpio.gz", tmp_path / "b.cpio.gz"
    cpio.write_gzip_newc(_layout(tmp_path), first, mtime=7)
    cpio.write_gzip_newc(_layout(tmp_path), second, mtime=7)
    assert first.read_bytes() == second.read_bytes()
    # gzip header mtime field (bytes 4..8) is zero, no file name is stored
    assert first.read_bytes()[4:8] == b"\0\0\0\0"
    assert gzip.decompress(first.read_bytes()).startswith(b"070701")


def test_mtime_changes_the_archive(tmp_path: Path) -> None:
    first, second = tmp_path / "a.cpio.gz", tmp_path / "b.cpio.gz"
    cpio.write_gzip_newc(_layout(tmp_path), first, mtime=0)
    cpio.write_gzip_newc(_layout(tmp_path), second, mtime=1)
    assert first.read_bytes() != second.read_bytes()
