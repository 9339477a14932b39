"""Shared fixtures of the device tests: the standard fake sysfs tree and a manager on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakesysfs import FakeSysfsTree, standard_tree
from volant.devices import VfioManager


@pytest.fixture
def tree(tmp_path: Path) -> FakeSysfsTree:
    return standard_tree(tmp_path / "sys")


@pytest.fixture
def manager(tree: FakeSysfsTree) -> VfioManager:
    return VfioManager(tree.sysfs())
