"""Output: rich tables and key/value panels for people, exact JSON for scripts.

``-o json`` prints the API's answer unchanged (indented), so scripts can rely on
the documented API shapes; ``-o table`` (default) renders for a terminal.
Status lines and spinners go to stderr so stdout stays parseable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

OUTPUT_FORMATS = ("table", "json")
PIPE_WIDTH = 4000


class Output:
    def __init__(self, fmt: str = "table") -> None:
        self.format = fmt
        self.out = Console(highlight=False, soft_wrap=True)
        if not self.out.is_terminal:
            # Piped output: never wrap cells, so each row stays one greppable line.
            self.out = Console(highlight=False, soft_wrap=True, width=PIPE_WIDTH)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def json(self) -> bool:
        return self.format == "json"

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        """A plain line on stdout (no markup interpretation)."""
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def note(self, text: str) -> None:
        """A human note on stderr (progress, hints)."""
        self.err.print(text, markup=False)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell_text(cell)) for cell in row))
        self.out.print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in pairs:
            table.add_row(Text(key), Text(cell_text(value)))
        self.out.print(table)

    @contextmanager
    def progress(self, text: str) -> Iterator[None]:
        """A spinner on stderr while waiting (only drawn on a terminal)."""
        if self.err.is_terminal:
            with self.err.status(text):
                yield
        else:
            yield


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
