"""The plugin manifest: model, (de)serialisation, normalisation, validation, cmdline transport.

A manifest describes what a plugin's microVM boots (rootfs and/or initramfs,
extra disks), how big it is, what workload the guest agent runs and which
actions it exposes. It arrives as untrusted JSON (API bodies, files, the
kernel command line), so :func:`parse_manifest` is total: for *any* decoded
JSON value it either returns a valid, normalised :class:`Manifest` or raises
:class:`~volant.errors.ValidationError` (400: malformed, wrong types, unknown
fields) or :class:`~volant.errors.UnprocessableError` (422: well-formed but
breaks a rule). Every message starts with the offending field's path, e.g.
``resources.cpu_cores: expected an integer, got string``.

Decisions where we deliberately differ from the original (see
``docs/architecture.md``):

* Unknown fields are rejected (400) at every level, as the original's JSON
  schema (``additionalProperties: false``) says; only a top-level ``$schema``
  string is accepted and dropped.
* ``name`` must be a DNS label (``volant.names`` rule, no ``.`` or ``_``): it
  becomes a file name, a label value and a kernel-cmdline value.
  ``runtime`` may also use ``.`` and ``_`` but nothing cmdline-unsafe.
* Checksums must be ``sha256:<64 hex>`` or a bare 64-hex sha256 (the original
  accepted anything containing ``:`` or at least 32 characters).
* ``cloud_init.seed_mode`` is ``iso9660`` (the ``cidata`` ISO cloud-init finds
  everywhere) by default, ``vfat`` on request; the default is omitted from
  :func:`manifest_to_dict` so output stays valid against the original schema,
  whose enum lists only ``vfat``. Only the ``NoCloud`` datasource is accepted,
  since that is the only seed we build.
* ``resources``, ``name`` and ``version`` are required fields (400 when
  missing or null); null is accepted for optional objects and for lists and
  maps (Go marshals nil ones as null) and means "absent".
* An empty ``health_check.endpoint`` drops the health check; an empty
  ``network.mode`` means ``bridged`` (the original's behaviour for no network
  block).
* Upper bounds: at most 256 vCPUs, 1 TiB of memory, timeouts of one day.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, mapping_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn

from kestrel.codec import CMDLINE_LIMIT, MANIFEST_KEY, encode_manifest
from volant.errors import UnprocessableError, ValidationError
from volant.names import validate_name

__all__ = [
    "ACTION_METHODS",
    "DEFAULT_CMDLINE_BUDGET",
    "DEFAULT_SCHEMA_VERSION",
    "DEFAULT_SEED_MODE",
    "MAX_CPU_CORES",
    "MAX_MEMORY_MB",
    "Action",
    "CloudInit",
    "CloudInitDoc",
    "Devices",
    "Disk",
    "HealthCheck",
    "Initramfs",
    "Manifest",
    "Network",
    "Resources",
    "Rootfs",
    "Workload",
    "checksum_hex",
    "encode_for_cmdline",
    "manifest_from_dict",
    "manifest_to_dict",
    "normalize",
    "parse_manifest",
    "validate",
]

DEFAULT_SCHEMA_VERSION = "1"
DEFAULT_SEED_MODE = "iso9660"
SEED_MODES = ("iso9660", "vfat")
DISK_FORMATS = ("raw", "qcow2")
NETWORK_MODES = ("vsock", "bridged", "dhcp")
ACTION_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_CPU_CORES = 256
MAX_MEMORY_MB = 1024 * 1024  # 1 TiB
MAX_TIMEOUT_MS = 24 * 60 * 60 * 1000
#: Room left for ``volant.manifest=...`` once the base args, ``ip=`` and the
#: other ``volant.*`` keys have taken their share of the kernel command line.
DEFAULT_CMDLINE_BUDGET = CMDLINE_LIMIT - 512

_RUNTIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ACTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CHECKSUM = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_PCI_ALLOW = re.compile(r"^[0-9a-f]{4}:(?:[0-9a-f]{4}|\*)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s")
_PATH_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_REPORTED_ERRORS = 10


# --------------------------------------------------------------------------- model


@attrs.frozen(kw_only=True)
class Rootfs:
    url: str = ""
    checksum: str = ""
    format: str = ""


@attrs.frozen(kw_only=True)
class Initramfs:
    url: str = ""
    checksum: str = ""


@attrs.frozen(kw_only=True)
class Disk:
    name: str = ""
    source: str = ""
    checksum: str = ""
    format: str = ""
    readonly: bool = False
    target: str = ""


@attrs.frozen(kw_only=True)
class Resources:
    cpu_cores: int
    memory_mb: int


@attrs.frozen(kw_only=True)
class Action:
    description: str = ""
    method: str = ""
    path: str = ""
    timeout_ms: int = 0


@attrs.frozen(kw_only=True)
class HealthCheck:
    endpoint: str = ""
    timeout_ms: int = 0


@attrs.frozen(kw_only=True)
class Workload:
    type: str = ""
    base_url: str = ""
    entrypoint: tuple[str, ...] = ()
    env: dict[str, str] = attrs.field(factory=dict)
    workdir: str = ""


@attrs.frozen(kw_only=True)
class CloudInitDoc:
    inline: bool = False
    content: str = ""
    path: str = ""


@attrs.frozen(kw_only=True)
class CloudInit:
    datasource: str = ""
    seed_mode: str = DEFAULT_SEED_MODE
    user_data: CloudInitDoc | None = None
    meta_data: CloudInitDoc | None = None
    network_config: CloudInitDoc | None = None


@attrs.frozen(kw_only=True)
class Network:
    mode: str = ""
    subnet: str = ""
    gateway: str = ""
    auto_assign: bool = False


@attrs.frozen(kw_only=True)
class Devices:
    pci_passthrough: tuple[str, ...] = ()
    allowlist: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Manifest:
    schema_version: str = ""
    name: str
    version: str
    runtime: str = ""
    rootfs: Rootfs | None = None
    initramfs: Initramfs | None = None
    disks: tuple[Disk, ...] = ()
    image: str = ""
    image_digest: str = ""
    resources: Resources
    actions: dict[str, Action] = attrs.field(factory=dict)
    health_check: HealthCheck | None = None
    workload: Workload | None = None
    cloud_init: CloudInit | None = None
    network: Network | None = None
    devices: Devices | None = None
    enabled: bool = False
    openapi: str = ""
    labels: dict[str, str] = attrs.field(factory=dict)


# ------------------------------------------------------------------ (de)serialisation


class _WrongType(TypeError):
    """A JSON value of the wrong type; the message is shown to the user."""


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _structure_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise _WrongType(f"expected a string, got {json_type(value)}")
    return value


def _structure_int(value: object, _: type) -> int:
    # bool is an int in Python but not in JSON; floats like 2.0 are not integers either.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _WrongType(f"expected an integer, got {json_type(value)}")
    return value


def _structure_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise _WrongType(f"expected a boolean, got {json_type(value)}")
    return value


_Hook = Callable[[Any, Any], Any]


def _guarded(expected: type, label: str, inner: _Hook, null: Any = None) -> _Hook:
    """Check the JSON container type before cattrs iterates it (a string is iterable).

    ``null`` is what a JSON null becomes; ``None`` means null is rejected.
    """

    def hook(value: Any, target: Any) -> Any:
        if value is None and null is not None:
            return null()
        if not isinstance(value, expected):
            raise _WrongType(f"expected {label}, got {json_type(value)}")
        return inner(value, target)

    return hook


def _is_tuple(target: Any) -> bool:
    return typing.get_origin(target) is tuple


def _is_dict(target: Any) -> bool:
    return typing.get_origin(target) is dict


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(
        forbid_extra_keys=True,
        detailed_validation=True,
        unstruct_collection_overrides={tuple: list},
    )
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_factory(
        attrs.has,
        lambda cls: _guarded(
            dict, "an object", make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)
        ),
    )
    # Go marshals nil slices and maps as null: treat null lists and maps as empty.
    conv.register_structure_hook_factory(
        _is_tuple,
        lambda target: _guarded(
            list, "an array", homogenous_tuple_structure_factory(target, conv), null=tuple
        ),
    )
    conv.register_structure_hook_factory(
        _is_dict,
        lambda target: _guarded(
            dict, "an object", mapping_structure_factory(target, conv), null=dict
        ),
    )
    # Fields equal to their default (None, "", empty, False) are left out of the JSON.
    conv.register_unstructure_hook_factory(
        attrs.has, lambda cls: make_dict_unstructure_fn(cls, conv, _cattrs_omit_if_default=True)
    )
    return conv


_converter = _make_converter()


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join_path(path: str, segment: str | int) -> str:
    if isinstance(segment, int):
        return f"{path}[{segment}]"
    if _PATH_KEY.fullmatch(segment):
        return f"{path}.{segment}" if path else segment
    return f"{path}[{_short(segment)!r}]"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _WrongType):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field is missing"
    return f"invalid value ({_short(str(exc), 80)})"


def _flatten(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    """Yield ``(field path, message)`` for every leaf of a cattrs error tree."""
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, attr_note in with_notes:
            yield from _flatten(sub, _join_path(path, attr_note.name))
        for sub in without:
            yield from _flatten(sub, path)
    elif isinstance(exc, IterableValidationError):
        with_index, without = exc.group_exceptions()
        for sub, index_note in with_index:
            index = index_note.index
            yield from _flatten(
                sub, _join_path(path, index if isinstance(index, int) else str(index))
            )
        for sub in without:
            yield from _flatten(sub, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields)[:_MAX_REPORTED_ERRORS]:
            yield _join_path(path, key), "unknown field"
    else:
        yield path, _describe(exc)


def _structure_error(exc: BaseException) -> ValidationError:
    problems = [
        {"field": path or "manifest", "error": message} for path, message in _flatten(exc, "")
    ]
    if not problems:  # pragma: no cover - cattrs always has a leaf
        problems = [{"field": "manifest", "error": "invalid manifest"}]
    first = problems[0]
    message = f"{first['field']}: {first['error']}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem(s))"
    return ValidationError(message, field=first["field"], errors=problems[:_MAX_REPORTED_ERRORS])


def parse_manifest(data: Any) -> Manifest:
    """Build a valid, normalised manifest from decoded JSON, or raise a 4xx error."""
    if not isinstance(data, dict):
        raise ValidationError(
            f"manifest: expected a JSON object, got {json_type(data)}", field="manifest"
        )
    body = dict(data)
    schema_ref = body.pop("$schema", None)
    if schema_ref is not None and not isinstance(schema_ref, str):
        raise ValidationError(
            f"$schema: expected a string, got {json_type(schema_ref)}", field="$schema"
        )
    try:
        manifest = _converter.structure(body, Manifest)
    except (cattrs.BaseValidationError, _WrongType) as exc:
        raise _structure_error(exc) from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        # Defensive: cattrs wraps everything under detailed validation, but the
        # contract is "4xx, never a crash" for any JSON input.
        raise ValidationError(f"manifest: malformed ({_short(str(exc), 80)})") from exc
    normalized = normalize(manifest)
    validate(normalized)
    return normalized


manifest_from_dict = parse_manifest


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """JSON-ready dict without empty optional fields (valid against the original schema)."""
    result: dict[str, Any] = _converter.unstructure(manifest)
    return result


# -------------------------------------------------------------------- normalisation


def _lower(value: str, default: str = "") -> str:
    return value.strip().lower() or default


def _normalize_checksum(value: str) -> str:
    return value.strip().lower()


def _normalize_doc(doc: CloudInitDoc | None) -> CloudInitDoc | None:
    if doc is None:
        return None
    return attrs.evolve(doc, path=doc.path.strip())


def _normalize_action(action: Action) -> Action:
    path = action.path.strip()
    if path and not path.startswith("/"):
        path = "/" + path
    return Action(
        description=action.description.strip(),
        method=_lower(action.method, "post").upper(),
        path=path,
        timeout_ms=action.timeout_ms,
    )


def _normalize_datasource(value: str) -> str:
    value = value.strip()
    return "NoCloud" if value.lower() in ("", "nocloud") else value


def normalize(manifest: Manifest) -> Manifest:
    """Return a copy with strings trimmed and defaults applied (upstream 3.1/3.2 rules)."""
    m = manifest
    name = m.name.strip()
    runtime = m.runtime.strip() or name
    rootfs = m.rootfs and Rootfs(
        url=m.rootfs.url.strip(),
        checksum=_normalize_checksum(m.rootfs.checksum),
        format=_lower(m.rootfs.format, "raw"),
    )
    initramfs = m.initramfs and Initramfs(
        url=m.initramfs.url.strip(), checksum=_normalize_checksum(m.initramfs.checksum)
    )
    disks = tuple(
        Disk(
            name=disk.name.strip(),
            source=disk.source.strip(),
            checksum=_normalize_checksum(disk.checksum),
            format=_lower(disk.format, "raw"),
            readonly=disk.readonly,
            target=disk.target.strip(),
        )
        for disk in m.disks
    )
    actions = {
        key.strip(): _normalize_action(action) for key, action in m.actions.items() if key.strip()
    }
    health_check = m.health_check
    if health_check is not None:
        endpoint = health_check.endpoint.strip()
        health_check = (
            HealthCheck(endpoint=endpoint, timeout_ms=health_check.timeout_ms) if endpoint else None
        )
    workload = m.workload and attrs.evolve(
        m.workload,
        type=_lower(m.workload.type),
        base_url=m.workload.base_url.strip(),
        workdir=m.workload.workdir.strip(),
    )
    cloud_init = m.cloud_init and CloudInit(
        datasource=_normalize_datasource(m.cloud_init.datasource),
        seed_mode=_lower(m.cloud_init.seed_mode, DEFAULT_SEED_MODE),
        user_data=_normalize_doc(m.cloud_init.user_data),
        meta_data=_normalize_doc(m.cloud_init.meta_data),
        network_config=_normalize_doc(m.cloud_init.network_config),
    )
    network = m.network and Network(
        mode=_lower(m.network.mode, "bridged"),
        subnet=m.network.subnet.strip(),
        gateway=m.network.gateway.strip(),
        auto_assign=m.network.auto_assign,
    )
    devices = m.devices and Devices(
        pci_passthrough=tuple(_lower(addr) for addr in m.devices.pci_passthrough),
        allowlist=tuple(_lower(entry) for entry in m.devices.allowlist),
    )
    labels = {key.strip(): value.strip() for key, value in m.labels.items()}
    labels["volant.plugin"] = name
    labels["volant.runtime"] = runtime
    return attrs.evolve(
        m,
        schema_version=m.schema_version.strip() or DEFAULT_SCHEMA_VERSION,
        name=name,
        version=m.version.strip(),
        runtime=runtime,
        rootfs=rootfs,
        initramfs=initramfs,
        disks=disks,
        image=m.image.strip(),
        image_digest=m.image_digest.strip(),
        actions=actions,
        health_check=health_check,
        workload=workload,
        cloud_init=cloud_init,
        network=network,
        devices=devices,
        openapi=m.openapi.strip(),
        labels=labels,
    )


# ----------------------------------------------------------------------- validation


def _fail(field: str, message: str) -> UnprocessableError:
    return UnprocessableError(f"{field}: {message}", field=field)


def _single_line(value: str, field: str, max_length: int = 1024) -> None:
    if len(value) > max_length:
        raise _fail(field, f"is too long ({len(value)} characters, at most {max_length})")
    if _CONTROL.search(value):
        raise _fail(field, "must not contain control characters")


def _required(value: str, field: str, max_length: int = 1024) -> None:
    if not value:
        raise _fail(field, "is required")
    _single_line(value, field, max_length)


def _check_http_url(value: str, field: str) -> None:
    _single_line(value, field, 2048)
    if _WHITESPACE.search(value):
        raise _fail(field, "must not contain whitespace")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        raise _fail(field, f"is not a valid URL: {_short(value)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(field, f"must be an http:// or https:// URL with a host, got {_short(value)!r}")


def _check_absolute_path(value: str, field: str) -> None:
    _single_line(value, field, 4096)
    if not value.startswith("/"):
        raise _fail(field, f"must be an absolute path, got {_short(value)!r}")


def _check_path_or_http_url(value: str, field: str) -> None:
    """An absolute path (on the host or, for health checks, on the workload) or http(s) URL."""
    if value.startswith("/"):
        _check_absolute_path(value, field)
        if _WHITESPACE.search(value):
            raise _fail(field, "must not contain whitespace")
    elif value.lower().startswith(("http://", "https://")):
        _check_http_url(value, field)
    else:
        raise _fail(field, f"must be an absolute path or an http(s):// URL, got {_short(value)!r}")


def _check_media_url(value: str, field: str) -> None:
    """Boot media and disk sources: ``http(s)://``, ``file://`` or an absolute host path."""
    if not value:
        raise _fail(field, "is required")
    lowered = value.lower()
    if lowered.startswith(("http://", "https://")):
        _check_http_url(value, field)
    elif lowered.startswith("file://"):
        _single_line(value, field, 4096)
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. "file://[/x": an unbalanced IPv6 host
            raise _fail(field, f"is not a valid URL: {_short(value)!r}") from None
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise _fail(
                field, f"file:// URL must name an absolute local path, got {_short(value)!r}"
            )
    elif value.startswith("/"):
        _check_absolute_path(value, field)
    else:
        raise _fail(
            field,
            "must be an http://, https:// or file:// URL or an absolute path, "
            f"got {_short(value)!r}",
        )


def _check_checksum(value: str, field: str) -> None:
    if value and not _CHECKSUM.fullmatch(value):
        raise _fail(field, "must be 'sha256:' followed by 64 hex digits, or 64 hex digits")


def checksum_hex(checksum: str) -> str | None:
    """The lower-case sha256 hex digest of a valid checksum field, ``None`` when unset."""
    if not checksum.strip():
        return None
    match = _CHECKSUM.fullmatch(checksum.strip().lower())
    if not match:
        raise _fail("checksum", "must be 'sha256:' followed by 64 hex digits, or 64 hex digits")
    return match.group(1)


def _check_format(value: str, field: str) -> None:
    if value not in DISK_FORMATS:
        raise _fail(field, f"must be one of {', '.join(DISK_FORMATS)}, got {_short(value)!r}")


def _check_timeout(value: int, field: str) -> None:
    if value < 0 or value > MAX_TIMEOUT_MS:
        raise _fail(field, f"must be between 0 and {MAX_TIMEOUT_MS} milliseconds")


def _check_dns_label(value: str, field: str) -> None:
    # volant.names' pattern ends in '$', which also accepts a trailing newline.
    if _CONTROL.search(value):
        raise _fail(field, "must not contain control characters")
    try:
        validate_name(value, field)
    except ValidationError as exc:
        raise UnprocessableError(f"{field}: {exc.message}", field=field) from None


def _validate_resources(resources: Resources) -> None:
    if not 1 <= resources.cpu_cores <= MAX_CPU_CORES:
        raise _fail("resources.cpu_cores", f"must be between 1 and {MAX_CPU_CORES}")
    if not 1 <= resources.memory_mb <= MAX_MEMORY_MB:
        raise _fail("resources.memory_mb", f"must be between 1 and {MAX_MEMORY_MB} (1 TiB)")


def _validate_media(m: Manifest) -> None:
    if m.rootfs is None and m.initramfs is None:
        raise _fail("rootfs", "at least one of rootfs or initramfs is required")
    if m.rootfs is not None:
        _check_media_url(m.rootfs.url, "rootfs.url")
        _check_checksum(m.rootfs.checksum, "rootfs.checksum")
        _check_format(m.rootfs.format, "rootfs.format")
    if m.initramfs is not None:
        _check_media_url(m.initramfs.url, "initramfs.url")
        _check_checksum(m.initramfs.checksum, "initramfs.checksum")
    seen: set[str] = set()
    for index, disk in enumerate(m.disks):
        prefix = f"disks[{index}]"
        _check_dns_label(disk.name, f"{prefix}.name")
        if disk.name in seen:
            raise _fail(f"{prefix}.name", f"duplicate disk name {disk.name!r}")
        seen.add(disk.name)
        _check_media_url(disk.source, f"{prefix}.source")
        _check_checksum(disk.checksum, f"{prefix}.checksum")
        _check_format(disk.format, f"{prefix}.format")
        if disk.target:
            _single_line(disk.target, f"{prefix}.target", 255)
            if _WHITESPACE.search(disk.target):
                raise _fail(f"{prefix}.target", "must not contain whitespace")


def _validate_actions(actions: dict[str, Action]) -> None:
    for key, action in actions.items():
        if not _ACTION_NAME.fullmatch(key):
            raise _fail(
                f"actions[{_short(key)!r}]",
                "action names use letters, digits, '.', '_' and '-' (at most 64, "
                "starting with a letter or digit)",
            )
        prefix = f"actions.{key}"
        _single_line(action.description, f"{prefix}.description", 1024)
        if action.method not in ACTION_METHODS:
            raise _fail(
                f"{prefix}.method",
                f"must be one of {', '.join(ACTION_METHODS)}, got {_short(action.method)!r}",
            )
        _required(action.path, f"{prefix}.path", 2048)
        if not action.path.startswith("/") or _WHITESPACE.search(action.path):
            raise _fail(f"{prefix}.path", "must be a path starting with '/' without whitespace")
        _check_timeout(action.timeout_ms, f"{prefix}.timeout_ms")


def _validate_workload(workload: Workload) -> None:
    if not workload.type:
        raise _fail("workload.type", "is required")
    if workload.type != "http":
        raise _fail("workload.type", f"must be 'http', got {_short(workload.type)!r}")
    if not workload.base_url:
        raise _fail("workload.base_url", "is required for an http workload")
    _check_http_url(workload.base_url, "workload.base_url")
    if not workload.entrypoint or not workload.entrypoint[0].strip():
        raise _fail("workload.entrypoint", "needs at least the program to run as its first item")
    for index, arg in enumerate(workload.entrypoint):
        if "\x00" in arg:
            raise _fail(f"workload.entrypoint[{index}]", "must not contain NUL")
    for key, value in workload.env.items():
        if not key or "=" in key or "\x00" in key:
            raise _fail(
                f"workload.env[{_short(key)!r}]", "is not a valid environment variable name"
            )
        if "\x00" in value:
            raise _fail(f"workload.env.{_short(key)}", "must not contain NUL")
    if workload.workdir:
        _check_absolute_path(workload.workdir, "workload.workdir")


def _validate_cloud_init(cloud_init: CloudInit) -> None:
    if cloud_init.datasource != "NoCloud":
        raise _fail(
            "cloud_init.datasource",
            f"only NoCloud is supported, got {_short(cloud_init.datasource)!r}",
        )
    if cloud_init.seed_mode not in SEED_MODES:
        raise _fail(
            "cloud_init.seed_mode",
            f"must be one of {', '.join(SEED_MODES)}, got {_short(cloud_init.seed_mode)!r}",
        )
    docs = (
        ("user_data", cloud_init.user_data),
        ("meta_data", cloud_init.meta_data),
        ("network_config", cloud_init.network_config),
    )
    for key, doc in docs:
        if doc is None:
            continue
        prefix = f"cloud_init.{key}"
        if doc.content and doc.path:
            raise _fail(prefix, "set either content or path, not both")
        if doc.content and not doc.inline:
            raise _fail(f"{prefix}.inline", "must be true when content is given")
        if doc.path:
            if doc.inline:
                raise _fail(f"{prefix}.inline", "must be false when path is given")
            _single_line(doc.path, f"{prefix}.path", 4096)


def _validate_network(network: Network) -> None:
    if network.mode not in NETWORK_MODES:
        raise _fail(
            "network.mode", f"must be vsock, bridged, or dhcp, got {_short(network.mode)!r}"
        )
    subnet: ipaddress.IPv4Network | None = None
    if network.subnet:
        try:
            parsed = ipaddress.ip_network(network.subnet, strict=False)
        except ValueError:
            raise _fail(
                "network.subnet", f"is not a valid CIDR: {_short(network.subnet)!r}"
            ) from None
        if not isinstance(parsed, ipaddress.IPv4Network) or "/" not in network.subnet:
            raise _fail("network.subnet", "must be an IPv4 network in CIDR form, e.g. 10.0.0.0/24")
        subnet = parsed
    if network.gateway:
        try:
            gateway = ipaddress.ip_address(network.gateway)
        except ValueError:
            raise _fail(
                "network.gateway", f"is not a valid IP address: {_short(network.gateway)!r}"
            ) from None
        if not isinstance(gateway, ipaddress.IPv4Address):
            raise _fail("network.gateway", "must be an IPv4 address")
        if subnet is not None:
            if gateway not in subnet:
                raise _fail("network.gateway", f"{gateway} is outside network.subnet {subnet}")
            if subnet.prefixlen <= 30 and gateway in (
                subnet.network_address,
                subnet.broadcast_address,
            ):
                raise _fail(
                    "network.gateway", "must not be the network or broadcast address of the subnet"
                )
    if (
        network.mode == "bridged"
        and subnet is not None
        and not network.gateway
        and not network.auto_assign
    ):
        raise _fail(
            "network.gateway", "is required with a bridged subnet unless auto_assign is true"
        )


def _validate_devices(devices: Devices) -> None:
    for index, address in enumerate(devices.pci_passthrough):
        if not _PCI_ADDRESS.fullmatch(address):
            raise _fail(
                f"devices.pci_passthrough[{index}]",
                f"must be a PCI address like 0000:01:00.0, got {_short(address)!r}",
            )
    for index, entry in enumerate(devices.allowlist):
        if not _PCI_ALLOW.fullmatch(entry):
            raise _fail(
                f"devices.allowlist[{index}]",
                f"must be vendor:device or vendor:* in hex, like 10de:2204, got {_short(entry)!r}",
            )


def validate(manifest: Manifest) -> None:
    """Raise ``UnprocessableError`` naming the first field that breaks a rule.

    Expects a normalised manifest (``parse_manifest`` does both).
    """
    m = manifest
    _check_dns_label(m.name, "name")
    _required(m.version, "version", 128)
    if not _RUNTIME.fullmatch(m.runtime):
        raise _fail(
            "runtime",
            "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    _single_line(m.schema_version, "schema_version", 32)
    _single_line(m.image, "image", 1024)
    _single_line(m.image_digest, "image_digest", 256)
    _validate_resources(m.resources)
    _validate_media(m)
    _validate_actions(m.actions)
    if m.health_check is not None:
        _check_path_or_http_url(m.health_check.endpoint, "health_check.endpoint")
        _check_timeout(m.health_check.timeout_ms, "health_check.timeout_ms")
    if m.workload is not None:
        _validate_workload(m.workload)
    if m.cloud_init is not None:
        _validate_cloud_init(m.cloud_init)
    if m.network is not None:
        _validate_network(m.network)
    if m.devices is not None:
        _validate_devices(m.devices)
    if m.openapi:
        _check_path_or_http_url(m.openapi, "openapi")
    for key, value in m.labels.items():
        if not key:
            raise _fail("labels", "label keys must not be empty")
        _single_line(key, f"labels[{_short(key)!r}]", 253)
        _single_line(value, f"labels.{_short(key)}", 1024)


# ------------------------------------------------------------------ cmdline transport


def encode_for_cmdline(manifest: Manifest, budget: int = DEFAULT_CMDLINE_BUDGET) -> str:
    """Encode for ``volant.manifest=<value>``; 422 if it would not fit in ``budget`` bytes.

    ``budget`` is what is left of the kernel command line (``CMDLINE_LIMIT``)
    after the base arguments; the size counted is the whole
    ``volant.manifest=<encoded>`` argument. Cloud-init document bodies are left
    out: they reach the guest on the seed disk, and the original's habit of
    repeating them on the command line is what overflowed it.
    """
    payload = manifest_to_dict(manifest)
    cloud_init = payload.get("cloud_init")
    if isinstance(cloud_init, dict):
        # The guest gets cloud-init documents from the NoCloud seed disk, not the
        # command line: keep only the settings so kestrel still sees them.
        payload["cloud_init"] = {
            key: value for key, value in cloud_init.items() if key in ("datasource", "seed_mode")
        }
    encoded = encode_manifest(payload)
    needed = len(MANIFEST_KEY) + 1 + len(encoded)
    if needed > budget:
        raise UnprocessableError(
            f"manifest: encoded manifest needs {needed} bytes on the kernel command line "
            f"but only {budget} of {CMDLINE_LIMIT} are available; shrink workload.env, "
            "labels, actions or descriptions, and put large data in cloud-init documents "
            "(they travel on the seed disk, not the command line)",
            field="manifest",
            encoded_size=needed,
            limit=budget,
        )
    return encoded
