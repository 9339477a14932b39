"""The create-VM request: strict parsing and upstream's resolution rules (section 1.3).

Resolution, highest precedence first:
- plugin: ``config.plugin`` (must equal ``plugin`` case-insensitively if both given);
- runtime: ``config.runtime`` > ``runtime`` > manifest ``runtime`` > manifest name;
- cpu/memory: ``config.resources`` > top-level > the manifest's ``resources`` (upstream
  ignored them on REST create) > 2 CPUs / 2048 MiB;
- kernel extra args: ``config.kernel_cmdline`` > ``kernel_cmdline``;
- guest's API endpoint: ``config.api`` > ``api_host``/``api_port`` > the advertise address;
- network mode: ``config.network.mode`` > manifest ``network.mode`` > bridged.
Every type problem is a 400 naming the field; nothing is persisted on any error.

The result also carries the VM's first :class:`~volant.vmconfig.VMConfig`
(version 1 of ``config.toml``): the resolved values plus the request's optional
``config`` sections (``cloud_init``, ``devices``, ``network``, ``metadata``,
``expose``, ``kernel_override``), each checked by ``volant.vmconfig``'s rules.

:func:`launch_fields` turns a config into the record fields a boot uses (CPU,
memory, command line, ``volant.*`` boot args, runtime, restart policy). The
manager uses it at create and the VM actor before *every* launch, so a patched
config takes effect at the next start.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import attrs

from volant.cloudinit import merge_cloud_init, reject_path_documents
from volant.config import Config
from volant.errors import UnprocessableError, ValidationError
from volant.manifest import Manifest, encode_for_cmdline, manifest_to_dict
from volant.names import validate_name
from volant.network.modes import NetworkMode, parse_mode
from volant.orchestrator.vmrecord import RestartPolicy, RestartPolicyName
from volant.vmconfig import USER_VOLANT_KEYS, VMConfig, effective_network, parse_config

BASE_CMDLINE = ("console=ttyS0 reboot=t panic=1 quiet loglevel=1 i8042.noaux i8042.nokbd "
                "pci=lastbus=0")
CMDLINE_LIMIT = 2048
#: Optional sections of a create request's ``config`` that go into the VM's config as given.
CONFIG_PASSTHROUGH = ("kernel_override", "devices", "metadata", "expose", "cloud_init",
                      "network")
DEFAULT_CPU = 2
DEFAULT_MEMORY_MB = 2048
MAX_EXTRA_CMDLINE = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOP_LEVEL = {"name", "plugin", "runtime", "cpu_cores", "memory_mb", "kernel_cmdline",
              "api_host", "api_port", "config", "restart_policy"}


@attrs.frozen
class CreateRequest:
    name: str
    plugin: str
    runtime: str
    cpu_cores: int | None
    memory_mb: int | None
    kernel_cmdline: str
    api_host: str
    api_port: int | None
    config: dict[str, Any]
    restart_policy: RestartPolicy


@attrs.frozen
class Resolved:
    """The request merged with its plugin's manifest."""

    request: CreateRequest
    manifest: Manifest
    runtime: str
    cpu_cores: int
    memory_mb: int
    kernel_extra: str
    api_host: str
    api_port: int | None
    network_mode: NetworkMode
    config: VMConfig


def _str(body: dict[str, Any], key: str, where: str = "") -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{where}{key}: expected a string", field=f"{where}{key}")
    return value.strip()


def _int(body: dict[str, Any], key: str, where: str = "", lo: int = 1,
         hi: int = 1 << 31) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{where}{key}: expected an integer", field=f"{where}{key}")
    if value == 0 and key == "api_port":
        return None  # upstream treats "0" as unset
    if not lo <= value <= hi:
        raise ValidationError(f"{where}{key}: must be between {lo} and {hi}",
                              field=f"{where}{key}")
    return value


def _obj(body: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where}{key}: expected an object", field=f"{where}{key}")
    return value


def _check_cmdline(value: str, field: str) -> str:
    if len(value) > MAX_EXTRA_CMDLINE:
        raise ValidationError(f"{field}: longer than {MAX_EXTRA_CMDLINE} characters", field=field)
    if _CONTROL.search(value):
        raise ValidationError(f"{field}: must not contain control characters", field=field)
    for word in value.split():
        key = word.split("=", 1)[0]
        if key.startswith("volant.") and key not in USER_VOLANT_KEYS:
            raise ValidationError(
                f"{field}: {key} is set by volantd; of the volant.* keys only "
                f"{', '.join(sorted(USER_VOLANT_KEYS))} may be given", field=field)
    return value


def parse_create(body: dict[str, Any]) -> CreateRequest:
    unknown = sorted(set(body) - _TOP_LEVEL)
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
    name = validate_name(body.get("name"), "name")
    config = _obj(body, "config")
    plugin = _str(body, "plugin")
    config_plugin = _str(config, "plugin", "config.")
    if config_plugin and plugin and config_plugin.lower() != plugin.lower():
        raise ValidationError("plugin mismatch between request and config", field="plugin")
    plugin = config_plugin or plugin
    if not plugin:
        raise ValidationError("plugin is required", field="plugin")
    resources = _obj(config, "resources", "config.")
    api = _obj(config, "api", "config.")
    network = _obj(config, "network", "config.")
    _str(network, "mode", "config.network.")
    cpu = _int(resources, "cpu_cores", "config.resources.", 1, 256) or _int(
        body, "cpu_cores", "", 1, 256)
    mem = _int(resources, "memory_mb", "config.resources.", 16, 1024 * 1024) or _int(
        body, "memory_mb", "", 16, 1024 * 1024)
    kernel = _str(config, "kernel_cmdline", "config.") or _str(body, "kernel_cmdline")
    _check_cmdline(kernel, "kernel_cmdline")
    api_host = _str(api, "host", "config.api.") or _str(body, "api_host")
    if api_host and (_CONTROL.search(api_host) or " " in api_host or len(api_host) > 253):
        raise ValidationError("api_host: invalid host", field="api_host")
    api_port = _int(api, "port", "config.api.", 0, 65535) or _int(body, "api_port", "", 0, 65535)
    runtime = _str(config, "runtime", "config.") or _str(body, "runtime")
    restart_policy = RestartPolicy.parse(body.get("restart_policy", config.get("restart_policy")))
    return CreateRequest(
        name=name, plugin=plugin, runtime=runtime, cpu_cores=cpu, memory_mb=mem,
        kernel_cmdline=kernel, api_host=api_host, api_port=api_port, config=config,
        restart_policy=restart_policy,
    )


def resolve(request: CreateRequest, manifest: Manifest) -> Resolved:
    runtime = request.runtime or manifest.runtime or manifest.name
    if manifest.runtime and runtime != manifest.runtime:
        raise UnprocessableError(
            f"runtime {runtime!r} does not match plugin {manifest.name}'s runtime "
            f"{manifest.runtime!r}", field="runtime")
    cpu = request.cpu_cores or manifest.resources.cpu_cores or DEFAULT_CPU
    memory = request.memory_mb or manifest.resources.memory_mb or DEFAULT_MEMORY_MB
    body: dict[str, Any] = {
        "plugin": manifest.name,
        "runtime": runtime,
        "kernel_cmdline": request.kernel_cmdline,
        "resources": {"cpu_cores": cpu, "memory_mb": memory},
        "api": {"host": request.api_host, "port": request.api_port},
        "manifest": manifest_to_dict(manifest),
        "restart_policy": request.restart_policy.to_json(),
    }
    body.update({key: request.config[key] for key in CONFIG_PASSTHROUGH
                 if request.config.get(key) is not None})
    config = parse_config(body)
    # Path documents cannot be resolved here (volar does it at install time): refuse them
    # now, with the field named, instead of failing the boot later.
    reject_path_documents(merge_cloud_init(manifest.cloud_init, config.cloud_init))
    network = effective_network(config)
    return Resolved(
        request=request,
        manifest=manifest,
        runtime=runtime,
        cpu_cores=cpu,
        memory_mb=memory,
        kernel_extra=request.kernel_cmdline,
        api_host=request.api_host,
        api_port=request.api_port,
        network_mode=parse_mode(network.mode if network is not None else None),
        config=config,
    )


def network_mode_of(config: VMConfig) -> NetworkMode:
    """The config's network mode (its own ``network``, else the manifest's, else bridged)."""
    network = effective_network(config)
    return parse_mode(network.mode if network is not None else None)


def launch_fields(cfg: Config, name: str, config: VMConfig, *, mode: NetworkMode, ip: str,
                  rootfs: bool, policy: RestartPolicy | None = None) -> dict[str, Any]:
    """The record fields a boot derives from ``config`` (422 if the manifest cannot fit)."""
    net = ipaddress.IPv4Network(cfg.subnet)
    ip_arg = ip if mode.ip_on_cmdline else ""
    base = f"{BASE_CMDLINE} ip={ip_arg}::{cfg.host_ip}:{net.netmask}:{name}:eth0:off"
    if config.kernel_cmdline:
        base = f"{base} {config.kernel_cmdline}"
    api_host = config.api.host or cfg.advertise_host
    api_port = config.api.port or cfg.advertise_port
    boot_args = {
        "volant.runtime": config.runtime,
        "volant.plugin": config.manifest.name,
        "volant.api_host": api_host,
        "volant.api_port": str(api_port),
        "volant.boot": "rootfs" if rootfs else "initramfs",
    }
    if rootfs:
        boot_args["volant.rootfs_device"] = "vda"
        boot_args["volant.rootfs_fstype"] = "ext4"
    budget = CMDLINE_LIMIT - 1 - len(base) - sum(len(k) + len(v) + 2
                                                 for k, v in boot_args.items())
    budget -= len("volant.manifest=") + 1
    boot_args["volant.manifest"] = encode_for_cmdline(config.manifest, budget=budget)
    spec = config.restart_policy
    base_policy = policy if policy is not None else RestartPolicy()
    return {
        "runtime": config.runtime,
        "cpu_cores": config.resources.cpu_cores,
        "memory_mb": config.resources.memory_mb,
        "network_mode": mode.value,
        "kernel_cmdline": base,
        "boot_args": boot_args,
        "restart_policy": attrs.evolve(base_policy, name=RestartPolicyName(spec.name),
                                       max_retries=spec.max_retries),
    }
