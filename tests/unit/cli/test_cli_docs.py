"""docs/cli.md is generated from the commands' help and must match the code."""

from __future__ import annotations

from pathlib import Path

from volant.cli.docs import render

DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def test_cli_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render(), (
        "docs/cli.md is stale: run `python -m volant.cli.docs > docs/cli.md`")


def test_every_command_is_documented() -> None:
    text = DOC.read_text()
    for command in ("vms create", "vms console", "vms logs", "vms wait", "vms config history",
                    "vms operations", "vms call", "plugins install", "deployments status",
                    "deployments scale", "events", "system summary", "setup", "version"):
        assert f"`volar {command}`" in text, command
