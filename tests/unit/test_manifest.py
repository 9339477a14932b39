"""Plugin manifest model: parsing, normalisation, validation and cmdline transport."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import attrs
import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kestrel.codec import MANIFEST_KEY, decode_manifest, parse_cmdline
from volant.errors import UnprocessableError, ValidationError
from volant.manifest import (
    DEFAULT_CMDLINE_BUDGET,
    Manifest,
    checksum_hex,
    encode_for_cmdline,
    manifest_from_dict,
    manifest_to_dict,
    normalize,
    parse_manifest,
    validate,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "manifests" / "hello.json"
UPSTREAM_SCHEMA = FIXTURE.parent / "upstream-plugin-manifest-v1.schema.json"  # copy of the original
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def hello() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def minimal(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "mini",
        "version": "1",
        "resources": {"cpu_cores": 1, "memory_mb": 128},
        "initramfs": {"url": "/var/lib/volant/mini.cpio.gz"},
    }
    body.update(extra)
    return body


def with_value(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy of the hello manifest with ``value`` set at a dotted path (``[n]`` for lists)."""
    data = copy.deepcopy(base if base is not None else hello())
    node: Any = data
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return data


def without(path: str) -> dict[str, Any]:
    data = hello()
    node: Any = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
    return data


# ------------------------------------------------------------------ happy path


def test_fixture_parses_and_normalises() -> None:
    m = parse_manifest(hello())
    assert m.name == "hello"
    assert m.runtime == "hello"
    assert m.resources.cpu_cores == 1
    assert m.resources.memory_mb == 256
    assert m.workload is not None
    assert m.workload.entrypoint == ("/usr/bin/hello-server", "--port", "8000")
    assert m.cloud_init is not None
    assert m.cloud_init.seed_mode == "iso9660"
    assert m.labels == {"team": "platform", "volant.plugin": "hello", "volant.runtime": "hello"}
    assert m.enabled is True


def test_to_dict_validates_against_upstream_schema() -> None:
    schema = json.loads(UPSTREAM_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    out = manifest_to_dict(parse_manifest(hello()))
    jsonschema.validate(out, schema)
    json.dumps(out)  # JSON-ready


def test_minimal_output_omits_empty_fields() -> None:
    out = manifest_to_dict(parse_manifest(minimal()))
    assert set(out) == {
        "schema_version",
        "name",
        "version",
        "runtime",
        "resources",
        "initramfs",
        "labels",
    }
    assert out["initramfs"] == {"url": "/var/lib/volant/mini.cpio.gz"}


def test_round_trip_is_stable() -> None:
    m = parse_manifest(hello())
    again = manifest_from_dict(manifest_to_dict(m))
    assert again == m
    assert normalize(m) == m
    validate(m)


def test_schema_ref_is_accepted_and_dropped() -> None:
    m = parse_manifest(minimal(**{"$schema": "https://example.com/schema.json"}))
    assert "$schema" not in manifest_to_dict(m)
    with pytest.raises(ValidationError, match=r"\$schema: expected a string"):
        parse_manifest(minimal(**{"$schema": 3}))


def test_both_rootfs_and_initramfs_are_allowed() -> None:
    m = parse_manifest(minimal(rootfs={"url": "https://example.com/root.img"}))
    assert m.rootfs is not None
    assert m.initramfs is not None


# --------------------------------------------------------------- normalisation


def test_normalisation_rules() -> None:
    data = minimal(
        schema_version="  ",
        name="  mini ",
        version=" 2.0 ",
        runtime="",
        rootfs={"url": " /img/root.img ", "checksum": " SHA256:" + SHA.upper(), "format": " QCOW2"},
        disks=[{"name": " data ", "source": "/d.img"}],
        actions={
            "  ": {"method": "get", "path": "/dropped"},
            " run ": {"description": " go ", "method": " patch ", "path": " run/now "},
            "dflt": {"path": "/x"},
        },
        health_check={"endpoint": "  ", "timeout_ms": 5},
        workload={
            "type": " HTTP ",
            "base_url": " http://127.0.0.1:80 ",
            "entrypoint": ["/bin/srv"],
            "workdir": " /srv ",
        },
        cloud_init={"datasource": "nocloud", "seed_mode": " VFAT "},
        network={"mode": " VSOCK "},
        devices={"pci_passthrough": [" 0000:AB:00.1 "], "allowlist": ["10DE:*"]},
        labels={" team ": " a ", "volant.plugin": "spoofed"},
        openapi=" https://example.com/openapi.json ",
    )
    m = parse_manifest(data)
    assert m.schema_version == "1"
    assert m.name == "mini"
    assert m.version == "2.0"
    assert m.runtime == "mini"
    assert m.rootfs is not None
    assert m.rootfs.url == "/img/root.img"
    assert m.rootfs.checksum == "sha256:" + SHA
    assert m.rootfs.format == "qcow2"
    assert m.disks[0].name == "data"
    assert m.disks[0].format == "raw"
    assert set(m.actions) == {"run", "dflt"}
    assert m.actions["run"].method == "PATCH"
    assert m.actions["run"].path == "/run/now"
    assert m.actions["run"].description == "go"
    assert m.actions["dflt"].method == "POST"
    assert m.health_check is None
    assert m.workload is not None
    assert m.workload.type == "http"
    assert m.workload.base_url == "http://127.0.0.1:80"
    assert m.workload.workdir == "/srv"
    assert m.cloud_init is not None
    assert m.cloud_init.datasource == "NoCloud"
    assert m.cloud_init.seed_mode == "vfat"
    assert m.network is not None
    assert m.network.mode == "vsock"
    assert m.devices is not None
    assert m.devices.pci_passthrough == ("0000:ab:00.1",)
    assert m.devices.allowlist == ("10de:*",)
    assert m.labels == {"team": "a", "volant.plugin": "mini", "volant.runtime": "mini"}
    assert m.openapi == "https://example.com/openapi.json"


def test_cloud_init_defaults_and_vfat_is_kept_in_output() -> None:
    m = parse_manifest(minimal(cloud_init={}))
    assert m.cloud_init is not None
    assert (m.cloud_init.datasource, m.cloud_init.seed_mode) == ("NoCloud", "iso9660")
    # The default seed mode is implied (the original schema's enum only lists vfat).
    assert manifest_to_dict(m)["cloud_init"] == {"datasource": "NoCloud"}
    vfat = parse_manifest(minimal(cloud_init={"seed_mode": "vfat"}))
    assert manifest_to_dict(vfat)["cloud_init"]["seed_mode"] == "vfat"


def test_network_mode_defaults_to_bridged() -> None:
    m = parse_manifest(minimal(network={"auto_assign": True}))
    assert m.network is not None
    assert m.network.mode == "bridged"


def test_checksum_hex() -> None:
    assert checksum_hex("sha256:" + SHA) == SHA
    assert checksum_hex(SHA.upper()) == SHA
    assert checksum_hex("") is None
    with pytest.raises(UnprocessableError):
        checksum_hex("md5:abc")


# ---------------------------------------------------------------- rule violations

LONG = "x" * 300

RULE_VIOLATIONS: list[tuple[str, Any, str]] = [
    ("name", "", "name"),
    ("name", "Hello", "name"),
    ("name", "../etc", "name"),
    ("name", "a/b", "name"),
    ("name", "has space", "name"),
    ("name", "a" * 64, "name"),
    ("name", "a.b", "name"),
    ("version", "  ", "version"),
    ("version", "1\n2", "version"),
    ("runtime", "bad runtime", "runtime"),
    ("runtime", "-x", "runtime"),
    ("resources.cpu_cores", 0, "resources.cpu_cores"),
    ("resources.cpu_cores", -1, "resources.cpu_cores"),
    ("resources.cpu_cores", 257, "resources.cpu_cores"),
    ("resources.memory_mb", 0, "resources.memory_mb"),
    ("resources.memory_mb", 1024 * 1024 + 1, "resources.memory_mb"),
    ("actions.greet.method", "TRACE", "actions.greet.method"),
    ("actions.greet.path", "", "actions.greet.path"),
    ("actions.greet.path", "/a b", "actions.greet.path"),
    ("actions.greet.timeout_ms", -1, "actions.greet.timeout_ms"),
    ("actions", {"bad name!": {"method": "GET", "path": "/x"}}, "actions['bad name!']"),
    ("workload.type", "grpc", "workload.type"),
    ("workload.type", "", "workload.type"),
    ("workload.base_url", "", "workload.base_url"),
    ("workload.base_url", "not a url", "workload.base_url"),
    ("workload.base_url", "ftp://host/", "workload.base_url"),
    ("workload.base_url", "http://", "workload.base_url"),
    ("workload.base_url", "http://host:99999/", "workload.base_url"),
    ("workload.entrypoint", [], "workload.entrypoint"),
    ("workload.entrypoint", ["  "], "workload.entrypoint"),
    ("workload.entrypoint", ["/bin/x", "a\x00b"], "workload.entrypoint[1]"),
    ("workload.env", {"A=B": "c"}, "workload.env['A=B']"),
    ("workload.workdir", "relative/dir", "workload.workdir"),
    ("initramfs.url", "", "initramfs.url"),
    ("initramfs.url", "ftp://example.com/x", "initramfs.url"),
    ("initramfs.url", "relative/path.cpio", "initramfs.url"),
    ("initramfs.url", "file://remotehost/x", "initramfs.url"),
    ("initramfs.url", "https://", "initramfs.url"),
    ("initramfs.checksum", "sha256:abc", "initramfs.checksum"),
    ("initramfs.checksum", "md5:" + SHA, "initramfs.checksum"),
    ("initramfs.checksum", "z" * 64, "initramfs.checksum"),
    ("disks[0].name", "", "disks[0].name"),
    ("disks[0].name", "Bad Name", "disks[0].name"),
    ("disks[0].source", "", "disks[0].source"),
    ("disks[0].source", "data.img", "disks[0].source"),
    ("disks[0].format", "vmdk", "disks[0].format"),
    ("disks[0].checksum", "short", "disks[0].checksum"),
    ("disks[0].target", "a b", "disks[0].target"),
    ("cloud_init.datasource", "ConfigDrive", "cloud_init.datasource"),
    ("cloud_init.seed_mode", "ext4", "cloud_init.seed_mode"),
    (
        "cloud_init.user_data",
        {"inline": True, "content": "x", "path": "/u"},
        "cloud_init.user_data",
    ),
    ("cloud_init.user_data", {"content": "x"}, "cloud_init.user_data.inline"),
    ("cloud_init.meta_data", {"inline": True, "path": "meta"}, "cloud_init.meta_data.inline"),
    ("network.mode", "nat", "network.mode"),
    ("network.subnet", "10.0.0.0", "network.subnet"),
    ("network.subnet", "not-a-cidr", "network.subnet"),
    ("network.subnet", "fd00::/64", "network.subnet"),
    ("network.gateway", "10.9.9.1", "network.gateway"),
    ("network.gateway", "192.168.127.0", "network.gateway"),
    ("network.gateway", "300.1.1.1", "network.gateway"),
    ("network.gateway", "::1", "network.gateway"),
    ("network", {"mode": "bridged", "subnet": "10.1.0.0/24"}, "network.gateway"),
    ("devices.pci_passthrough", ["0000:01:00.8"], "devices.pci_passthrough[0]"),
    ("devices.pci_passthrough", ["01:00.0"], "devices.pci_passthrough[0]"),
    ("devices.allowlist", ["10de"], "devices.allowlist[0]"),
    ("devices.allowlist", ["10de:22g4"], "devices.allowlist[0]"),
    ("health_check.timeout_ms", -5, "health_check.timeout_ms"),
    ("health_check.endpoint", "healthz", "health_check.endpoint"),
    ("openapi", "openapi.json", "openapi"),
    ("openapi", "ftp://example.com/o.json", "openapi"),
    ("labels", {"k": "line\nbreak"}, "labels.k"),
    ("image", LONG * 4, "image"),
]


@pytest.mark.parametrize(("path", "value", "field"), RULE_VIOLATIONS)
def test_rule_violation_is_422_naming_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(UnprocessableError) as info:
        parse_manifest(with_value(path, value))
    assert info.value.status == 422
    assert info.value.message.startswith(f"{field}: ")
    assert info.value.details["field"] == field


def test_missing_boot_media() -> None:
    data = without("initramfs")
    with pytest.raises(UnprocessableError, match="rootfs"):
        parse_manifest(data)


def test_duplicate_disk_names() -> None:
    disk = {"name": "data", "source": "/d.img"}
    with pytest.raises(UnprocessableError, match=r"disks\[1\]\.name: duplicate"):
        parse_manifest(with_value("disks", [disk, disk]))


def test_bridged_subnet_with_auto_assign_is_fine() -> None:
    m = parse_manifest(
        with_value("network", {"mode": "BRIDGED", "subnet": "10.1.0.0/24", "auto_assign": True})
    )
    assert m.network is not None
    assert m.network.mode == "bridged"


def test_valid_variants_pass() -> None:
    # Each of these is valid: guards against rules that are too strict.
    for path, value in [
        ("initramfs.url", "file:///var/lib/volant/x.cpio.gz"),
        ("initramfs.url", "http://10.0.0.1:8080/x.cpio.gz"),
        ("initramfs.checksum", SHA),
        ("devices.allowlist", ["10de:2204", "8086:*"]),
        ("health_check.endpoint", "http://127.0.0.1:8000/healthz"),
        ("openapi", "https://example.com/openapi.json"),
        ("network", {"mode": "dhcp"}),
        ("cloud_init.user_data", {"inline": False, "path": "user-data.yaml"}),
        ("actions.greet.method", "delete"),
    ]:
        parse_manifest(with_value(path, value))


# ----------------------------------------------------------------- malformed input

TYPE_ERRORS: list[tuple[str, Any, str]] = [
    ("resources.cpu_cores", "2", "resources.cpu_cores: expected an integer, got string"),
    ("resources.cpu_cores", 2.0, "resources.cpu_cores: expected an integer, got number"),
    ("resources.cpu_cores", True, "resources.cpu_cores: expected an integer, got boolean"),
    ("resources", None, "resources: expected an object, got null"),
    ("resources", [], "resources: expected an object, got array"),
    ("name", ["hello"], "name: expected a string, got array"),
    ("name", None, "name: expected a string, got null"),
    ("version", 1, "version: expected a string, got number"),
    ("enabled", "yes", "enabled: expected a boolean, got string"),
    ("workload.entrypoint", "/bin/sh", "workload.entrypoint: expected an array, got string"),
    ("workload.entrypoint", ["/bin/sh", 3], "workload.entrypoint[1]: expected a string"),
    ("workload.env", {"A": 1}, "workload.env.A: expected a string, got number"),
    ("workload.env", ["A=1"], "workload.env: expected an object, got array"),
    ("labels", {"a b": 1}, "labels['a b']: expected a string"),
    ("actions", [], "actions: expected an object, got array"),
    ("actions.greet", "GET /greet", "actions.greet: expected an object, got string"),
    ("actions.greet.timeout_ms", "5s", "actions.greet.timeout_ms: expected an integer"),
    ("disks", {"name": "d"}, "disks: expected an array, got object"),
    ("disks[0]", "data", "disks[0]: expected an object, got string"),
    ("disks[0].readonly", "true", "disks[0].readonly: expected a boolean"),
    ("cloud_init.user_data", "#cloud-config", "cloud_init.user_data: expected an object"),
    ("devices.pci_passthrough", [1], "devices.pci_passthrough[0]: expected a string"),
    ("network.auto_assign", 1, "network.auto_assign: expected a boolean"),
]


@pytest.mark.parametrize(("path", "value", "message"), TYPE_ERRORS)
def test_wrong_types_are_400(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_manifest(with_value(path, value))
    assert info.value.status == 400
    assert info.value.message.startswith(message)


@pytest.mark.parametrize("required", ["name", "version", "resources", "resources.memory_mb"])
def test_missing_required_fields_are_400(required: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_manifest(without(required))
    assert info.value.status == 400
    assert info.value.message == f"{required}: required field is missing"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (minimal(bogus=1), "bogus: unknown field"),
        (minimal(vfio=[]), "vfio: unknown field"),
        (with_value("resources.gpus", 1), "resources.gpus: unknown field"),
        (with_value("devices.vfio", []), "devices.vfio: unknown field"),
        (with_value("actions.greet.verb", "GET"), "actions.greet.verb: unknown field"),
        (with_value("disks[0].size", 1), "disks[0].size: unknown field"),
    ],
)
def test_unknown_fields_are_400(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_manifest(data)
    assert info.value.status == 400
    assert info.value.message.startswith(message)


@pytest.mark.parametrize("value", [None, [], "manifest", 3, 2.5, True])
def test_non_object_is_400(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        parse_manifest(value)
    assert info.value.status == 400
    assert info.value.message.startswith("manifest: expected a JSON object")


def test_several_problems_are_all_reported() -> None:
    data = hello()
    data["name"] = 1
    data["version"] = []
    data["extra"] = True
    with pytest.raises(ValidationError) as info:
        parse_manifest(data)
    fields = {problem["field"] for problem in info.value.details["errors"]}
    assert fields == {"name", "version", "extra"}
    assert "(and 2 more problem(s))" in info.value.message


# ------------------------------------------------------------- cmdline transport


def test_encode_for_cmdline_round_trips_through_the_guest_codec() -> None:
    m = parse_manifest(hello())
    encoded = encode_for_cmdline(m)
    line = f"console=ttyS0 quiet {MANIFEST_KEY}={encoded}"
    decoded = decode_manifest(parse_cmdline(line)[MANIFEST_KEY])
    expected = manifest_to_dict(m)
    # cloud-init documents travel on the seed disk, not the command line
    expected["cloud_init"] = {"datasource": "NoCloud"}
    assert decoded == expected
    assert parse_manifest(decoded).workload == m.workload


def test_huge_manifest_is_rejected_with_a_clear_message() -> None:
    env = {f"VAR_{i}": f"value-{i}-" + "x" * 40 for i in range(200)}
    m = parse_manifest(with_value("workload.env", env))
    with pytest.raises(UnprocessableError) as info:
        encode_for_cmdline(m)
    err = info.value
    assert err.status == 422
    assert err.details["limit"] == DEFAULT_CMDLINE_BUDGET
    assert err.details["encoded_size"] > DEFAULT_CMDLINE_BUDGET
    assert str(err.details["encoded_size"]) in err.message
    assert "workload.env" in err.message


def test_budget_is_a_parameter() -> None:
    m = parse_manifest(hello())
    encoded = encode_for_cmdline(m)
    needed = len(MANIFEST_KEY) + 1 + len(encoded)
    assert encode_for_cmdline(m, budget=needed) == encoded
    with pytest.raises(UnprocessableError):
        encode_for_cmdline(m, budget=needed - 1)


def test_large_cloud_init_content_does_not_count_against_the_cmdline() -> None:
    big = "#cloud-config\n" + "".join(f"# line {i} {'y' * 60}\n" for i in range(500))
    m = parse_manifest(with_value("cloud_init.user_data", {"inline": True, "content": big}))
    encode_for_cmdline(m)


def test_upstream_style_payload_parses() -> None:
    # What the original volantd put on the cmdline: Go json (all fields, empty ones
    # included) -> gzip (default header) -> RawURLEncoding.
    go_json = {
        "schema_version": "",
        "name": "caddy",
        "version": "1.0",
        "runtime": "caddy",
        "rootfs": {"url": "https://example.com/caddy.img", "checksum": "", "format": "raw"},
        "image": "",
        "image_digest": "",
        "resources": {"cpu_cores": 2, "memory_mb": 512},
        "actions": {},
        "health_check": {"endpoint": "", "timeout_ms": 0},
        "workload": {
            "type": "http",
            "base_url": "http://127.0.0.1:80",
            "entrypoint": ["/usr/bin/caddy", "run"],
            "workdir": "",
        },
        "enabled": True,
        "openapi": "",
        "labels": None,
        "disks": None,
        "devices": {"pci_passthrough": None, "allowlist": None},
    }
    import base64

    encoded = base64.urlsafe_b64encode(gzip.compress(json.dumps(go_json).encode()))
    data = decode_manifest(encoded.rstrip(b"=").decode())
    m = parse_manifest(data)  # Go's null for nil maps/slices means "empty"
    assert m.name == "caddy"
    assert m.health_check is None
    assert m.schema_version == "1"
    assert m.disks == ()
    assert m.labels == {"volant.plugin": "caddy", "volant.runtime": "caddy"}


# --------------------------------------------------------------- property tests

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_leaves,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = [f.name for f in attrs.fields(Manifest)] + ["$schema", "junk"]


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_only_raises_validation_errors(value: Any) -> None:
    try:
        result = parse_manifest(value)
    except ValidationError:
        return
    assert isinstance(result, Manifest)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6),
    st.sampled_from(
        [
            "resources",
            "workload",
            "actions",
            "disks",
            "cloud_init",
            "network",
            "devices",
            "health_check",
            "initramfs",
            "rootfs",
            "labels",
        ]
    ),
    json_values,
)
def test_mutated_manifests_only_raise_validation_errors(
    overrides: dict[str, Any], field: str, nested: Any
) -> None:
    data = hello()
    data.update(overrides)
    if isinstance(data.get(field), dict) and isinstance(nested, dict):
        data[field] = {**data[field], **nested}
    try:
        result = parse_manifest(data)
    except ValidationError:
        return
    assert isinstance(result, Manifest)
    # anything accepted must survive the round trip unchanged
    assert parse_manifest(manifest_to_dict(result)) == result
