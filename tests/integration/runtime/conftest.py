"""Fixtures for the runtime adapter tests (helpers live in runtime_helpers.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_helpers import BootMedia, Reaper, build_boot_media

from volant.runtime.hollow import HollowLauncher


@pytest.fixture(scope="session")
def boot_media() -> BootMedia:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: apt-get install -y qemu-system-x86")
    return build_boot_media()


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    # Short paths: Unix socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="vrt-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def hollow_cache() -> Path:
    return Path(tempfile.gettempdir()) / "volant-test-hollow-cache"


@pytest.fixture
def hollow(hollow_cache: Path) -> HollowLauncher:
    return HollowLauncher(cache_dir=hollow_cache)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    yield r
    r.kill_all()
