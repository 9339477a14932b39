"""Plain JSON log rendering for the actor tests: crashes are logged with tracebacks on
purpose, and rich's pretty tracebacks (structlog's default) cost ~0.2 s each."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def plain_structlog() -> Iterator[io.StringIO]:
    saved = structlog.get_config()
    sink = io.StringIO()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sink),
    )
    yield sink
    structlog.configure(**saved)
