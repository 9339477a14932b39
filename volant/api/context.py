"""What request handlers may reach: actor refs and read-only facts, nothing mutable."""

from __future__ import annotations

import time
from typing import Any

import attrs

from volant.config import Config


@attrs.define
class ApiContext:
    """Handed to the app factory; handlers translate HTTP into calls on these refs."""

    config: Config
    version: str
    started_monotonic: float = attrs.field(factory=time.monotonic)
    services: dict[str, Any] = attrs.field(factory=dict)

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic
