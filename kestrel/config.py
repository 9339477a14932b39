"""Agent settings: the kernel command line plus ``KESTREL_*`` environment overrides.

The overrides exist so the whole agent runs unprivileged on a developer host or in
tests: the /proc, /sys and /dev roots, the module list, the listen address and the
command line itself can all be pointed somewhere harmless.

Environment variables:
  KESTREL_LISTEN          host:port for the HTTP API (default 0.0.0.0:8080)
  KESTREL_ROOT            prefix for /proc, /sys, /dev, /etc (default /)
  KESTREL_PROC / _SYS / _DEV   individual overrides of those roots
  KESTREL_MODULES         module load list (default <root>/etc/kestrel/modules)
  KESTREL_CMDLINE         command line text instead of <proc>/cmdline
  KESTREL_PID1            1 / 0 forces PID-1 duties on / off (default: getpid() == 1)
  KESTREL_SUBREAPER       1 makes a non-PID-1 agent adopt orphans (prctl), for tests
  KESTREL_VSOCK           1 / 0 forces the AF_VSOCK listener on / off (default: when PID 1)
  KESTREL_BACKOFF_INITIAL / KESTREL_BACKOFF_MAX   workload restart backoff (seconds)
  KESTREL_STOP_TIMEOUT    seconds between SIGTERM and SIGKILL for the workload
  KESTREL_LOG_LINES       size of the workload log ring
  VOLANT_MANIFEST         encoded manifest (highest priority source)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

VERSION = "0.1.0"
DEFAULT_PORT = 8080


class ConfigError(Exception):
    """A setting that cannot be used (bad listen address, bad number)."""


@dataclass(frozen=True)
class AgentConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")
    modules_list: Path = Path("/etc/kestrel/modules")
    cmdline: dict[str, str] = field(default_factory=dict)
    pid1: bool = False
    subreaper: bool = False
    vsock: bool = True
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    stop_timeout: float = 10.0
    log_lines: int = 1000
    env_manifest: str | None = None
    stage2: bool = False

    @property
    def debug_shell(self) -> bool:
        return self.cmdline.get("volant.debug_shell", "") in ("1", "true", "yes", "on")


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port``."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise ConfigError(f"listen address {text!r} must be host:port")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"listen address {text!r} has a non-numeric port") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"listen port {port} out of range")
    return host, port


def _float_env(env: dict[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{key} must not be negative")
    return value


def _flag(env: dict[str, str], key: str) -> bool | None:
    raw = env.get(key)
    if raw is None or raw == "":
        return None
    return raw.lower() in ("1", "true", "yes", "on")


def read_cmdline_text(proc: Path, env: dict[str, str]) -> str:
    if "KESTREL_CMDLINE" in env:
        return env["KESTREL_CMDLINE"]
    try:
        return (proc / "cmdline").read_text(errors="replace")
    except OSError:
        return ""


def load_config(env: dict[str, str] | None = None, argv: list[str] | None = None) -> AgentConfig:
    """Build the agent settings from the environment and the kernel command line."""
    from kestrel.codec import parse_cmdline

    env = dict(os.environ) if env is None else env
    argv = [] if argv is None else argv
    root = Path(env.get("KESTREL_ROOT") or "/")
    proc = Path(env.get("KESTREL_PROC") or root / "proc")
    sys_root = Path(env.get("KESTREL_SYS") or root / "sys")
    dev = Path(env.get("KESTREL_DEV") or root / "dev")
    modules = Path(env.get("KESTREL_MODULES") or root / "etc/kestrel/modules")
    host, port = parse_listen(env.get("KESTREL_LISTEN") or f"0.0.0.0:{DEFAULT_PORT}")
    pid1_flag = _flag(env, "KESTREL_PID1")
    pid1 = os.getpid() == 1 if pid1_flag is None else pid1_flag
    vsock_flag = _flag(env, "KESTREL_VSOCK")
    log_lines_raw = env.get("KESTREL_LOG_LINES") or "1000"
    try:
        log_lines = max(1, int(log_lines_raw))
    except ValueError:
        raise ConfigError(f"KESTREL_LOG_LINES={log_lines_raw!r} is not an integer") from None
    return AgentConfig(
        listen_host=host,
        listen_port=port,
        proc=proc,
        sys=sys_root,
        dev=dev,
        modules_list=modules,
        cmdline=parse_cmdline(read_cmdline_text(proc, env)),
        pid1=pid1,
        subreaper=bool(_flag(env, "KESTREL_SUBREAPER")),
        vsock=pid1 if vsock_flag is None else vsock_flag,
        backoff_initial=_float_env(env, "KESTREL_BACKOFF_INITIAL", 0.5),
        backoff_max=_float_env(env, "KESTREL_BACKOFF_MAX", 10.0),
        stop_timeout=_float_env(env, "KESTREL_STOP_TIMEOUT", 10.0),
        log_lines=log_lines,
        env_manifest=env.get("VOLANT_MANIFEST") or None,
        stage2="stage2" in argv,
    )
