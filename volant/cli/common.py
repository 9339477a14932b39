"""Option types and small helpers shared by the command modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from volant.cli.errors import CliError

NoWait = Annotated[bool, typer.Option(
    "--no-wait", help="Return at once; do not wait for the target state.")]
Timeout = Annotated[float, typer.Option(
    "--timeout", min=0, help="Seconds to wait for the target state.")]


def seg(name: str) -> str:
    """One URL path segment (names are DNS labels, but never trust input in a URL)."""
    return quote(name, safe="")


def load_json_arg(value: str, what: str) -> Any:
    """A JSON document given inline (starts with ``{``/``[``) or as a file path (``-`` = stdin)."""
    text: str
    stripped = value.lstrip()
    if stripped.startswith(("{", "[")):
        text = value
    elif value == "-":
        text = typer.get_text_stream("stdin").read()
    else:
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise CliError(f"{what}: cannot read {value}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{what}: invalid JSON: {exc}") from None


def key_values(items: list[str] | None, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        result[key] = value
    return result
