"""Hypothesis equivalents of the atheris harnesses in ``fuzz/``: same properties, bounded runs.

The properties live in ``fuzz/properties.py`` and are shared with the harnesses,
so the suite checks exactly the contracts the fuzzers check (only documented
errors escape each parser; results are consistent), in a few seconds. The
committed seed corpora are replayed too, so a seed that starts failing is caught
without running ``make fuzz``.
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.jsongen import FLOATS, INTS, KEYS, STRINGS
from fuzz.properties import (
    LOAD_ALL_NAMES,
    check_codec,
    check_create_request,
    check_deployment_create,
    check_deployment_patch,
    check_ip_param,
    check_kestrel_cmdline,
    check_load_all,
    check_manifest_document,
    check_snapshot_decode,
    check_sse_server_frames,
    check_sse_stream,
    codec_text,
)
from volant.orchestrator.events import Event

BOUNDED = settings(max_examples=200, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"


# -- strategies ----------------------------------------------------------------------------------
def _json_values() -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | st.sampled_from(INTS) | st.integers()
               | st.sampled_from(FLOATS) | st.floats() | st.sampled_from(STRINGS)
               | st.text(max_size=20))

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        keys = st.sampled_from(KEYS) | st.text(max_size=8)
        return st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=5)

    return st.recursive(scalars, extend, max_leaves=15)


def _bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Objects keyed mostly by the parsers' field names, like ``fuzz.jsongen``."""
    keys = st.sampled_from(KEYS) | st.text(max_size=8)
    return st.dictionaries(keys, _json_values(), max_size=7)


def _seeds(name: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted((CORPUS / name).iterdir())]


def _seed_json(name: str, selector: int) -> list[Any]:
    """Seeds whose byte 0 selects raw JSON mode ``selector``, decoded like the harness does."""
    out: list[Any] = []
    for data in _seeds(name):
        if data and data[0] == selector:
            try:
                out.append(json.loads(data[1:].decode("utf-8", errors="replace")))
            except ValueError:
                continue
    return out


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fuzz-equivalent-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- snapshots -----------------------------------------------------------------------------------
snapshot_texts = (
    st.binary(max_size=200)
    | st.builds(lambda v, doc: json.dumps({"schema_version": v, **doc}).encode(),
                st.integers(-1, 5) | st.booleans(), _bodies())
    | st.builds(lambda v, body: f"schema_version = {v}\n{body}".encode(),
                st.integers(-1, 5), st.text(max_size=60))
)


@BOUNDED
@given(data=snapshot_texts, fmt=st.sampled_from(["json", "toml"]))
def test_snapshot_decode_raises_only_snapshot_errors(data: bytes, fmt: Any) -> None:
    check_snapshot_decode(data, fmt)


@BOUNDED
@given(name=st.sampled_from(LOAD_ALL_NAMES), data=snapshot_texts)
def test_load_all_never_raises_and_reports_the_file_once(name: str, data: bytes) -> None:
    path = Path(tempfile.mkdtemp(prefix="fuzz-load-all-"))
    try:
        check_load_all(path, name, data)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("seed", _seeds("snapshot"), ids=lambda s: s[:24].hex())
def test_snapshot_seeds(seed: bytes, state_dir: Path) -> None:
    mode = seed[0] % 3
    if mode == 2:
        check_load_all(state_dir, LOAD_ALL_NAMES[seed[1] % len(LOAD_ALL_NAMES)], seed[2:])
    else:
        check_snapshot_decode(seed[1:], "json" if mode == 0 else "toml")


def test_snapshot_property_catches_an_escaping_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property is not vacuous: an undocumented exception from decode escapes it."""
    from fuzz import properties

    def broken(data: bytes, fmt: Any) -> Any:
        raise KeyError("schema_version")

    monkeypatch.setattr(properties.SNAPSHOT_CODEC, "decode", broken)
    with pytest.raises(KeyError):
        check_snapshot_decode(b"{}", "json")


# -- kestrel ---------------------------------------------------------------------------------------
octets = st.integers(0, 300).map(str) | st.sampled_from(["", "00", "010", "\u00b2", "a"])
dotted = st.lists(octets, min_size=1, max_size=5).map(".".join)
ip_fields = dotted | st.sampled_from(["24", "/24", "33", "255.255.255.0", "255.0.255.0",
                                      "dhcp", "off", "eth0", "x" * 20, "9" * 5000, "\u00b2"])
ip_params = (st.lists(ip_fields | st.text(max_size=8), max_size=11).map(":".join)
             | st.text(max_size=40) | st.sampled_from(["dhcp", "off", "none", "BOTH", ""]))


@BOUNDED
@given(value=ip_params)
def test_ip_param_raises_only_ipconfig_error(value: str) -> None:
    check_ip_param(value)


@BOUNDED
@given(
    cmdline=st.lists(st.sampled_from(["ip=", "console=", "\"a=b c\"", "volant.x=1", " ", "="])
                     | st.text(max_size=10) | ip_params.map(lambda v: f"ip={v}"),
                     max_size=5).map(" ".join),
    listen=st.sampled_from(["0.0.0.0:8080", ":1", "[::1]:80", "x", "h:-1", "h:99999", ""])
    | st.text(max_size=12),
    numbers=st.lists(st.sampled_from(["", "0", "-1", "nan", "inf", "1e999", "x", "12"])
                     | st.text(max_size=5), max_size=4),
)
def test_kestrel_settings_raise_only_config_error(cmdline: str, listen: str,
                                                  numbers: list[str]) -> None:
    check_kestrel_cmdline(cmdline, listen, numbers)


@pytest.mark.parametrize("seed", _seeds("kestrel"), ids=lambda s: s[:24].hex())
def test_kestrel_seeds(seed: bytes) -> None:
    text = seed[1:].decode("utf-8", errors="replace")
    if seed[0] % 2 == 0:
        check_ip_param(text)
    else:
        cmdline, _, rest = text.partition("\x1e")
        listen, _, numbers = rest.partition("\x1e")
        check_kestrel_cmdline(cmdline, listen, numbers.split("\x1e") if numbers else [])


# -- SSE -------------------------------------------------------------------------------------------
sse_lines = st.sampled_from(["", "data: x", "data:", "data", "id: 7", "id: a\x00b", "event: E",
                             "event", "retry: 1000", "retry: x", ": keepalive", "\ufeffdata: y",
                             "data: {\"id\": 3}", "data: 1e400", "id: 99999999999999999999"])
sse_streams = (st.lists(sse_lines | st.text(max_size=10), max_size=12).flatmap(
    lambda lines: st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=len(lines),
                           max_size=len(lines)).map(
        lambda ends: "".join(line + end for line, end in zip(lines, ends, strict=True))))
    | st.text(max_size=80))


@BOUNDED
@given(text=sse_streams, cuts=st.lists(st.integers(0, 255), max_size=4))
def test_sse_parser_is_split_invariant_and_never_raises(text: str, cuts: list[int]) -> None:
    check_sse_stream(text, cuts)


event_types = st.text(alphabet=st.characters(exclude_characters="\r\n", codec="utf-8"),
                      min_size=1, max_size=12)
events = st.lists(
    st.builds(Event, seq=st.integers(0, 1 << 40), type=event_types,
              name=st.text(max_size=10), message=st.none() | st.text(max_size=20),
              extra=st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=5)
                                    .map(lambda key: f"x_{key}"),
                                    _json_values(), max_size=3)),
    max_size=4,
)


@BOUNDED
@given(sent=events, overflow=st.none() | st.integers(0, 1 << 40))
def test_server_frames_round_trip_through_the_cli_parser(sent: list[Event],
                                                         overflow: int | None) -> None:
    check_sse_server_frames(sent, overflow)


@pytest.mark.parametrize("seed", [s for s in _seeds("sse") if s[0] % 2 == 0],
                         ids=lambda s: s[:24].hex())
def test_sse_seeds(seed: bytes) -> None:
    check_sse_stream(seed[4:].decode("utf-8", errors="replace"), list(seed[1:4]))


# -- API request bodies ----------------------------------------------------------------------------
@BOUNDED
@given(body=_bodies() | st.fixed_dictionaries(
    {"name": st.sampled_from(["web", "web-1", "Web", ""]),
     "plugin": st.sampled_from(["fuzzplug", "FUZZPLUG", " fuzzplug ", "other"])},
    optional={"config": _bodies(), "cpu_cores": _json_values(),
              "kernel_cmdline": _json_values(), "restart_policy": _json_values()}))
def test_create_request_raises_only_4xx(body: dict[str, Any]) -> None:
    check_create_request(body)


@pytest.mark.parametrize("body", _seed_json("vmrequest", 0), ids=str)
def test_vmrequest_seeds(body: Any) -> None:
    check_create_request(body)


deployment_bodies = (_bodies() | st.fixed_dictionaries(
    {"name": st.sampled_from(["web", "a" * 58, "a" * 59]), "config": _bodies()},
    optional={"replicas": _json_values(), "rollout_timeout": _json_values(),
              "min_ready_seconds": _json_values()}))


@BOUNDED
@given(body=deployment_bodies)
def test_deployment_create_raises_only_validation_error(body: dict[str, Any]) -> None:
    check_deployment_create(body)


@BOUNDED
@given(body=deployment_bodies)
def test_deployment_patch_raises_only_validation_error(body: dict[str, Any]) -> None:
    check_deployment_patch(body)


@pytest.mark.parametrize(
    ("selector", "body"),
    [(0, body) for body in _seed_json("deployments", 0)]
    + [(1, body) for body in _seed_json("deployments", 1)],
    ids=str,
)
def test_deployment_seeds(selector: int, body: Any) -> None:
    (check_deployment_create if selector == 0 else check_deployment_patch)(body)


# -- manifests and the guest codec ----------------------------------------------------------------
media = st.sampled_from(["/var/lib/volant/a.img", "file:///a.img", "file://[/a.img",
                         "file://host/a", "https://example.com/a", "http://[::1/a", "", "a"])
manifests = st.fixed_dictionaries(
    {"name": st.sampled_from(["mini", "Mini", ""]), "version": st.sampled_from(["1", "", 1]),
     "resources": st.just({"cpu_cores": 1, "memory_mb": 128}) | _bodies()},
    optional={"initramfs": st.fixed_dictionaries({"url": media}),
              "rootfs": st.fixed_dictionaries({"url": media}),
              "disks": st.lists(st.fixed_dictionaries(
                  {"name": st.sampled_from(["data", "x"]), "source": media,
                   "format": st.sampled_from(["raw", "qcow2", "x"]),
                   "target": st.sampled_from(["vdb", "sda"])}), max_size=2),
              "runtime": _json_values(), "network": _bodies(),
              "workload": _bodies(), "labels": _json_values()},
) | _json_values()


@BOUNDED
@given(document=manifests)
def test_manifest_gives_a_manifest_or_validation_error(document: Any) -> None:
    check_manifest_document(document)


@pytest.mark.parametrize("seed", _seeds("manifest"), ids=lambda s: s[:24].hex())
def test_manifest_seeds(seed: bytes) -> None:
    try:
        document = json.loads(seed.decode("utf-8", errors="replace"))
    except ValueError:
        return
    check_manifest_document(document)


@BOUNDED
@given(mode=st.integers(0, 3),
       payload=st.binary(max_size=120) | _json_values().map(lambda v: json.dumps(v).encode()))
def test_codec_decodes_or_raises_manifest_decode_error(mode: int, payload: bytes) -> None:
    check_codec(codec_text(mode, payload), payload.decode("latin-1"))


@pytest.mark.parametrize("seed", _seeds("codec"), ids=lambda s: s[:24].hex())
def test_codec_seeds(seed: bytes) -> None:
    check_codec(codec_text(seed[0] % 4, seed[1:]), seed[1:].decode("latin-1"))


# -- product bugs the fuzzers found (fixed; these keep them fixed) --------------------------------
def test_deployment_config_with_null_in_a_list_is_storable_or_rejected() -> None:
    check_deployment_create({"name": "web", "config": {"plugin": "p", "config": {"x": [None]}}})


def test_deployment_patch_config_survives_the_state_file() -> None:
    check_deployment_patch({"config": {"api_port": [{"k": None}]}})


@pytest.mark.parametrize("value", ["10.0.0.2::10.0.0.1:\u00b2", "10.0.0.2/\u00b2",
                                   "10.0.0.2::10.0.0.1:" + "9" * 5000])
def test_ip_param_bad_netmask_digits_raise_ipconfig_error(value: str) -> None:
    check_ip_param(value)


@pytest.mark.parametrize("nested", ["fuzzplug", [1], 5])
def test_deployment_nested_config_must_be_an_object(nested: Any) -> None:
    check_deployment_create({"name": "web", "replicas": 2, "config": {"config": nested}})


@pytest.mark.parametrize(("field", "bad"), [
    ("initramfs", "file://[/var/lib/volant/x.img"),
    ("disk", "file://[/var/lib/volant/x.img"),
    ("initramfs", "file://x[\u00e9]/a.gz"),
])
def test_manifest_file_url_with_bracket_is_a_validation_error(field: str, bad: str) -> None:
    check_manifest_document({
        "name": "mini", "version": "1", "resources": {"cpu_cores": 1, "memory_mb": 128},
        "initramfs": {"url": bad if field == "initramfs" else "/var/lib/volant/mini.cpio.gz"},
        "disks": [{"name": "data", "source": bad if field == "disk" else "/var/lib/d.img",
                   "format": "raw", "target": "vdb"}],
    })
