"""VOLANT_HYPERVISOR resolution and hollow behaviour knobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from volant.errors import ConfigError
from volant.runtime import (
    CloudHypervisorLauncher,
    HollowLauncher,
    QemuLauncher,
    select_launcher,
)
from volant.runtime.hollow import HollowBehaviour, behaviour_for


def which_from(found: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda name: found.get(name)


BOTH = {
    "cloud-hypervisor": "/usr/bin/cloud-hypervisor",
    "qemu-system-x86_64": "/usr/bin/qemu-system-x86_64",
}


def test_auto_prefers_cloud_hypervisor() -> None:
    launcher = select_launcher("auto", which=which_from(BOTH))
    assert isinstance(launcher, CloudHypervisorLauncher)
    assert launcher.binary == "/usr/bin/cloud-hypervisor"


def test_auto_falls_back_to_qemu() -> None:
    launcher = select_launcher(
        "auto", which=which_from({"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64"})
    )
    assert isinstance(launcher, QemuLauncher)
    assert launcher.kind == "qemu"


def test_auto_with_nothing_installed() -> None:
    with pytest.raises(ConfigError, match="neither"):
        select_launcher("auto", which=which_from({}))


def test_named_choices() -> None:
    assert isinstance(select_launcher("qemu", which=which_from(BOTH)), QemuLauncher)
    assert isinstance(
        select_launcher("cloud-hypervisor", which=which_from(BOTH)), CloudHypervisorLauncher
    )
    assert isinstance(select_launcher("hollow", which=which_from({})), HollowLauncher)
    with pytest.raises(ConfigError, match="cloud-hypervisor is not on PATH"):
        select_launcher("cloud-hypervisor", which=which_from({}))
    with pytest.raises(ConfigError, match="expected auto"):
        select_launcher("firecracker", which=which_from(BOTH))


def make_exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_binary_paths_pick_the_adapter_by_basename(tmp_path: Path) -> None:
    ch = select_launcher(str(make_exe(tmp_path / "cloud-hypervisor-static")))
    assert isinstance(ch, CloudHypervisorLauncher)
    assert ch.binary == str(tmp_path / "cloud-hypervisor-static")
    assert isinstance(select_launcher(str(make_exe(tmp_path / "qemu-system-x86_64"))), QemuLauncher)
    hollow = select_launcher(str(make_exe(tmp_path / "hollow-vmm-dev")))
    assert isinstance(hollow, HollowLauncher)
    assert hollow.command() == [str(tmp_path / "hollow-vmm-dev")]
    with pytest.raises(ConfigError, match="cannot tell which VMM"):
        select_launcher(str(make_exe(tmp_path / "firecracker")))
    with pytest.raises(ConfigError, match="not an executable"):
        select_launcher(str(tmp_path / "missing" / "qemu-system-x86_64"))


def test_hollow_behaviour_tokens() -> None:
    base = HollowBehaviour()
    got = behaviour_for(
        "console=ttyS0 hollow.crash_after=1.5 hollow.ignore_sigterm=1 hollow.boot_marker=READY",
        base,
    )
    assert got == HollowBehaviour(crash_after=1.5, ignore_sigterm=True, boot_marker="READY")
    assert behaviour_for("hollow.crash_after=soon", base) == base  # bad value ignored
    defaults = HollowBehaviour(ignore_sigterm=True)
    assert behaviour_for("hollow.ignore_sigterm=0", defaults).ignore_sigterm is False
    assert behaviour_for("quiet", defaults) == defaults
    assert behaviour_for("hollow.boot_delay=2.5", base).boot_delay == 2.5
    assert behaviour_for("hollow.boot_delay=-1", base).boot_delay == 0.0
    assert behaviour_for("hollow.boot_delay=later", base) == base


def test_hollow_argv_carries_the_behaviour(tmp_path: Path) -> None:
    from volant.runtime.base import LaunchSpec

    launcher = HollowLauncher(
        binary=Path("/opt/hollow-vmm"), ignore_sigterm=False, crash_after=None
    )
    spec = LaunchSpec(
        name="h1", instance_id="i", cpu_cores=1, memory_mb=64, kernel=Path("/k"), initramfs=None,
        cmdline="hollow.crash_after=2 hollow.ignore_powerdown=yes", run_dir=tmp_path,
        console_log=tmp_path / "c.log",
    )  # fmt: skip
    argv = launcher.build_argv(spec)
    assert argv[0] == "/opt/hollow-vmm"
    assert argv[argv.index("--crash-after") + 1] == "2.0"
    assert "--ignore-powerdown" in argv
    assert "--ignore-sigterm" not in argv
    assert argv[argv.index("--control") + 1] == str(tmp_path / "control.sock")


def test_compile_hollow_caches_by_source_hash_and_needs_gcc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from volant.runtime import hollow as hollow_mod

    source = tmp_path / "h.c"
    source.write_text("int main(void) { return 0; }\n")
    built = hollow_mod.compile_hollow(tmp_path / "cache", source)
    assert built is not None and os.access(built, os.X_OK)
    assert hollow_mod.compile_hollow(tmp_path / "cache", source) == built  # reused
    source.write_text("int main(void) { return 1; }\n")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    # A changed source needs a new build, and without a compiler there is none.
    assert hollow_mod.compile_hollow(tmp_path / "cache", source) is None
    assert hollow_mod.compile_hollow(tmp_path / "cache", tmp_path / "missing.c") is None
    launcher = HollowLauncher(cache_dir=tmp_path / "cache2")
    assert launcher.command()[1:] == ["-m", "volant.runtime.hollow_fallback"]
