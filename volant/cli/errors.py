"""Errors the CLI reports as one line (``volar: <message>``) with exit code 1."""

from __future__ import annotations


class CliError(Exception):
    """An API or operation failure the user should read, never a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(CliError):
    """The API answered with an error status; ``message`` is ``http <code>: <error>``."""

    def __init__(self, status: int, error: str, *, no_route: bool = False) -> None:
        super().__init__(f"http {status}: {error}")
        self.status = status
        self.error = error
        self.no_route = no_route
