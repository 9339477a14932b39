"""Fixtures for the API integration tests (implemented in api_server_support)."""

from api_server_support import bus, serve

__all__ = ["bus", "serve"]
