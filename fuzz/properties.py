"""The properties every fuzz harness checks, shared with the hypothesis tests.

Each ``check_*`` function takes one already-decoded input, calls a parser and
raises ``AssertionError`` (or lets an undocumented exception escape) when the
parser breaks its contract. The atheris harnesses (``fuzz/*_fuzz.py``) turn raw
fuzzer bytes into these inputs; ``tests/unit/test_fuzz_equivalents.py`` feeds
them from hypothesis strategies, so both exercise exactly the same contract.

Nothing here imports atheris: the test suite must run without the fuzz extra.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kestrel.codec import ManifestDecodeError, decode_manifest, encode_manifest, parse_cmdline
from kestrel.config import ConfigError, load_config, parse_listen
from kestrel.ipconfig import DHCP_MODES, STATIC_MODES, IpConfigError, parse_ip_param, parse_ipv4
from volant.api.events import overflow_frame, sse_frame
from volant.cli.eventstream import EventFollower
from volant.cli.sse import SSEEvent, SSEParser
from volant.errors import UnprocessableError, ValidationError
from volant.manifest import Manifest, encode_for_cmdline, manifest_to_dict, parse_manifest
from volant.names import validate_name
from volant.orchestrator.deployments import (
    DEPLOYMENT_CODEC,
    MAX_REPLICAS,
    create_body,
    new_document,
    parse_create_deployment,
    parse_patch,
    replica_name,
)
from volant.orchestrator.events import Event
from volant.orchestrator.vmrequest import parse_create, resolve
from volant.store import (
    SCHEMA_KEY,
    SnapshotCodec,
    SnapshotEncodeError,
    SnapshotError,
    StateStore,
    StoreReadError,
)
from volant.store.snapshot import Format
from volant.vmconfig import USER_VOLANT_KEYS

# -- manifests and the guest codec -------------------------------------------------------------
#: Known product bug (reported): ``_check_media_url`` calls ``urlsplit`` unguarded, so a
#: ``file://[...`` source raises ``ValueError`` out of ``parse_manifest`` (two messages).
KNOWN_URLSPLIT_ERRORS = ("Invalid IPv6 URL", "does not appear to be an IPv4 or IPv6 address")


def check_manifest_document(document: Any, *, tolerate_known: bool = False) -> None:
    """Any JSON value gives a ``Manifest`` or a ``ValidationError``; accepted ones round-trip."""
    try:
        manifest = parse_manifest(document)
    except ValidationError:
        return
    except ValueError as exc:
        if tolerate_known and any(text in str(exc) for text in KNOWN_URLSPLIT_ERRORS):
            return
        raise
    assert parse_manifest(manifest_to_dict(manifest)) == manifest, "round trip changed it"
    with contextlib.suppress(ValidationError):  # too large for the cmdline is a 4xx
        encode_for_cmdline(manifest)


def codec_text(mode: int, payload: bytes) -> str:
    """What the codec harness decodes: raw text, base64url, or gzip+base64url of ``payload``."""
    if mode == 0:
        return payload.decode("utf-8", errors="replace")
    if mode == 1:
        return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return base64.urlsafe_b64encode(gzip.compress(payload, mtime=0)).decode()


def check_codec(text: str, cmdline: str) -> None:
    """``decode_manifest`` raises only ``ManifestDecodeError`` and round-trips; cmdline never."""
    try:
        decoded = decode_manifest(text)
    except ManifestDecodeError:
        decoded = None
    if decoded is not None:
        assert decode_manifest(encode_manifest(decoded)) == decoded, "codec round trip"
    params = parse_cmdline(cmdline)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in params.items())


# -- snapshots ---------------------------------------------------------------------------------
def _rename_key(doc: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2: ``name`` becomes ``title`` (fails on documents without ``name``)."""
    doc["title"] = doc.pop("name")
    return doc


def _add_default(doc: dict[str, Any]) -> dict[str, Any]:
    """v2 -> v3: a new field with a default."""
    doc.setdefault("restarts", 0)
    return doc


#: A codec with a migration chain, so fuzzed old versions run (and break) real migrations.
SNAPSHOT_CODEC = SnapshotCodec("fuzz", 3, {1: _rename_key, 2: _add_default})


def _same(left: Any, right: Any) -> bool:
    """Structural equality where NaN equals NaN (TOML allows ``nan``)."""
    if isinstance(left, float) and isinstance(right, float):
        return (math.isnan(left) and math.isnan(right)) or left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same, left, right))
    return type(left) is type(right) and bool(left == right)


def check_snapshot_decode(data: bytes, fmt: Format) -> None:
    """Only ``SnapshotError``/``StoreReadError`` may escape; accepted documents re-encode."""
    try:
        snapshot = SNAPSHOT_CODEC.decode(data, fmt)
    except (SnapshotError, StoreReadError):
        return
    doc = snapshot.document
    assert isinstance(doc, dict), "decode returned a non-table"
    assert doc[SCHEMA_KEY] == SNAPSHOT_CODEC.current_version, doc[SCHEMA_KEY]
    assert 1 <= snapshot.stored_version <= SNAPSHOT_CODEC.current_version
    assert snapshot.migrated == (snapshot.stored_version != SNAPSHOT_CODEC.current_version)
    try:
        encoded = SNAPSHOT_CODEC.encode(doc, fmt)
    except SnapshotEncodeError:
        return  # documented: e.g. a JSON 1e400 (inf) or a TOML nan cannot be written back
    again = SNAPSHOT_CODEC.decode(encoded, fmt)
    assert not again.migrated
    assert _same(again.document, doc), f"{fmt} encode/decode changed the document"


#: Names the fuzzed file may get: valid ones (loaded) and invalid ones (quarantined).
LOAD_ALL_NAMES: tuple[str, ...] = (
    "vm1/state.json", "vm1/state.toml", "a/state.json", "Bad_Name/state.json",
    "vm1/state.JSON", "vm1/state.txt", "-x/state.toml", "vm1/.state.json",
)


def check_load_all(state_dir: Path, relname: str, data: bytes) -> None:
    """``load_all`` never raises for file content; the file ends up in exactly one bucket."""
    vms = state_dir / "vms"
    for sub in ("vms", "quarantine"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
    store = StateStore(state_dir)
    target = vms / relname
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    result = store.load_all("vms", "*/*", SNAPSHOT_CODEC)
    relpath = f"vms/{relname}"
    buckets = (
        (relpath in result.documents)
        + sum(item.relpath == relpath for item in result.quarantined)
        + sum(item.relpath == relpath for item in result.refused)
    )
    assert buckets <= 1, f"{relpath} reported {buckets} times: {result}"
    if buckets == 0:
        assert target.exists(), f"{relpath} vanished without being reported"
        return
    for item in result.quarantined:
        if item.relpath != relpath:
            continue
        assert not target.exists(), "a quarantined file is still in place"
        assert item.moved_to is not None and item.moved_to.exists(), item
    if relpath in result.documents:
        assert result.documents[relpath][SCHEMA_KEY] == SNAPSHOT_CODEC.current_version


# -- kestrel: ip= and agent settings -----------------------------------------------------------
def _is_dotted_quad(text: str | None) -> bool:
    if text is None:
        return False
    try:
        parse_ipv4(text)
    except ValueError:
        return False
    return True


#: Known product bug (reported): ``parse_netmask`` calls ``int()`` on text that
#: ``str.isdigit`` accepts but ``int`` does not (``"\u00b2"``, more than 4300 digits),
#: so a plain ``ValueError`` escapes ``parse_ip_param``.
KNOWN_INT_ERRORS = ("invalid literal for int()", "Exceeds the limit")


def check_ip_param(value: str, *, tolerate_known: bool = False) -> None:
    """``parse_ip_param`` raises only ``IpConfigError``; a result is internally consistent."""
    try:
        config = parse_ip_param(value)
    except IpConfigError:
        return
    except ValueError as exc:
        if tolerate_known and any(text in str(exc) for text in KNOWN_INT_ERRORS):
            return
        raise
    for address in (config.client_ip, config.server_ip, config.gateway, *config.dns):
        assert address is None or _is_dotted_quad(address), address
    assert config.prefix_len is None or 0 <= config.prefix_len <= 32, config.prefix_len
    if config.prefix_len is not None:
        assert _is_dotted_quad(config.netmask), config.netmask
    assert config.client_ip is None or config.prefix_len is not None
    assert config.autoconf in STATIC_MODES | DHCP_MODES, config.autoconf
    assert 1 <= len(config.device) <= 15 and "/" not in config.device, config.device
    assert config.hostname is None or 1 <= len(config.hostname) <= 64
    assert len(config.dns) <= 2


def check_kestrel_cmdline(cmdline: str, listen: str, numbers: Sequence[str], *,
                          tolerate_known: bool = False) -> None:
    """The agent's settings: only ``ConfigError``; then the cmdline's ``ip=`` as the agent does."""
    try:
        host, port = parse_listen(listen)
    except ConfigError:
        pass
    else:
        assert 0 <= port <= 65535 and host, (host, port)
    keys = ("KESTREL_BACKOFF_INITIAL", "KESTREL_BACKOFF_MAX", "KESTREL_STOP_TIMEOUT",
            "KESTREL_LOG_LINES")
    env = {"KESTREL_CMDLINE": cmdline, "KESTREL_LISTEN": listen, "KESTREL_ROOT": "/nonexistent",
           "KESTREL_PID1": "0", "KESTREL_VSOCK": "0"}
    env.update(zip(keys, numbers, strict=False))
    try:
        config = load_config(env=env, argv=[])
    except ConfigError:
        params = parse_cmdline(cmdline)
    else:
        assert config.log_lines >= 1
        assert not config.pid1
        params = config.cmdline
        assert params == parse_cmdline(cmdline)
    if "ip" in params:
        check_ip_param(params["ip"], tolerate_known=tolerate_known)


# -- SSE ---------------------------------------------------------------------------------------
def _parse_all(chunks: Sequence[str]) -> tuple[list[SSEEvent], SSEParser]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events, parser


def _decode_all(events: Sequence[SSEEvent]) -> None:
    """The CLI's event decoding must accept whatever the parser produced."""
    follower = EventFollower(None, {}, notify=lambda _text: None)  # type: ignore[arg-type]
    for event in events:
        body = follower._decode(event)
        assert body is None or "type" in body


def check_sse_stream(text: str, cuts: Sequence[int]) -> None:
    """Never raises; splitting the stream anywhere gives the same events and state."""
    whole, whole_parser = _parse_all([text])
    points = sorted({cut % (len(text) + 1) for cut in cuts})
    pieces = [text[start:end] for start, end in zip([0, *points], [*points, len(text)],
                                                    strict=True)]
    split, split_parser = _parse_all(pieces)
    assert split == whole, (pieces, split, whole)
    assert split_parser.last_event_id == whole_parser.last_event_id
    assert split_parser.retry == whole_parser.retry
    assert split_parser.comments == whole_parser.comments
    for event in whole:
        assert event.event, "dispatched an event without a type"
        assert event.id is None or "\x00" not in event.id
    _decode_all(whole)


def check_sse_server_frames(events: Sequence[Event], overflow_id: int | None) -> None:
    """What volantd writes comes back out of the CLI parser unchanged, in order."""
    stream = b"".join(sse_frame(event) for event in events)
    if overflow_id is not None:
        stream += overflow_frame(overflow_id)
    parsed, parser = _parse_all([stream.decode("utf-8")])
    expected = len(events) + (overflow_id is not None)
    assert len(parsed) == expected, (len(parsed), expected)
    for sent, got in zip(events, parsed, strict=False):
        assert got.event == sent.type, (got.event, sent.type)
        assert got.id == str(sent.seq)
        assert _same(json.loads(got.data), sent.to_json())
    if overflow_id is not None:
        assert parsed[-1].event == "STREAM_OVERFLOW"
        assert json.loads(parsed[-1].data)["last_event_id"] == overflow_id
    assert parser.last_event_id == (str(events[-1].seq) if events else None)
    _decode_all(parsed)


# -- API request bodies ------------------------------------------------------------------------
#: The plugin manifest VM create requests are resolved against.
FUZZ_MANIFEST: Manifest = parse_manifest({
    "name": "fuzzplug", "version": "1", "runtime": "fuzzplug",
    "resources": {"cpu_cores": 1, "memory_mb": 256},
    "initramfs": {"url": "/var/lib/volant/fuzz.cpio.gz"},
})

_REQUEST_ERRORS = (ValidationError, UnprocessableError)


def check_create_request(body: Any) -> None:
    """``parse_create`` (and ``resolve``) raise only ``ValidationError``/``UnprocessableError``."""
    if not isinstance(body, dict):
        return  # the API layer answers 400 before calling the parser
    try:
        request = parse_create(body)
    except _REQUEST_ERRORS:
        return
    assert validate_name(request.name) == request.name
    assert request.plugin and request.plugin == request.plugin.strip()
    assert request.cpu_cores is None or 1 <= request.cpu_cores <= 256
    assert request.memory_mb is None or 16 <= request.memory_mb <= 1024 * 1024
    assert request.api_port is None or 1 <= request.api_port <= 65535
    assert len(request.kernel_cmdline) <= 1024
    # Only the volant.* keys operators may set get through; volantd composes the rest.
    assert all(not word.split("=", 1)[0].startswith("volant.")
               or word.split("=", 1)[0] in USER_VOLANT_KEYS
               for word in request.kernel_cmdline.split())
    assert isinstance(request.config, dict)
    try:
        resolved = resolve(request, FUZZ_MANIFEST)
    except _REQUEST_ERRORS:
        return
    assert resolved.cpu_cores >= 1 and resolved.memory_mb >= 16
    assert resolved.runtime == FUZZ_MANIFEST.runtime


def _null_inside_list(value: Any, in_list: bool = False) -> bool:
    if value is None:
        return in_list
    if isinstance(value, dict):
        return any(_null_inside_list(item, in_list) for item in value.values())
    if isinstance(value, list):
        return any(_null_inside_list(item, True) for item in value)
    return False


def _store_config(config: dict[str, Any], tolerate_known: bool) -> dict[str, Any] | None:
    """The config as it reads back from the deployment's TOML file (None: known bug hit).

    Known product bug (reported): ``_without_nulls`` does not descend into lists, so a
    ``null`` inside a list is accepted; TOML then refuses it (``[null]``) or silently
    drops it (``[{"k": null}]`` is stored as ``[{}]``).
    """
    if tolerate_known and _null_inside_list(config):
        return None
    encoded = DEPLOYMENT_CODEC.encode({"config": config}, "toml")
    stored: dict[str, Any] = DEPLOYMENT_CODEC.decode(encoded, "toml").document["config"]
    return stored


def check_deployment_create(body: Any, *, tolerate_known: bool = False) -> None:
    """Only ``ValidationError``; every replica's create body parses like an API request."""
    if not isinstance(body, dict):
        return
    try:
        spec = parse_create_deployment(body)
    except ValidationError:
        return
    assert validate_name(spec.name) == spec.name
    assert 0 <= spec.replicas <= MAX_REPLICAS
    assert 1.0 <= spec.rollout_timeout <= 86400 and 0.0 <= spec.min_ready_seconds <= 86400
    assert "name" not in spec.config
    assert not _contains_none(spec.config), "a null survived into the stored config"
    new_document(spec)
    stored = _store_config(spec.config, tolerate_known)
    assert stored is None or _same(stored, spec.config), "the stored config differs"
    if tolerate_known and not isinstance(spec.config.get("config", {}), dict):
        # Known product bug (reported): parse_config does not check that the nested
        # ``config`` is an object, and create_body's dict() then raises ValueError.
        return
    vm_body = create_body(replica_name(spec.name, max(spec.replicas, 1)), spec.config)
    validate_name(vm_body["name"])
    check_create_request(vm_body)


def check_deployment_patch(body: Any, *, tolerate_known: bool = False) -> None:
    """Only ``ValidationError``; an accepted patch changes something valid."""
    if not isinstance(body, dict):
        return
    try:
        patch = parse_patch(body)
    except ValidationError:
        return
    assert patch.replicas is not None or patch.config is not None
    assert patch.replicas is None or 0 <= patch.replicas <= MAX_REPLICAS
    if patch.config is not None:
        assert not _contains_none(patch.config)
        stored = _store_config(patch.config, tolerate_known)
        assert stored is None or _same(stored, patch.config), "the stored config differs"
    assert patch.rollout_timeout is None or 1.0 <= patch.rollout_timeout <= 86400
    assert patch.min_ready_seconds is None or 0.0 <= patch.min_ready_seconds <= 86400


def _contains_none(value: Any) -> bool:
    if isinstance(value, dict):
        return any(item is None or _contains_none(item) for item in value.values())
    return False
