"""The ``netns`` fixture comes from tests/conftest.py."""
