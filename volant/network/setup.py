"""Host setup and teardown: a plan of idempotent steps (upstream ``volar setup``, done better).

``setup`` ensures the state/runtime/log/kernel directories, the bridge with the
host address, IPv4 forwarding, our nftables table, and a systemd unit rendered
from ``conf/volantd.service`` carrying *every* ``VOLANT_*`` setting (upstream
forgot ``VOLANT_HOST_IP``). Each step measures first and only acts when needed,
so running setup twice changes nothing the second time; ``--dry-run`` prints the
steps and whether each would act, without touching anything.

``teardown`` undoes exactly what setup did and nothing else: setup records in
``<state_dir>/setup.json`` what *it* created or changed (a bridge that already
existed, or forwarding that was already on, is not recorded and so is left
alone), and teardown reverses those records in reverse order. Directories are
only removed when setup created them and they are empty (VM data is never
deleted by teardown).

The daemon itself re-ensures bridge and NAT at every start (HostNetwork actor),
so a host reboot does not break VM creation even without the unit.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from volant.config import Config, environment_variables
from volant.errors import ConfigError, ValidationError
from volant.network import links, nat

DEFAULT_UNIT_PATH = Path("/etc/systemd/system/volantd.service")
TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "conf" / "volantd.service"
MANIFEST_NAME = "setup.json"
SECRET_KEYS = ("api_key",)


@attrs.define
class Step:
    """One idempotent action: ``needed()`` measures, ``apply()`` acts, ``undo`` reverses."""

    key: str  # stable identifier recorded in the manifest
    description: str
    needed: Callable[[], bool]
    apply: Callable[[], object]  # return values are ignored
    undo: Callable[[], object] | None = None


@attrs.frozen
class StepResult:
    key: str
    description: str
    acted: bool  # did (or, in a dry run, would) change something


@attrs.frozen
class SetupOptions:
    netns: str | None = None
    unit_path: Path | None = DEFAULT_UNIT_PATH  # None: do not write a unit
    systemd: bool = True  # run systemctl daemon-reload / enable --now after writing the unit
    template_path: Path = TEMPLATE_PATH
    exec_start: str | None = None  # default: the volantd next to this interpreter


# -- unit rendering ----------------------------------------------------------


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def environment(cfg: Config, include_secrets: bool = False) -> dict[str, str]:
    """Every ``VOLANT_*`` variable for ``cfg`` (empty optional values left out)."""
    env: dict[str, str] = {}
    for key, var in environment_variables().items():
        if key in SECRET_KEYS and not include_secrets:
            continue
        value = getattr(cfg, key)
        if key == "log_dir":
            value = cfg.effective_log_dir
        text = _env_value(value)
        if text and text != ".":
            env[var] = text
    return env


def _quote(text: str) -> str:
    """systemd ``Environment=`` quoting: double quotes, escaped backslash and quote, ``%%``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"' + escaped + '"'


def default_exec_start() -> str:
    candidate = Path(sys.executable).parent / "volantd"
    if candidate.exists():
        return f"{candidate} run"
    return f"{sys.executable} -m volant.daemon run"


def render_unit(cfg: Config, options: SetupOptions) -> str:
    try:
        template = string.Template(options.template_path.read_text())
    except OSError as exc:
        raise ConfigError("unit_template", f"cannot read {options.template_path}: {exc}") from None
    env_lines = "\n".join(
        f"Environment={_quote(f'{var}={value}')}" for var, value in sorted(environment(cfg).items())
    )
    return template.substitute(
        work_dir=str(cfg.state_dir),
        environment=env_lines,
        environment_file=str(cfg.state_dir / "volantd.env"),
        exec_start=options.exec_start or default_exec_start(),
        log_file=str(cfg.effective_log_dir / "volantd.log"),
    )


# -- the plan -----------------------------------------------------------------


def _manifest_path(cfg: Config) -> Path:
    return cfg.state_dir / MANIFEST_NAME


def load_manifest(cfg: Config) -> list[str]:
    """Keys of the steps setup acted on, in order (empty if setup never ran)."""
    try:
        data = json.loads(_manifest_path(cfg).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError("state_dir", f"unreadable {_manifest_path(cfg)}: {exc}") from None
    acted = data.get("acted", [])
    return [str(k) for k in acted] if isinstance(acted, list) else []


def _save_manifest(cfg: Config, acted: list[str]) -> None:
    path = _manifest_path(cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"schema_version": 1, "acted": acted}, indent=2) + "\n")
    os.replace(tmp, path)


def plan(cfg: Config, options: SetupOptions | None = None) -> list[Step]:
    """The ordered setup steps for ``cfg`` (nothing is executed here)."""
    opts = options or SetupOptions()
    netns = opts.netns
    net = cfg.network
    steps: list[Step] = []

    dirs = [cfg.state_dir, cfg.runtime_dir, cfg.effective_log_dir,
            cfg.kernel_bzimage.parent, cfg.kernel_vmlinux.parent]
    seen: set[Path] = set()
    for directory in dirs:
        if directory in seen:
            continue
        seen.add(directory)
        steps.append(Step(
            key=f"dir:{directory}",
            description=f"create directory {directory}",
            needed=functools.partial(_dir_missing, directory),
            apply=functools.partial(directory.mkdir, parents=True, exist_ok=True, mode=0o755),
            undo=functools.partial(_rmdir_if_empty, directory),
        ))

    host_cidr = f"{cfg.host_ip}/{net.prefixlen}"

    def bridge_needed() -> bool:
        info = links.link_info(cfg.bridge, netns)
        return info is None or not info.up or host_cidr not in links.addresses(cfg.bridge, netns)

    steps.append(Step(
        key=f"bridge:{cfg.bridge}",
        description=f"ensure bridge {cfg.bridge} is up with {host_cidr}",
        needed=bridge_needed,
        apply=functools.partial(links.ensure_bridge, cfg.bridge, host_cidr, netns=netns),
        undo=functools.partial(links.delete_link, cfg.bridge, netns),
    ))
    steps.append(Step(
        key="ip_forward",
        description="enable IPv4 forwarding (net.ipv4.ip_forward=1)",
        needed=lambda: not nat.ip_forward_enabled(netns),
        apply=functools.partial(nat.ensure_ip_forward, netns),
        undo=functools.partial(nat.set_ip_forward, False, netns),
    ))

    def nat_needed() -> bool:
        table = nat.nat_rules(nat.DEFAULT_TABLE, netns)
        current = [{"table": {"family": "ip", "name": nat.DEFAULT_TABLE}}]
        current += [{"chain": c} for c in table.chains] + [{"rule": r} for r in table.rules]
        return not table.present or current != nat.desired_objects(
            nat.DEFAULT_TABLE, str(net), cfg.bridge)

    steps.append(Step(
        key=f"nat:{nat.DEFAULT_TABLE}",
        description=f"ensure nftables table ip {nat.DEFAULT_TABLE}: masquerade {net} "
                    f"leaving other than {cfg.bridge}, forward to/from {cfg.bridge}",
        needed=nat_needed,
        apply=functools.partial(nat.ensure_nat, str(net), cfg.bridge, netns=netns),
        undo=functools.partial(nat.remove_nat, nat.DEFAULT_TABLE, netns),
    ))

    if opts.unit_path is not None:
        unit_path = opts.unit_path
        env_file = cfg.state_dir / "volantd.env"
        secrets = {var: v for var, v in environment(cfg, include_secrets=True).items()
                   if var not in environment(cfg)}
        env_text = "".join(f"{var}={value}\n" for var, value in sorted(secrets.items()))
        if secrets:
            steps.append(Step(
                key=f"file:{env_file}",
                description=f"write secrets to {env_file} (mode 0600)",
                needed=lambda: not env_file.exists() or env_file.read_text() != env_text,
                apply=lambda: _write_file(env_file, env_text, 0o600),
                undo=lambda: env_file.unlink(missing_ok=True),
            ))
        unit_text = render_unit(cfg, opts)

        def write_unit() -> None:
            _write_file(unit_path, unit_text, 0o644)
            if opts.systemd:
                _systemctl("daemon-reload")
                _systemctl("enable", "--now", unit_path.name)

        def remove_unit() -> None:
            if opts.systemd:
                _systemctl("disable", "--now", unit_path.name)
            unit_path.unlink(missing_ok=True)
            if opts.systemd:
                _systemctl("daemon-reload")

        steps.append(Step(
            key=f"unit:{unit_path}",
            description=f"write systemd unit {unit_path}"
                        + (" and enable --now" if opts.systemd else ""),
            needed=lambda: not unit_path.exists() or unit_path.read_text() != unit_text,
            apply=write_unit,
            undo=remove_unit,
        ))
    return steps


def _write_file(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _dir_missing(path: Path) -> bool:
    return not path.is_dir()


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # not empty: holds data we must not delete


def _systemctl(*args: str) -> None:
    if shutil.which("systemctl") is None:
        return
    subprocess.run(["systemctl", *args], check=False, capture_output=True, timeout=60)


def _require_root(dry_run: bool) -> None:
    if not dry_run and os.geteuid() != 0:
        raise ValidationError("setup and teardown need root (use --dry-run to preview)")


def run_setup(
    cfg: Config,
    options: SetupOptions | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> list[StepResult]:
    """Execute (or, with ``dry_run``, print) the plan; record what acted for teardown."""
    _require_root(dry_run)
    steps = plan(cfg, options)
    results: list[StepResult] = []
    acted = [] if dry_run else load_manifest(cfg)
    try:
        for step in steps:
            needed = step.needed()
            verb = ("would " if dry_run else "") + ("do" if needed else "skip (already done)")
            echo(f"[{verb}] {step.description}")
            if needed and not dry_run:
                step.apply()
                if step.key not in acted:
                    acted.append(step.key)
            results.append(StepResult(step.key, step.description, needed))
    finally:
        # even after a failed step, record what was done so teardown can undo it
        if not dry_run and cfg.state_dir.is_dir():
            _save_manifest(cfg, acted)
    return results


def run_teardown(
    cfg: Config,
    options: SetupOptions | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> list[StepResult]:
    """Reverse, in reverse order, exactly the steps a previous setup acted on."""
    _require_root(dry_run)
    acted = load_manifest(cfg)
    by_key = {step.key: step for step in plan(cfg, options)}
    results: list[StepResult] = []
    manifest_removed = False
    for key in reversed(acted):
        step = by_key.get(key)
        if step is None or step.undo is None:
            echo(f"[skip] {key}: not part of the current plan (configuration changed?)")
            continue
        if key.startswith("dir:") and Path(key[4:]) == cfg.state_dir and not dry_run:
            _manifest_path(cfg).unlink(missing_ok=True)
            manifest_removed = True
        echo(f"[{'would undo' if dry_run else 'undo'}] {step.description}")
        if not dry_run:
            step.undo()
        results.append(StepResult(key, step.description, True))
    if not dry_run and not manifest_removed:
        _manifest_path(cfg).unlink(missing_ok=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m volant.network.setup {setup,teardown} [--dry-run] [--no-unit]``."""
    import argparse

    from volant.config import load_config

    parser = argparse.ArgumentParser(prog="volantd setup", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["setup", "teardown"])
    parser.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--unit-path", type=Path, default=DEFAULT_UNIT_PATH)
    parser.add_argument("--no-unit", action="store_true", help="do not write a systemd unit")
    parser.add_argument("--no-systemctl", action="store_true",
                        help="write the unit but do not run systemctl")
    parser.add_argument("--netns", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        options = SetupOptions(
            netns=args.netns, unit_path=None if args.no_unit else args.unit_path,
            systemd=not args.no_systemctl,
        )
        if args.action == "setup":
            run_setup(cfg, options, dry_run=args.dry_run)
        else:
            run_teardown(cfg, options, dry_run=args.dry_run)
    except (ConfigError, ValidationError, links.LinkError, nat.NftablesError) as exc:
        print(f"volantd {args.action}: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
