"""volantd configuration: ``conf/volantd.toml`` format plus environment overrides.

Precedence (lowest first): built-in defaults, the TOML file named by
``VOLANT_CONFIG`` (or ``--config``), then ``VOLANT_*`` environment variables.
Upstream's variable names are kept where upstream had them; ``VOLANT_STATE_DIR``
replaces upstream's ``VOLANT_DB_PATH``. Every value is validated here, and an
invalid one raises ``ConfigError`` naming the key, which the daemon prints as a
single line before exiting with status 2.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from volant.errors import ConfigError

HYPERVISORS = ("auto", "qemu", "cloud-hypervisor", "hollow")
ACCELS = ("auto", "kvm", "tcg")
MAX_IFNAME = 15


def _default_state_dir() -> Path:
    return Path("/var/lib/volant") if os.geteuid() == 0 else Path.home() / ".volant"


def _default_runtime_dir() -> Path:
    return Path("/run/volant") if os.geteuid() == 0 else Path.home() / ".volant" / "run"


@attrs.frozen
class Config:
    """Validated daemon settings. Build it with :func:`load_config`."""

    api_listen: str = "127.0.0.1:7777"
    api_advertise: str = ""
    api_unix_socket: str = ""
    api_key: str = ""
    api_allow_cidr: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    bridge: str = "vbr0"
    subnet: str = "192.168.127.0/24"
    host_ip: str = "192.168.127.1"
    manage_network: bool = True
    hypervisor: str = "auto"
    accel: str = "auto"
    state_dir: Path = attrs.field(factory=_default_state_dir)
    runtime_dir: Path = attrs.field(factory=_default_runtime_dir)
    log_dir: Path = Path("")
    kernel_bzimage: Path = Path("/var/lib/volant/kernel/bzImage")
    kernel_vmlinux: Path = Path("/var/lib/volant/kernel/vmlinux")
    log_level: str = "info"
    log_format: str = "auto"

    @property
    def listen_host(self) -> str:
        return self.api_listen.rsplit(":", 1)[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.api_listen.rsplit(":", 1)[1])

    @property
    def advertise_host(self) -> str:
        """Where guests and clients reach the API: ``api_advertise``, else the listen host
        if routable, else the bridge's host IP (upstream's rule)."""
        if self.api_advertise:
            return self.api_advertise.rsplit(":", 1)[0]
        host = self.listen_host
        try:
            addr = ipaddress.ip_address(host)
            routable = not (addr.is_loopback or addr.is_unspecified)
        except ValueError:
            routable = host not in ("localhost", "")
        return host if routable else self.host_ip

    @property
    def advertise_port(self) -> int:
        if self.api_advertise:
            return int(self.api_advertise.rsplit(":", 1)[1])
        return self.listen_port

    @property
    def effective_log_dir(self) -> Path:
        return self.log_dir if str(self.log_dir) not in ("", ".") else self.state_dir / "logs"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)


# key in the TOML file -> (environment variable, kind)
_KEYS: dict[str, tuple[str, str]] = {
    "api_listen": ("VOLANT_API_LISTEN", "str"),
    "api_advertise": ("VOLANT_API_ADVERTISE", "str"),
    "api_unix_socket": ("VOLANT_API_UNIX_SOCKET", "str"),
    "api_key": ("VOLANT_API_KEY", "str"),
    "api_allow_cidr": ("VOLANT_API_ALLOW_CIDR", "list"),
    "trusted_proxies": ("VOLANT_TRUSTED_PROXIES", "list"),
    "cors_origins": ("VOLANT_CORS_ORIGINS", "list"),
    "bridge": ("VOLANT_BRIDGE", "str"),
    "subnet": ("VOLANT_SUBNET", "str"),
    "host_ip": ("VOLANT_HOST_IP", "str"),
    "manage_network": ("VOLANT_MANAGE_NETWORK", "bool"),
    "hypervisor": ("VOLANT_HYPERVISOR", "str"),
    "accel": ("VOLANT_ACCEL", "str"),
    "state_dir": ("VOLANT_STATE_DIR", "path"),
    "runtime_dir": ("VOLANT_RUNTIME_DIR", "path"),
    "log_dir": ("VOLANT_LOG_DIR", "path"),
    "kernel_bzimage": ("VOLANT_KERNEL_BZIMAGE", "path"),
    "kernel_vmlinux": ("VOLANT_KERNEL_VMLINUX", "path"),
    "log_level": ("VOLANT_LOG_LEVEL", "str"),
    "log_format": ("VOLANT_LOG_FORMAT", "str"),
}


def environment_variables() -> dict[str, str]:
    """Setting name -> environment variable, for every setting (used to write the unit)."""
    return {key: var for key, (var, _kind) in _KEYS.items()}


def _coerce(key: str, kind: str, value: Any) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {type(value).__name__}")
        return value.strip()
    if kind == "path":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(key, "expected a non-empty path")
        return Path(value.strip()).expanduser()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected a boolean, got {value!r}")
    # list: a TOML array of strings or a comma-separated string
    items: list[Any]
    if isinstance(value, str):
        items = [part for part in value.split(",")]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(key, "expected a list of strings or a comma-separated string")
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(key, "every entry must be a string")
    return tuple(item.strip() for item in items if item.strip())


def _validate_listen(key: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"invalid port in {value!r}")


def _validate(cfg: Config) -> None:
    _validate_listen("api_listen", cfg.api_listen)
    if cfg.api_advertise:
        _validate_listen("api_advertise", cfg.api_advertise)
    for key, cidrs in (("api_allow_cidr", cfg.api_allow_cidr),
                       ("trusted_proxies", cfg.trusted_proxies)):
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(key, f"invalid CIDR {cidr!r}") from None
    try:
        net = ipaddress.ip_network(cfg.subnet, strict=True)
    except ValueError as exc:
        raise ConfigError("subnet", f"invalid subnet {cfg.subnet!r}: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ConfigError("subnet", f"only IPv4 subnets are supported, got {cfg.subnet!r}")
    if net.prefixlen > 30:
        raise ConfigError("subnet", f"subnet {cfg.subnet} is too small (at most /30)")
    try:
        host = ipaddress.ip_address(cfg.host_ip)
    except ValueError:
        raise ConfigError("host_ip", f"invalid IP address {cfg.host_ip!r}") from None
    if host not in net or host in (net.network_address, net.broadcast_address):
        raise ConfigError("host_ip", f"{cfg.host_ip} is not a usable address of subnet {net}")
    if not cfg.bridge or len(cfg.bridge) > MAX_IFNAME or "/" in cfg.bridge or " " in cfg.bridge:
        raise ConfigError(
            "bridge", f"invalid interface name {cfg.bridge!r} (1-{MAX_IFNAME} characters)"
        )
    if cfg.hypervisor not in HYPERVISORS and "/" not in cfg.hypervisor:
        choices = ", ".join(HYPERVISORS)
        raise ConfigError(
            "hypervisor", f"expected one of {choices} or a path, got {cfg.hypervisor!r}"
        )
    if cfg.accel not in ACCELS:
        raise ConfigError("accel", f"expected one of {', '.join(ACCELS)}, got {cfg.accel!r}")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level", f"expected debug|info|warning|error, got {cfg.log_level!r}")
    if cfg.log_format not in ("auto", "json", "console"):
        raise ConfigError("log_format", f"expected auto|json|console, got {cfg.log_format!r}")


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Read the TOML file (if any), apply environment variables and keyword overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file_path = path if path is not None else env.get("VOLANT_CONFIG") or None
    if file_path is not None:
        try:
            with open(file_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("VOLANT_CONFIG", f"config file {file_path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("VOLANT_CONFIG", f"cannot read {file_path}: {exc}") from None
        section = data.get("volantd", data)
        if not isinstance(section, dict):
            raise ConfigError("volantd", "expected a table")
        for key, value in section.items():
            if key not in _KEYS:
                raise ConfigError(key, f"unknown setting in {file_path}")
            values[key] = _coerce(key, _KEYS[key][1], value)
            sources[key] = f"{key} (in {file_path})"
    for key, (var, kind) in _KEYS.items():
        if var in env and env[var] != "":
            values[key] = _coerce(var, kind, env[var])
            sources[key] = var
    for key, value in overrides.items():
        if key not in _KEYS:
            raise ConfigError(key, "unknown setting")
        if value is not None:
            values[key] = _coerce(key, _KEYS[key][1], value)
            sources[key] = key
    cfg = Config(**values)
    try:
        _validate(cfg)
    except ConfigError as exc:
        source = sources.get(exc.key, exc.key)
        raise ConfigError(source, exc.message.split(": ", 1)[1]) from None
    return cfg
