"""Run ``volar`` as a subprocess, the way a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import attrs

VOLAR = [sys.executable, "-m", "volant.cli.main"]


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def assert_one_line_error(self, *fragments: str) -> None:
        assert self.code == 1, (self.code, self.out, self.err)
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("volar: "), self.err
        assert "Traceback" not in self.err
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])


def volar(api: str, *args: str, env: dict[str, str] | None = None,
          timeout: float = 90.0, stdin: str | None = None) -> Result:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("VOLANT_API_KEY", "VOLANT_API_BASE")}
    full_env.update(env or {})
    proc = subprocess.run([*VOLAR, "--api", api, *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, input=stdin)
    return Result(proc.returncode, proc.stdout, proc.stderr)
