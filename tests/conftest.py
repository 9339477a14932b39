"""Fixtures shared by every test folder."""

from tests.netns import netns  # noqa: F401 - re-exported fixture
