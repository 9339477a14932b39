"""Fixtures for the API unit tests (implemented in api_unit_support)."""

from api_unit_support import bus, make_app

__all__ = ["bus", "make_app"]
