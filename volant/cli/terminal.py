"""Raw terminal mode for the console: keys go to the guest unprocessed.

The terminal is restored on every exit path (escape key, remote close, error,
Ctrl-C is not special in raw mode: it is sent to the guest like any key).
"""

from __future__ import annotations

import os
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def raw_mode(fd: int) -> Iterator[bool]:
    """Put ``fd`` in raw mode if it is a terminal; yields whether it is one."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def parse_escape(text: str) -> bytes:
    """``^]`` -> b'\\x1d'; a single literal character is accepted too."""
    if len(text) == 2 and text[0] == "^":
        code = ord(text[1].upper()) ^ 0x40
        if 0 <= code < 0x20 or code == 0x7F:
            return bytes([code])
    if len(text) == 1:
        return text.encode()
    raise ValueError(f"escape key must look like ^] or be one character, got {text!r}")
