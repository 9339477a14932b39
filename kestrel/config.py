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

Paths are plain strings: this module is on the boot path before the API listens, where
pathlib (and dataclasses, typing) would cost a noticeable part of a second under TCG.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

VERSION = "0.1.0"
DEFAULT_PORT = 8080


class ConfigError(Exception):
    """A setting that cannot be used (bad listen address, bad number)."""


class AgentConfig:
    """Everything the agent reads at start-up; path fields are strings."""

    __slots__ = (
        "backoff_initial",
        "backoff_max",
        "cmdline",
        "dev",
        "env_manifest",
        "listen_host",
        "listen_port",
        "log_lines",
        "modules_list",
        "pid1",
        "proc",
        "stage2",
        "stop_timeout",
        "subreaper",
        "sys",
        "vsock",
    )

    def __init__(
        self,
        *,
        listen_host: str = "0.0.0.0",
        listen_port: int = DEFAULT_PORT,
        proc: StrPath = "/proc",
        sys: StrPath = "/sys",
        dev: StrPath = "/dev",
        modules_list: StrPath = "/etc/kestrel/modules",
        cmdline: dict[str, str] | None = None,
        pid1: bool = False,
        subreaper: bool = False,
        vsock: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        stop_timeout: float = 10.0,
        log_lines: int = 1000,
        env_manifest: str | None = None,
        stage2: bool = False,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.proc: str = os.fspath(proc)
        self.sys: str = os.fspath(sys)
        self.dev: str = os.fspath(dev)
        self.modules_list: str = os.fspath(modules_list)
        self.cmdline: dict[str, str] = {} if cmdline is None else cmdline
        self.pid1 = pid1
        self.subreaper = subreaper
        self.vsock = vsock
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.log_lines = log_lines
        self.env_manifest = env_manifest
        self.stage2 = stage2

    @property
    def debug_shell(self) -> bool:
        return self.cmdline.get("volant.debug_shell", "") in ("1", "true", "yes", "on")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"AgentConfig({fields})"


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


def read_cmdline_text(proc: StrPath, env: dict[str, str]) -> str:
    if "KESTREL_CMDLINE" in env:
        return env["KESTREL_CMDLINE"]
    try:
        with open(os.path.join(proc, "cmdline"), errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def load_config(env: dict[str, str] | None = None, argv: list[str] | None = None) -> AgentConfig:
    """Build the agent settings from the environment and the kernel command line."""
    from kestrel.codec import parse_cmdline

    env = dict(os.environ) if env is None else env
    argv = [] if argv is None else argv
    root = env.get("KESTREL_ROOT") or "/"
    proc = env.get("KESTREL_PROC") or os.path.join(root, "proc")
    sys_root = env.get("KESTREL_SYS") or os.path.join(root, "sys")
    dev = env.get("KESTREL_DEV") or os.path.join(root, "dev")
    modules = env.get("KESTREL_MODULES") or os.path.join(root, "etc/kestrel/modules")
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
