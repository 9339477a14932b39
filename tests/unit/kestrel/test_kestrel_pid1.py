"""PID-1 helpers that can run unprivileged: module list, mounts, timeline, durations."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from kestrel import pid1, syscalls
from kestrel.api import go_duration
from kestrel.config import AgentConfig, load_config
from kestrel.console import Timeline, init_start_from_kmsg, uptime
from kestrel.main import set_clock_from_cmdline


def test_modules_load_in_listed_order_and_tolerate_loaded_and_missing(tmp_path: Path) -> None:
    listing = tmp_path / "modules"
    listing.write_text(
        "# dependency order\n"
        "/lib/modules/v/virtio_ring.ko\n"
        "\n"
        "/lib/modules/v/virtio.ko   # needs virtio_ring\n"
        "/lib/modules/v/virtio_net.ko\n"
        "/lib/modules/v/missing.ko\n"
    )
    calls: list[str] = []

    def fake_loader(path: str) -> bool:
        calls.append(path)
        if path.endswith("missing.ko"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return not path.endswith("virtio.ko")  # virtio is "already loaded" (built in)

    report = pid1.load_modules(listing, fake_loader)
    assert calls == [
        "/lib/modules/v/virtio_ring.ko",
        "/lib/modules/v/virtio.ko",
        "/lib/modules/v/virtio_net.ko",
        "/lib/modules/v/missing.ko",
    ]
    assert report.loaded == ["/lib/modules/v/virtio_ring.ko", "/lib/modules/v/virtio_net.ko"]
    assert report.already == ["/lib/modules/v/virtio.ko"]
    assert report.failed == {"/lib/modules/v/missing.ko": "No such file or directory"}


def test_the_seed_filesystems_are_left_for_after_the_api(tmp_path: Path) -> None:
    release = "/lib/modules/6.1.0-56-cloud-amd64/kernel"
    names = ["drivers/virtio/virtio.ko", "drivers/cdrom/cdrom.ko", "fs/isofs/isofs.ko",
             "drivers/net/virtio_net.ko", "fs/fat/fat.ko", "fs/fat/vfat.ko",
             "fs/nls/nls_utf8.ko", "fs/xfs/xfs.ko", "fs/ext4/ext4.ko"]  # fmt: skip
    listing = tmp_path / "modules"
    listing.write_text("".join(f"{release}/{name}\n" for name in names))
    calls: list[str] = []
    report = pid1.load_modules(listing, lambda p: calls.append(p) or True, pid1.is_seed_module)
    # Root filesystems and drivers now; the seed's ISO9660/FAT chain later, in order.
    assert [p.rsplit("/", 1)[1] for p in calls] == ["virtio.ko", "virtio_net.ko", "xfs.ko",
                                                    "ext4.ko"]  # fmt: skip
    assert [pid1.module_name(p) for p in report.deferred] == [
        "cdrom", "isofs", "fat", "vfat", "nls_utf8"
    ]  # fmt: skip
    later = pid1.load_module_list(report.deferred, lambda p: calls.append(p) or True)
    assert later.loaded == report.deferred and calls[-5:] == report.deferred


def test_stage1_returns_the_deferred_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pid1, "mount_all", lambda specs, log=None: [])
    (tmp_path / "etc/kestrel").mkdir(parents=True)
    (tmp_path / "etc/kestrel/modules").write_text("/m/virtio_blk.ko\n/m/isofs.ko\n")
    (tmp_path / "dev").mkdir()
    config = load_config(
        {"KESTREL_ROOT": str(tmp_path), "KESTREL_CMDLINE": "volant.boot=auto", "KESTREL_PID1": "0"}
    )
    # Nothing is really loaded: the loader is a fake, the deferral rule the real one.
    real_load = pid1.load_modules
    monkeypatch.setattr(
        pid1, "load_modules", lambda path, **kw: real_load(path, lambda p: True, kw["defer"])
    )
    assert pid1.stage1(config) == ["/m/isofs.ko"]


def test_no_module_list_is_fine(tmp_path: Path) -> None:
    report = pid1.load_modules(tmp_path / "absent", lambda _p: True)
    assert (report.loaded, report.already, report.failed) == ([], [], {})


def test_mount_all_ignores_busy_and_reports_other_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def fake_mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
        calls.append((fstype, target))
        if fstype == "proc":
            raise OSError(errno.EBUSY, "busy")
        if fstype == "devpts":
            raise OSError(errno.EPERM, "not permitted")

    monkeypatch.setattr(syscalls, "mount", fake_mount)
    config = load_config(
        {"KESTREL_ROOT": str(tmp_path), "KESTREL_CMDLINE": "", "KESTREL_PID1": "0"}
    )
    specs = [s for s in pid1.basic_mounts(config) if str(s.target).startswith(str(tmp_path))]
    logged: list[str] = []
    mounted = pid1.mount_all(specs, logged.append)
    assert [fstype for fstype, _ in calls] == ["proc", "sysfs", "devtmpfs", "devpts", "tmpfs"]
    assert mounted == [str(tmp_path / "sys"), str(tmp_path / "dev"), str(tmp_path / "dev/shm")]
    assert len(logged) == 1 and "devpts" in logged[0]
    assert (tmp_path / "dev/pts").is_dir()


def test_stage1_without_a_root_disk_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pid1, "mount_all", lambda specs, log=None: [])
    monkeypatch.setattr(pid1, "load_modules", lambda path, **_kw: pid1.ModuleReport())
    switched: list[object] = []
    monkeypatch.setattr(pid1, "switch_root", lambda choice, config: switched.append(choice))
    (tmp_path / "dev").mkdir()
    config = load_config(
        {"KESTREL_ROOT": str(tmp_path), "KESTREL_CMDLINE": "volant.boot=auto", "KESTREL_PID1": "0"}
    )
    pid1.stage1(config)
    assert switched == []


def test_stage1_switches_into_a_root_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kestrel_testutil import make_ext4, make_iso

    monkeypatch.setattr(pid1, "mount_all", lambda specs, log=None: [])
    monkeypatch.setattr(pid1, "load_modules", lambda path, **_kw: pid1.ModuleReport())
    switched: list[object] = []
    monkeypatch.setattr(pid1, "switch_root", lambda choice, config: switched.append(choice))
    (tmp_path / "dev").mkdir()
    make_iso(tmp_path / "dev/vda", "cidata")
    make_ext4(tmp_path / "dev/vdb", "volant-root")
    config = load_config(
        {
            "KESTREL_ROOT": str(tmp_path),
            "KESTREL_CMDLINE": "volant.boot=rootfs",
            "KESTREL_PID1": "0",
        }
    )
    pid1.stage1(config)
    assert len(switched) == 1
    assert getattr(switched[0], "device", None) == str(tmp_path / "dev/vdb")
    # stage 2 (after switch_root) never switches again
    switched.clear()
    pid1.stage1(
        load_config(
            {"KESTREL_ROOT": str(tmp_path), "KESTREL_CMDLINE": "volant.boot=rootfs"},
            argv=["stage2"],
        )
    )
    assert switched == []


def test_timeline_line_and_uptime(tmp_path: Path) -> None:
    (tmp_path / "uptime").write_text("2.314 1.00\n")
    assert uptime(tmp_path) == 2.314
    timeline = Timeline(tmp_path)
    timeline.mark("kestrel")
    timeline.mark("kestrel", 99.0)  # first mark wins
    timeline.mark("api", 2.6)
    timeline.mark("network", 2.45)
    assert timeline.line() == "kestrel: timeline kernel=0.00 kestrel=2.31 network=2.45 api=2.60"
    assert timeline.as_dict()["api"] == 2.6


def test_init_start_from_the_kernel_log(tmp_path: Path) -> None:
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        for record in (
            "6,1,1000,-;Linux version 6.1.0",
            "6,420,6673273,-;Run /init as init process",
            "4,421,6700000,-;later",
        ):
            os.write(writer, record.encode() + b"\n")
        assert init_start_from_kmsg(fifo) == 6.673273
    finally:
        os.close(writer)
    assert init_start_from_kmsg(tmp_path / "missing") is None


def test_clock_is_set_from_the_cmdline_only_when_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "uptime").write_text("5.00 1.00\n")
    calls: list[float] = []
    monkeypatch.setattr(time, "clock_settime", lambda clock, value: calls.append(value))

    def config_for(clock: str) -> AgentConfig:
        return load_config(
            {"KESTREL_PROC": str(tmp_path), "KESTREL_CMDLINE": f"volant.clock={clock}"}
        )

    now = time.time()
    set_clock_from_cmdline(config_for(str(int(now))))
    assert calls == []  # our clock is already right
    set_clock_from_cmdline(config_for(str(int(now) + 86400)))
    assert calls == [int(now) + 86400 + 5.0]
    set_clock_from_cmdline(config_for("tomorrow"))
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (2.5, "2.5s"), (61.0, "1m1s"), (3723.125, "1h2m3.125s"), (5.0, "5s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
