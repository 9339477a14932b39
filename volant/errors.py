"""The error model shared by every layer.

Each error carries the HTTP status the API answers with, so handlers never
guess: a validation problem is 4xx, back-pressure is 429, a full disk is 507.
Anything that is not a ``VolantError`` is a bug and becomes a logged 500.
"""

from __future__ import annotations

from typing import Any


class VolantError(Exception):
    """Base class: a message for humans plus optional structured details."""

    status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ValidationError(VolantError):
    """Input is malformed or violates a rule (400)."""

    status = 400


class UnprocessableError(ValidationError):
    """Input is well-formed but semantically unacceptable (422)."""

    status = 422


class NotFoundError(VolantError):
    status = 404


class ConflictError(VolantError):
    status = 409


class BackPressureError(VolantError):
    """A bounded queue is full; the caller should retry later (429 + Retry-After)."""

    status = 429

    def __init__(self, message: str, retry_after: float = 1.0, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class UnavailableError(VolantError):
    """A component is not (yet) able to serve (503)."""

    status = 503


class OutOfSpaceError(VolantError):
    """Persisting state failed for lack of space (507); the previous state is intact."""

    status = 507


class UpstreamError(VolantError):
    """A guest agent or VMM answered badly or not at all (502)."""

    status = 502


class ConfigError(VolantError):
    """Invalid daemon configuration; ``key`` names the offending setting."""

    status = 500

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}", key=key)
        self.key = key
