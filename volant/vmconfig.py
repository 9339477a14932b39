"""Per-VM configuration: model, strict parsing, PATCH merge rules, versions and history.

The model (upstream section 4, plus ``restart_policy``) is pure: no I/O. Parsing
is total over decoded JSON: it returns a valid :class:`VMConfig` or raises
``ValidationError`` (400: wrong type, unknown field, missing required field) or
``UnprocessableError`` (422: breaks a rule). Messages start with the field path,
e.g. ``resources.cpu_cores: must be between 1 and 256``. ``cloud_init``,
``network``, ``devices``, ``initramfs``, ``rootfs`` and the embedded
``manifest`` are checked with the manifest's own rules (``volant.manifest``);
a config's own ``cloud_init`` may not use ``path`` documents (400, see
``volant.cloudinit``).

PATCH merge rules (``parse_patch`` + ``apply_patch``)
-----------------------------------------------------
A patch is a JSON object whose keys are a subset of the fields below; any other
key (``plugin`` included: a VM never changes plugin) is a 400 and nothing changes.

==================  =================  ============================================
field               merge              ``null``
==================  =================  ============================================
runtime             replace            400 (required; the VM always has one)
kernel_cmdline      replace            clears ("" clears too)
kernel_override     replace            clears ("" clears too)
resources           **deep merge**:    400; each key may be omitted, not null
                    ``cpu_cores`` and
                    ``memory_mb`` each
                    replaced if given
api                 **deep merge**:    ``api: null`` clears both; ``api.host: null``
                    ``host``/``port``  or ``api.port: null`` clears that one
manifest            replace whole      400 (required). ``name`` must stay the plugin
devices             replace whole      clears (the manifest's devices apply again)
metadata            replace whole map  clears (as upstream; no per-key merge)
expose              replace the list   clears; ``[]`` clears as well
cloud_init          replace whole      clears (the manifest's cloud-init applies)
network             replace whole      clears (the manifest's network applies).
                    **Applied**, unlike upstream, which accepted and ignored it
initramfs, rootfs   replace whole      clears
restart_policy      replace whole      resets to the default (on-failure, 5)
==================  =================  ============================================

The patched config is validated as a whole (e.g. the manifest must still name
the plugin); if anything fails the caller's config is untouched — these
functions never mutate, and ``ConfigStore`` writes only a validated result.

Versions: ``vms/<name>/config.toml`` holds ``{version, updated_at, config}``
(codec ``vm-config`` v1, the file shape ``VMManager`` writes at create). Each
update first archives the current version to ``vms/<name>/history/<n>.toml``
and then replaces ``config.toml`` with version ``n+1``: a crash in between
leaves the current version intact and at worst a history file equal to it.
``history()`` lists every version, the current one first (as upstream, whose
history table holds every version including the current).

``restart_required`` compares a running instance's config with the current one:
every field except ``metadata`` and ``restart_policy`` needs a reboot.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from volant.cloudinit import reject_path_documents
from volant.errors import NotFoundError, UnprocessableError, ValidationError
from volant.manifest import (
    MAX_CPU_CORES,
    MAX_MEMORY_MB,
    CloudInit,
    Devices,
    Initramfs,
    Manifest,
    Network,
    Rootfs,
    json_type,
    manifest_to_dict,
    parse_manifest,
)
from volant.names import validate_name
from volant.store import SnapshotCodec, SnapshotDecodeError, StateStore

__all__ = [
    "CONFIG_CODEC",
    "EXPOSE_MODES",
    "HISTORY_CODEC",
    "PATCH_FIELDS",
    "ApiEndpoint",
    "ConfigPatch",
    "ConfigResources",
    "ConfigStore",
    "Expose",
    "HistoryEntry",
    "RestartPolicySpec",
    "VMConfig",
    "VersionedConfig",
    "apply_patch",
    "config_to_dict",
    "effective_devices",
    "effective_network",
    "parse_config",
    "parse_patch",
    "restart_required",
]

CONFIG_CODEC = SnapshotCodec("vm-config", 1)
HISTORY_CODEC = SnapshotCodec("vm-config-history", 1)
EXPOSE_MODES = ("bridged", "bridge", "vsock", "dhcp")
EXPOSE_PROTOCOLS = ("tcp", "udp")
RESTART_POLICIES = ("no", "always", "on-failure")
MAX_EXTRA_CMDLINE = 1024
MAX_METADATA_BYTES = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: Fields that need the VM to reboot to take effect (all but these two).
_LIVE_FIELDS = frozenset({"metadata", "restart_policy"})


# --------------------------------------------------------------------------- model


@attrs.frozen(kw_only=True)
class ConfigResources:
    cpu_cores: int
    memory_mb: int


@attrs.frozen(kw_only=True)
class ApiEndpoint:
    """Where the guest is told to call volantd back; empty/None means the default."""

    host: str = ""
    port: int | None = None


@attrs.frozen(kw_only=True)
class Expose:
    port: int
    host_port: int
    name: str = ""
    protocol: str = "tcp"
    mode: str = ""


@attrs.frozen(kw_only=True)
class RestartPolicySpec:
    """The user's restart policy as stored; the VM actor turns it into its runtime policy."""

    name: str = "on-failure"
    max_retries: int = 5

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "max_retries": self.max_retries}


@attrs.frozen(kw_only=True)
class VMConfig:
    plugin: str
    runtime: str
    resources: ConfigResources
    manifest: Manifest
    kernel_cmdline: str = ""
    kernel_override: str = ""
    api: ApiEndpoint = attrs.field(factory=ApiEndpoint)
    devices: Devices | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    expose: tuple[Expose, ...] = ()
    cloud_init: CloudInit | None = None
    network: Network | None = None
    initramfs: Initramfs | None = None
    rootfs: Rootfs | None = None
    restart_policy: RestartPolicySpec = attrs.field(factory=RestartPolicySpec)


# ------------------------------------------------------------------ field helpers


def _bad_type(field: str, expected: str, value: object) -> ValidationError:
    return ValidationError(
        f"{field}: expected {expected}, got {json_type(value)}", field=field
    )


def _rule(field: str, message: str) -> UnprocessableError:
    return UnprocessableError(f"{field}: {message}", field=field)


def _object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad_type(field, "an object", value)
    return value


def _no_unknown(body: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        field = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ValidationError(f"{field}: unknown field", field=field)


def _string(value: object, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad_type(field, "a string", value)
    return value.strip()


def _integer(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_type(field, "an integer", value)
    return value


def _single_line(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise _rule(field, f"is too long ({len(value)} characters, at most {limit})")
    if _CONTROL.search(value):
        raise _rule(field, "must not contain control characters")
    return value


#: volant.* kernel arguments an operator may set (everything else volantd composes itself).
USER_VOLANT_KEYS = frozenset({"volant.debug_shell"})


def _check_kernel_cmdline(value: str) -> str:
    _single_line(value, "kernel_cmdline", MAX_EXTRA_CMDLINE)
    for arg in value.split():
        key = arg.split("=", 1)[0]
        if key.startswith("volant.") and key not in USER_VOLANT_KEYS:
            raise _rule("kernel_cmdline", f"{key} is set by volantd; of the volant.* keys only "
                        f"{', '.join(sorted(USER_VOLANT_KEYS))} may be given")
    return value


def _check_kernel_override(value: str) -> str:
    _single_line(value, "kernel_override", 4096)
    if value and not value.startswith("/"):
        raise _rule("kernel_override", "must be an absolute host path")
    return value


def _probe(section: str, raw: Any) -> Manifest:
    """Validate one section with the manifest's rules by parsing a throwaway manifest.

    Error fields come out as ``<section>.<key>``, the same path as in a config.
    """
    body: dict[str, Any] = {
        "name": "config-probe",
        "version": "0",
        "resources": {"cpu_cores": 1, "memory_mb": 1},
        section: raw,
    }
    if section not in ("initramfs", "rootfs"):
        body["initramfs"] = {"url": "/probe"}
    return parse_manifest(body)


def _section(raw: Any, section: str) -> Any:
    if raw is None:
        return None
    _object(raw, section)
    value = getattr(_probe(section, raw), section)
    if section == "cloud_init":
        reject_path_documents(value)
    return value


def _resources(raw: Any, field: str = "resources") -> ConfigResources:
    body = _object(raw, field)
    _no_unknown(body, ("cpu_cores", "memory_mb"), field)
    for key in ("cpu_cores", "memory_mb"):
        if body.get(key) is None:
            raise ValidationError(f"{field}.{key}: required field is missing",
                                  field=f"{field}.{key}")
    resources = ConfigResources(
        cpu_cores=_integer(body["cpu_cores"], f"{field}.cpu_cores"),
        memory_mb=_integer(body["memory_mb"], f"{field}.memory_mb"),
    )
    _check_resources(resources)
    return resources


def _check_resources(resources: ConfigResources) -> None:
    if not 1 <= resources.cpu_cores <= MAX_CPU_CORES:
        raise _rule("resources.cpu_cores", f"must be between 1 and {MAX_CPU_CORES}")
    if not 1 <= resources.memory_mb <= MAX_MEMORY_MB:
        raise _rule("resources.memory_mb", f"must be between 1 and {MAX_MEMORY_MB}")


def _api_host(value: object) -> str:
    host = _string(value, "api.host")
    _single_line(host, "api.host", 253)
    if " " in host:
        raise _rule("api.host", "must not contain spaces")
    return host


def _api_port(value: object) -> int | None:
    if value is None:
        return None
    port = _integer(value, "api.port")
    if port == 0:
        return None  # upstream: 0 means unset
    if not 1 <= port <= 65535:
        raise _rule("api.port", "must be between 1 and 65535")
    return port


def _api(raw: Any) -> ApiEndpoint:
    if raw is None:
        return ApiEndpoint()
    body = _object(raw, "api")
    _no_unknown(body, ("host", "port"), "api")
    return ApiEndpoint(host=_api_host(body.get("host")), port=_api_port(body.get("port")))


def _expose_list(raw: Any) -> tuple[Expose, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad_type("expose", "an array", raw)
    items: list[Expose] = []
    for index, entry in enumerate(raw):
        where = f"expose[{index}]"
        body = _object(entry, where)
        _no_unknown(body, ("name", "protocol", "port", "host_port", "mode"), where)
        ports: dict[str, int] = {}
        for key in ("port", "host_port"):
            value = body.get(key)
            if value is None:
                raise ValidationError(f"{where}.{key}: required field is missing",
                                      field=f"{where}.{key}")
            port = _integer(value, f"{where}.{key}")
            if not 1 <= port <= 65535:
                raise _rule(f"{where}.{key}", "must be between 1 and 65535")
            ports[key] = port
        protocol = _string(body.get("protocol"), f"{where}.protocol").lower() or "tcp"
        if protocol not in EXPOSE_PROTOCOLS:
            raise _rule(f"{where}.protocol", "must be tcp or udp")
        mode = _string(body.get("mode"), f"{where}.mode").lower()
        if mode and mode not in EXPOSE_MODES:
            raise _rule(f"{where}.mode", f"must be one of {', '.join(EXPOSE_MODES)}")
        name = _single_line(_string(body.get("name"), f"{where}.name"), f"{where}.name", 63)
        items.append(Expose(port=ports["port"], host_port=ports["host_port"], name=name,
                            protocol=protocol, mode=mode))
    return tuple(items)


def _check_metadata_value(value: Any, field: str, depth: int = 0) -> None:
    """Any JSON value but null (TOML, where configs live, has no null), at most 32 deep."""
    if depth > 32:
        raise _rule(field, "is nested too deeply")
    if value is None:
        raise _rule(field, "null is not allowed inside metadata (omit the key instead)")
    if isinstance(value, float) and not math.isfinite(value):
        raise _rule(field, "must be a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not (
            -(2**63) <= value < 2**63):
        raise _rule(field, "integers must fit in 64 bits")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise _rule(field, "keys must be non-empty strings")
            _check_metadata_value(item, f"{field}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_metadata_value(item, f"{field}[{index}]", depth + 1)
    elif not isinstance(value, str | int | float | bool):
        raise _bad_type(field, "a JSON value", value)


def _metadata(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    body = _object(raw, "metadata")
    _check_metadata_value(body, "metadata")
    if len(repr(body)) > MAX_METADATA_BYTES:
        raise _rule("metadata", f"is larger than {MAX_METADATA_BYTES} bytes")
    return dict(body)


def _restart_policy(raw: Any) -> RestartPolicySpec:
    if raw is None:
        return RestartPolicySpec()
    if isinstance(raw, str):
        raw = {"name": raw}
    body = _object(raw, "restart_policy")
    _no_unknown(body, ("name", "max_retries"), "restart_policy")
    name = _string(body.get("name"), "restart_policy.name") or "on-failure"
    if name not in RESTART_POLICIES:
        raise _rule("restart_policy.name", f"must be one of {', '.join(RESTART_POLICIES)}")
    retries_raw = body.get("max_retries")
    retries = 5 if retries_raw is None else _integer(retries_raw, "restart_policy.max_retries")
    if not 0 <= retries <= 1000:
        raise _rule("restart_policy.max_retries", "must be between 0 and 1000")
    return RestartPolicySpec(name=name, max_retries=retries)


def _embedded_manifest(raw: Any) -> Manifest:
    if raw is None:
        raise ValidationError("manifest: required field is missing", field="manifest")
    _object(raw, "manifest")
    try:
        return parse_manifest(raw)
    except ValidationError as exc:  # UnprocessableError included; keep its class
        field = f"manifest.{exc.details.get('field', '')}".rstrip(".")
        raise type(exc)(f"manifest.{exc.message}", **{**exc.details, "field": field}) from None


# ------------------------------------------------------------------------- parsing

CONFIG_FIELDS = (
    "plugin", "runtime", "kernel_cmdline", "kernel_override", "resources", "api", "manifest",
    "devices", "metadata", "expose", "cloud_init", "network", "initramfs", "rootfs",
    "restart_policy",
)


def parse_config(data: Any) -> VMConfig:
    """A valid config from decoded JSON, or a 400/422 naming the field."""
    body = _object(data, "config")
    _no_unknown(body, CONFIG_FIELDS, "")
    plugin = _string(body.get("plugin"), "plugin")
    if not plugin:
        raise ValidationError("plugin: required field is missing", field="plugin")
    if body.get("resources") is None:
        raise ValidationError("resources: required field is missing", field="resources")
    config = VMConfig(
        plugin=plugin,
        runtime=_string(body.get("runtime"), "runtime"),
        resources=_resources(body["resources"]),
        manifest=_embedded_manifest(body.get("manifest")),
        kernel_cmdline=_check_kernel_cmdline(_string(body.get("kernel_cmdline"),
                                                     "kernel_cmdline")),
        kernel_override=_check_kernel_override(_string(body.get("kernel_override"),
                                                       "kernel_override")),
        api=_api(body.get("api")),
        devices=_section(body.get("devices"), "devices"),
        metadata=_metadata(body.get("metadata")),
        expose=_expose_list(body.get("expose")),
        cloud_init=_section(body.get("cloud_init"), "cloud_init"),
        network=_section(body.get("network"), "network"),
        initramfs=_section(body.get("initramfs"), "initramfs"),
        rootfs=_section(body.get("rootfs"), "rootfs"),
        restart_policy=_restart_policy(body.get("restart_policy")),
    )
    if not config.runtime:
        config = attrs.evolve(config, runtime=config.manifest.runtime or config.manifest.name)
    validate_config(config)
    return config


def validate_config(config: VMConfig) -> None:
    """Cross-field rules (each section was checked when parsed)."""
    try:
        validate_name(config.plugin, "plugin")
    except ValidationError as exc:
        raise _rule("plugin", exc.message) from None
    if config.manifest.name.lower() != config.plugin.lower():
        raise _rule("manifest.name", f"must be the VM's plugin {config.plugin!r}, "
                                     f"got {config.manifest.name!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", config.runtime):
        raise _rule("runtime", "must be 1-63 letters, digits, '.', '_' or '-'")
    _check_resources(config.resources)


def _omit_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _omit_empty(item) for key, item in value.items()
                if item not in (None, "", (), [], {})}
    return value


def _section_to_dict(section: str, value: Any) -> Any:
    if value is None:
        return None
    probe = attrs.evolve(_probe_base(), **{section: value})
    return manifest_to_dict(probe).get(section)


@functools.cache
def _probe_base() -> Manifest:
    return parse_manifest({"name": "config-probe", "version": "0",
                           "resources": {"cpu_cores": 1, "memory_mb": 1},
                           "initramfs": {"url": "/probe"}})


def config_to_dict(config: VMConfig) -> dict[str, Any]:
    """JSON/TOML-ready dict; empty optional fields are left out (TOML has no null)."""
    body: dict[str, Any] = {
        "plugin": config.plugin,
        "runtime": config.runtime,
        "kernel_cmdline": config.kernel_cmdline,
        "kernel_override": config.kernel_override,
        "resources": {"cpu_cores": config.resources.cpu_cores,
                      "memory_mb": config.resources.memory_mb},
        "api": _omit_empty({"host": config.api.host, "port": config.api.port}),
        "manifest": manifest_to_dict(config.manifest),
        "devices": _section_to_dict("devices", config.devices),
        "metadata": config.metadata,
        "expose": [_omit_empty(attrs.asdict(item)) for item in config.expose],
        "cloud_init": _section_to_dict("cloud_init", config.cloud_init),
        "network": _section_to_dict("network", config.network),
        "initramfs": _section_to_dict("initramfs", config.initramfs),
        "rootfs": _section_to_dict("rootfs", config.rootfs),
        "restart_policy": config.restart_policy.to_json(),
    }
    result: dict[str, Any] = {
        key: value for key, value in body.items() if value not in (None, "", [], {})
    }
    return result


# --------------------------------------------------------------------------- patch

PATCH_FIELDS = (
    "runtime", "kernel_cmdline", "kernel_override", "resources", "api", "manifest", "devices",
    "metadata", "expose", "cloud_init", "network", "initramfs", "rootfs", "restart_policy",
)


@attrs.frozen(kw_only=True)
class ConfigPatch:
    """A parsed PATCH body: only the keys that were sent, each already parsed."""

    #: ``None`` as a value means "clear" (see the merge rules in the module docstring).
    fields: dict[str, Any] = attrs.field(factory=dict)

    def is_empty(self) -> bool:
        return not self.fields


def _patch_resources(raw: Any) -> dict[str, int]:
    if raw is None:
        raise ValidationError("resources: cannot be null", field="resources")
    body = _object(raw, "resources")
    _no_unknown(body, ("cpu_cores", "memory_mb"), "resources")
    result: dict[str, int] = {}
    for key in ("cpu_cores", "memory_mb"):
        if key in body:
            if body[key] is None:
                raise ValidationError(f"resources.{key}: cannot be null",
                                      field=f"resources.{key}")
            result[key] = _integer(body[key], f"resources.{key}")
    return result


def _patch_api(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    body = _object(raw, "api")
    _no_unknown(body, ("host", "port"), "api")
    result: dict[str, Any] = {}
    if "host" in body:
        result["host"] = _api_host(body["host"])
    if "port" in body:
        result["port"] = _api_port(body["port"])
    return result


_PATCH_PARSERS: dict[str, Callable[[Any], Any]] = {
    "kernel_cmdline": lambda raw: _check_kernel_cmdline(_string(raw, "kernel_cmdline")),
    "kernel_override": lambda raw: _check_kernel_override(_string(raw, "kernel_override")),
    "resources": _patch_resources,
    "api": _patch_api,
    "manifest": _embedded_manifest,
    "devices": lambda raw: _section(raw, "devices"),
    "metadata": lambda raw: _metadata(raw) if raw is not None else None,
    "expose": _expose_list,
    "cloud_init": lambda raw: _section(raw, "cloud_init"),
    "network": lambda raw: _section(raw, "network"),
    "initramfs": lambda raw: _section(raw, "initramfs"),
    "rootfs": lambda raw: _section(raw, "rootfs"),
    "restart_policy": _restart_policy,
}


def _patch_runtime(raw: Any) -> str:
    if raw is None:
        raise ValidationError("runtime: cannot be null", field="runtime")
    runtime = _string(raw, "runtime")
    if not runtime:
        raise _rule("runtime", "must not be empty")
    return runtime


def parse_patch(data: Any) -> ConfigPatch:
    """Parse a PATCH body; each field is type-checked now, the whole result on apply."""
    body = _object(data, "patch")
    if "plugin" in body:
        raise ValidationError("plugin: a VM's plugin cannot be changed; create a new VM",
                              field="plugin")
    _no_unknown(body, PATCH_FIELDS, "")
    fields: dict[str, Any] = {}
    for key, raw in body.items():
        fields[key] = _patch_runtime(raw) if key == "runtime" else _PATCH_PARSERS[key](raw)
    return ConfigPatch(fields=fields)


def apply_patch(config: VMConfig, patch: ConfigPatch) -> VMConfig:
    """The patched config (validated); ``config`` itself is never changed."""
    changes: dict[str, Any] = {}
    for key, value in patch.fields.items():
        if key == "resources":
            changes[key] = attrs.evolve(config.resources, **value)
        elif key == "api":
            changes[key] = ApiEndpoint() if value is None else attrs.evolve(config.api, **value)
        elif key in ("kernel_cmdline", "kernel_override"):
            changes[key] = value or ""
        elif key == "metadata":
            changes[key] = value or {}
        elif key == "expose":
            changes[key] = value or ()
        else:
            changes[key] = value
    patched = attrs.evolve(config, **changes)
    validate_config(patched)
    return patched


def effective_devices(config: VMConfig) -> Devices | None:
    """The config's ``devices`` when set (they override the manifest's), else the manifest's."""
    return config.devices if config.devices is not None else config.manifest.devices


def effective_network(config: VMConfig) -> Network | None:
    """The config's ``network`` when set, else the manifest's."""
    return config.network if config.network is not None else config.manifest.network


def restart_required(running: VMConfig, current: VMConfig) -> bool:
    """Whether the running instance (booted with ``running``) differs from ``current``
    in anything that only takes effect at boot (all but metadata and restart policy)."""
    before = config_to_dict(running)
    after = config_to_dict(current)
    keys = (set(before) | set(after)) - _LIVE_FIELDS
    return any(before.get(key) != after.get(key) for key in keys)


# ------------------------------------------------------------------------ versions


def utc_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@attrs.frozen(kw_only=True)
class VersionedConfig:
    version: int
    updated_at: str
    config: VMConfig

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "updated_at": self.updated_at,
                "config": config_to_dict(self.config)}


@attrs.frozen(kw_only=True)
class HistoryEntry:
    """Upstream's history row; ``id`` is the version (our history has no other key)."""

    id: int
    version: int
    updated_at: str
    config: VMConfig

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "updated_at": self.updated_at,
                "config": config_to_dict(self.config)}


def _versioned_from_doc(doc: Mapping[str, Any], where: str) -> VersionedConfig:
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SnapshotDecodeError(f"{where}: invalid version {version!r}")
    updated_at = doc.get("updated_at", "")
    if not isinstance(updated_at, str):
        raise SnapshotDecodeError(f"{where}: invalid updated_at")
    try:
        config = parse_config(doc.get("config"))
    except ValidationError as exc:
        raise SnapshotDecodeError(f"{where}: invalid config: {exc.message}") from exc
    return VersionedConfig(version=version, updated_at=updated_at, config=config)


class ConfigStore:
    """Reads and writes one VM's config files; its VM actor is the only caller (one writer).

    Synchronous file I/O: call it from a worker thread in trio code.
    """

    def __init__(self, store: StateStore, vm_name: str, *, keep_history: int = 100) -> None:
        self.store = store
        self.vm_name = validate_name(vm_name, "vm name")
        self.keep_history = keep_history

    @property
    def config_path(self) -> str:
        return f"vms/{self.vm_name}/config.toml"

    def history_path(self, version: int) -> str:
        return f"vms/{self.vm_name}/history/{version}.toml"

    def load(self) -> VersionedConfig | None:
        """The current version, ``None`` when the VM has no config file."""
        doc = self.store.read(self.config_path, CONFIG_CODEC)
        return None if doc is None else _versioned_from_doc(doc, self.config_path)

    def require(self) -> VersionedConfig:
        current = self.load()
        if current is None:
            raise NotFoundError(f"vm {self.vm_name} has no config")
        return current

    def create(self, config: VMConfig, *, now: str | None = None) -> VersionedConfig:
        """Write version 1 (a fresh VM)."""
        entry = VersionedConfig(version=1, updated_at=now or utc_now(), config=config)
        self.store.write(self.config_path, CONFIG_CODEC, entry.to_json())
        return entry

    def update(self, config: VMConfig, *, now: str | None = None) -> VersionedConfig:
        """Archive the current version, then make ``config`` version n+1."""
        validate_config(config)
        current = self.require()
        self.store.write(self.history_path(current.version), HISTORY_CODEC, current.to_json())
        entry = VersionedConfig(version=current.version + 1, updated_at=now or utc_now(),
                                config=config)
        self.store.write(self.config_path, CONFIG_CODEC, entry.to_json())
        self._prune(entry.version)
        return entry

    def patch(self, patch: ConfigPatch, *, now: str | None = None) -> VersionedConfig:
        """Apply ``patch`` to the current version; an invalid patch raises and writes nothing."""
        current = self.require()
        patched = apply_patch(current.config, patch)
        return self.update(patched, now=now)

    def _history_versions(self) -> list[int]:
        versions = []
        for name in self.store.list_dir(f"vms/{self.vm_name}/history"):
            stem, dot, ext = name.partition(".")
            if dot and ext == "toml" and stem.isdigit():
                versions.append(int(stem))
        return sorted(versions, reverse=True)

    def _prune(self, current_version: int) -> None:
        for version in self._history_versions()[self.keep_history:]:
            self.store.delete(self.history_path(version))

    def history(self, limit: int | None = None) -> list[HistoryEntry]:
        """Every version, newest (the current one) first; at most ``limit`` entries."""
        current = self.require()
        entries = [HistoryEntry(id=current.version, version=current.version,
                                updated_at=current.updated_at, config=current.config)]
        for version in self._history_versions():
            if limit is not None and len(entries) >= limit:
                break
            if version >= current.version:
                continue  # archived just before a crash: the same as the current one
            doc = self.store.read(self.history_path(version), HISTORY_CODEC)
            if doc is None:
                continue
            old = _versioned_from_doc(doc, self.history_path(version))
            entries.append(HistoryEntry(id=old.version, version=old.version,
                                        updated_at=old.updated_at, config=old.config))
        return entries[:limit] if limit is not None else entries

    def get_version(self, version: int) -> VersionedConfig | None:
        current = self.require()
        if version == current.version:
            return current
        doc = self.store.read(self.history_path(version), HISTORY_CODEC)
        return None if doc is None else _versioned_from_doc(doc, self.history_path(version))
