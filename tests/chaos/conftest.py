"""Register the ``chaos`` marker here until pyproject.toml lists it (``--strict-markers``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: bounded volant-chaos runs (root, ~1-2 min each)")
