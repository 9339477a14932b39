"""Generate docs/cli.md from the commands' own help: ``python -m volant.cli.docs > docs/cli.md``.

A test regenerates it and compares, so the reference never drifts from the code.
"""

from __future__ import annotations

import sys
from typing import Any

import typer.main

from volant.cli.main import app

INTRO = """\
# volar — command reference

`volar` is the command-line client of volantd. It only talks to the HTTP API (it never
reads state files or sockets), so it works from any host that can reach the API.

*This file is generated from the commands' help by `python -m volant.cli.docs`; the
test `tests/unit/cli/test_cli_docs.py` fails when it is out of date. Edit the text in
`volant/cli/docs.py` or the commands' docstrings, then regenerate.*

## Conventions

- **Target**: `--api URL` or `VOLANT_API_BASE` (default `http://127.0.0.1:7777`).
- **Auth**: `--api-key KEY` or `VOLANT_API_KEY`, sent as `X-Volant-API-Key` on every
  request, including the event stream and websockets.
- **Output**: `-o table` (default; rich tables, one row per line when piped) or
  `-o json` (the API's answer unchanged, so scripts see the documented API shapes;
  commands whose route answers *204 No Content* print `{"name": ..., "deleted": true}`).
  Global options may also be given after the subcommand: `volar vms list -o json`.
- **Exit codes**: `0` success, `1` API or operation error (one line on stderr, e.g.
  `volar: http 404: vm web-1 not found`, never a traceback), `2` usage error (unknown
  flag, bad value), `130` interrupted.
- **Diagnostics**: `--verbose` prints each HTTP exchange (method, URL, status, time) to
  stderr; `--debug` prints a traceback with the error.
- **Waiting**: `vms create/start/stop/restart/scale` and `deployments create/scale/update`
  wait for the target state with a spinner (on a terminal); `--no-wait` returns at once,
  `--timeout S` bounds the wait (exit 1 when it runs out).
- **Routes not served**: a command whose route the daemon does not have yet fails with
  `volar: http 404: no route for ... (this volantd does not serve this route; ...)`.
- **Shell completion**: `volar --install-completion` (bash, zsh, fish, PowerShell).

## Behaviour worth knowing

- `events --follow` streams Server-Sent Events. When the connection drops, the daemon
  restarts, or the daemon ends the stream with `STREAM_OVERFLOW` (the client fell
  behind), volar reconnects with `Last-Event-ID` set to the last event it printed, so
  no event is lost or printed twice. `--since 0` replays the daemon's journal first.
  With `-o json` each event is one JSON object per line.
- `vms console NAME` bridges the terminal to the VM's serial console through the API
  websocket (`/ws/v1/vms/NAME/console`), in raw mode: every key (Ctrl-C too) goes to the
  guest. **Ctrl-]** (change with `--escape ^X`) leaves. With a non-terminal stdin the
  input is sent and the session ends shortly after stdin closes.
- `vms logs NAME [-f]` relays the guest agent's log stream (`/ws/v1/vms/NAME/logs`);
  without `-f` it prints the recent lines (`--tail`) and stops once the stream is quiet.
- `plugins install PATH|URL` resolves relative `rootfs`/`initramfs`/`disks` paths
  against the manifest file's directory, inlines cloud-init documents given by `path`
  (as `content` with `inline: true`), and validates the result with the same code as
  the daemon before sending it.
- `setup` does not change the host from the client: host setup (bridge, NAT,
  directories, systemd unit) is `volantd setup`, run as root on the daemon's host.
  `volar setup` prints that command with the upstream flags translated
  (`--bridge` → `VOLANT_BRIDGE`, `--work-dir` → `VOLANT_STATE_DIR`, `--service-file` →
  `--unit-path`, ...); `volar setup --run` runs it, only as root against a local daemon.
- `vms config get NAME --output-file F` replaces upstream's `--output F`, because
  `-o/--output` is the global format option here.
"""


def _usage(command: Any, ctx: Any) -> str:
    pieces = command.collect_usage_pieces(ctx)
    return " ".join([ctx.command_path, *pieces])


def _options(command: Any, ctx: Any) -> list[str]:
    lines: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            names, help_text = param.human_readable_name, ""
        else:
            names, help_text = record
        help_text = help_text.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{names}` | {help_text} |")
    if not lines:
        return []
    return ["| Argument / option | Description |", "|---|---|", *lines, ""]


def _walk(command: Any, ctx: Any, level: int, out: list[str]) -> None:
    """Typer builds on its own vendored click, so commands are duck-typed here."""
    title = "#" * min(level, 6)
    out.append(f"{title} `{ctx.command_path}`\n")
    help_text = (command.help or "").strip()
    if help_text:
        out.append(help_text.split("\f")[0].strip() + "\n")
    out.append(f"```\n{_usage(command, ctx)}\n```\n")
    out.extend(_options(command, ctx))
    list_commands = getattr(command, "list_commands", None)
    get_command = getattr(command, "get_command", None)
    if list_commands is not None and get_command is not None:
        for name in list_commands(ctx):
            sub = get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            _walk(sub, sub.context_class(sub, info_name=name, parent=ctx), level + 1, out)


def render() -> str:
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="volar")
    out: list[str] = [INTRO, "## Commands\n"]
    _walk(root, ctx, 3, out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
