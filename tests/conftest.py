"""Fixtures shared by every test folder."""

from collections.abc import Iterator

import pytest

from tests.daemon_process import STARTED
from tests.netns import netns  # noqa: F401 - re-exported fixture


@pytest.fixture(autouse=True, scope="session")
def _no_vmm_outlives_the_tests() -> Iterator[None]:
    """VMMs outlive volantd by design; make sure none outlives the test session."""
    yield
    for daemon in STARTED:
        daemon.stop()
        daemon.kill_vmms()
