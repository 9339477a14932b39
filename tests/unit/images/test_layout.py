import os
from pathlib import Path

import pytest

from volant.errors import ValidationError
from volant.images.layout import Layout, normalize_guest_path


def test_normalize_rejects_relative_and_dotdot() -> None:
    assert normalize_guest_path("//opt/./hello//x.py") == "/opt/hello/x.py"
    with pytest.raises(ValidationError):
        normalize_guest_path("opt/hello")
    with pytest.raises(ValidationError):
        normalize_guest_path("/opt/../etc/passwd")


def test_parents_are_created_and_sorted_before_children() -> None:
    layout = Layout()
    layout.add_bytes("/a-b/file", b"1")
    layout.add_bytes("/a/b/c", b"2")
    order = [path for path, _ in layout.entries()]
    assert order == ["/", "/a", "/a/b", "/a/b/c", "/a-b", "/a-b/file"]
    assert layout["/a/b"].kind == "dir"


def test_file_over_directory_is_refused() -> None:
    layout = Layout()
    layout.add_bytes("/opt/x/y", b"")
    with pytest.raises(ValidationError):
        layout.add_bytes("/opt/x", b"")


def test_symlink_without_replace_keeps_existing_entry() -> None:
    layout = Layout()
    layout.add_bytes("/bin/ls", b"real")
    layout.add_symlink("/bin/ls", "/bin/busybox", replace=False)
    assert layout["/bin/ls"].kind == "file"


def test_add_tree_keeps_modes_and_symlinks(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_text("x")
    tool.chmod(0o751)
    os.symlink("tool", tmp_path / "bin" / "alias")
    layout = Layout()
    layout.add_tree(tmp_path, "/usr")
    assert layout["/usr/bin/tool"].mode == 0o751
    assert layout["/usr/bin/alias"].target == "tool"


def test_materialize_writes_tree_with_fixed_mtime(tmp_path: Path) -> None:
    layout = Layout()
    layout.add_bytes("/etc/hostname", b"vm\n", 0o600)
    layout.add_symlink("/etc/link", "hostname")
    dest = tmp_path / "out"
    layout.materialize(dest, mtime=42)
    assert (dest / "etc" / "hostname").read_bytes() == b"vm\n"
    assert (dest / "etc" / "hostname").stat().st_mode & 0o777 == 0o600
    assert os.readlink(dest / "etc" / "link") == "hostname"
    assert (dest / "etc").stat().st_mtime == 42
    assert (dest / "etc" / "hostname").stat().st_mtime == 42
