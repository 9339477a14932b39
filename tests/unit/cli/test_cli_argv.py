"""Global options after the subcommand, and the escape-key notation."""

from __future__ import annotations

import pytest

from volant.cli.main import hoist_global_options
from volant.cli.terminal import parse_escape


def test_output_and_api_move_in_front() -> None:
    argv = ["vms", "list", "-o", "json", "--api", "http://x:1", "-v"]
    assert hoist_global_options(argv) == ["-o", "json", "--api", "http://x:1", "-v", "vms", "list"]


def test_output_with_other_value_stays_with_the_subcommand() -> None:
    argv = ["vms", "config", "get", "a", "--output", "file.json"]
    assert hoist_global_options(argv) == argv


def test_nothing_after_double_dash_moves() -> None:
    argv = ["vms", "call", "a", "GET:/x", "--", "-o", "json"]
    assert hoist_global_options(argv) == argv


@pytest.mark.parametrize(("text", "key"), [("^]", b"\x1d"), ("^a", b"\x01"), ("~", b"~")])
def test_escape_notation(text: str, key: bytes) -> None:
    assert parse_escape(text) == key


def test_bad_escape() -> None:
    with pytest.raises(ValueError):
        parse_escape("abc")
