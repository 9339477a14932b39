"""Identity plumbing: markers, /proc parsing, exit statuses, the /proc scan (on a fake tree)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from volant.runtime.base import (
    ExitInfo,
    LaunchSpec,
    find_marked_processes,
    make_marker,
    marker_from_environ,
    parse_marker,
    parse_stat,
    read_marker,
    read_start_time,
)

# A comm with spaces and parentheses: fields must be counted from the last ")".
STAT = "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 {start} 1 2 3"


def test_parse_stat_counts_from_the_last_paren() -> None:
    assert parse_stat(STAT.format(start=987654)) == ("S", 987654)


def test_read_start_time_of_this_process_matches_proc() -> None:
    raw = Path(f"/proc/{os.getpid()}/stat").read_text()
    expected = int(raw[raw.rindex(")") + 2 :].split()[19])
    assert read_start_time(os.getpid()) == expected
    assert read_start_time(2**22 + 12345) is None  # beyond pid_max: never exists


def test_marker_roundtrip_and_rejects() -> None:
    assert make_marker("abc123", "web-1") == "abc123:web-1"
    assert parse_marker("abc123:web-1") == ("abc123", "web-1")
    assert parse_marker("no-colon") is None
    assert parse_marker(":vm") is None
    assert parse_marker("inst:") is None
    with pytest.raises(ValueError):
        make_marker("a:b", "vm")


def test_marker_from_environ_needs_an_exact_key() -> None:
    env = b"PATH=/bin\0XVOLANT_VMM=evil:vm\0VOLANT_VMM=inst:vm1\0HOME=/\0"
    assert marker_from_environ(env) == "inst:vm1"
    assert marker_from_environ(b"PATH=/bin\0XVOLANT_VMM=evil:vm\0") is None


def test_spec_marker_and_paths(tmp_path: Path) -> None:
    spec = LaunchSpec(
        name="vm1",
        instance_id="i1",
        cpu_cores=1,
        memory_mb=128,
        kernel=tmp_path / "k",
        initramfs=None,
        cmdline="",
        run_dir=tmp_path / "vm1",
        console_log=tmp_path / "vm1" / "console.log",
    )
    assert spec.marker == "i1:vm1"
    assert spec.vmm_log == tmp_path / "vm1" / "vmm.log"


@pytest.mark.parametrize(
    ("code", "returncode", "sig", "clean"),
    [(0, 0, None, True), (1, 1, None, False), (-9, None, signal.SIGKILL, False)],
)
def test_exit_info_from_popen_returncode(
    code: int, returncode: int | None, sig: int | None, clean: bool
) -> None:
    info = ExitInfo.from_returncode(code)
    assert (info.returncode, info.signal, info.clean) == (returncode, sig, clean)


def test_unknown_exit_is_not_clean() -> None:
    assert not ExitInfo(returncode=None, signal=None).clean


def _fake_proc(root: Path, pid: int, environ: bytes, state: str = "S", start: int = 100) -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "environ").write_bytes(environ)
    (d / "stat").write_text(
        STAT.replace("4242 ", f"{pid} ", 1).replace(" S ", f" {state} ", 1).format(start=start)
    )


def test_find_marked_processes_on_a_fake_proc(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 10, b"A=1\0VOLANT_VMM=inst:vm-a\0", start=111)
    _fake_proc(tmp_path, 11, b"VOLANT_VMM=inst:vm-b\0", start=222)
    _fake_proc(tmp_path, 12, b"VOLANT_VMM=other:vm-a\0")  # another volantd
    _fake_proc(tmp_path, 13, b"VOLANT_VMM=instance:vm-c\0")  # id with our id as prefix
    _fake_proc(tmp_path, 14, b"VOLANT_VMM=inst:vm-z\0", state="Z")  # zombie
    _fake_proc(tmp_path, 15, b"PATH=/bin\0")
    (tmp_path / "self").mkdir()  # non-pid entries are skipped
    found = find_marked_processes("inst", proc=tmp_path)
    assert [(p.pid, p.vm_name, p.start_time) for p in found] == [
        (10, "vm-a", 111),
        (11, "vm-b", 222),
    ]
    assert read_marker(12, proc=tmp_path) == "other:vm-a"
    assert read_marker(99, proc=tmp_path) is None


def test_instance_id_is_stable_per_state_dir(tmp_path: Path) -> None:
    from volant.runtime.base import instance_id_for

    a, b = tmp_path / "a", tmp_path / "b"
    assert instance_id_for(a) == instance_id_for(tmp_path / "x" / ".." / "a")
    assert instance_id_for(a) != instance_id_for(b)
    assert ":" not in instance_id_for(a)
    assert len(instance_id_for(a)) == 16
