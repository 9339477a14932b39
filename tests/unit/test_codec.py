"""The guest-side manifest codec and kernel command-line parser (kestrel.codec)."""

from __future__ import annotations

import base64
import gzip
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kestrel.codec import (
    CMDLINE_LIMIT,
    MANIFEST_KEY,
    MAX_DECODED_BYTES,
    ManifestDecodeError,
    ManifestEncodeError,
    decode_manifest,
    encode_manifest,
    format_cmdline,
    parse_cmdline,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=8)


def b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def test_constants() -> None:
    assert MANIFEST_KEY == "volant.manifest"
    assert CMDLINE_LIMIT == 2048


@settings(max_examples=150, deadline=None)
@given(json_objects)
def test_round_trip(obj: dict[str, Any]) -> None:
    encoded = encode_manifest(obj)
    assert re.fullmatch(r"[A-Za-z0-9_-]*", encoded), "must be unpadded base64url"
    assert decode_manifest(encoded) == obj


def test_encoding_is_deterministic_and_key_order_independent() -> None:
    first = encode_manifest({"b": 1, "a": [1, 2], "c": {"y": 1, "x": 2}})
    second = encode_manifest({"c": {"x": 2, "y": 1}, "a": [1, 2], "b": 1})
    assert first == second
    raw = gzip.decompress(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    assert raw == b'{"a":[1,2],"b":1,"c":{"x":2,"y":1}}'


def test_decodes_payload_built_like_upstream_go() -> None:
    # Go: json.Marshal (struct field order, no sorting) -> gzip.NewWriter at default
    # settings (header carries a timestamp) -> base64.RawURLEncoding.
    manifest = {"name": "caddy", "version": "1.0", "resources": {"memory_mb": 512, "cpu_cores": 2}}
    payload = json.dumps(manifest).encode()
    encoded = b64url_nopad(gzip.compress(payload))
    assert "=" not in encoded
    assert decode_manifest(encoded) == manifest


def test_accepts_padding_and_standard_alphabet() -> None:
    obj = {"k": "~~~???>>>" * 7}
    encoded = encode_manifest(obj)
    padded = encoded + "=" * (-len(encoded) % 4)
    assert decode_manifest(padded) == obj
    standard = padded.replace("-", "+").replace("_", "/")
    assert decode_manifest(standard) == obj
    assert decode_manifest(f"  {encoded}\n") == obj


def test_legacy_raw_json_inside_base64() -> None:
    obj = {"name": "legacy", "n": 1}
    assert decode_manifest(b64url_nopad(json.dumps(obj).encode())) == obj


def test_raw_json_text_without_base64() -> None:
    assert decode_manifest('{"name": "plain"}') == {"name": "plain"}


def test_multi_member_gzip_is_concatenated() -> None:
    data = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert decode_manifest(b64url_nopad(data)) == {"a": 1}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("!!!not base64!!!", "neither base64url"),
        ("abcde", "impossible base64 length"),
        (b64url_nopad(b"\x00\xff\xfe binary"), "neither gzip nor UTF-8"),
        (b64url_nopad(b"not json at all"), "not valid JSON"),
        (b64url_nopad(gzip.compress(b"[1, 2]")), "must be a JSON object"),
        (b64url_nopad(gzip.compress(b'{"a": NaN}')), "NaN"),
        (b64url_nopad(gzip.compress(b'{"a": 1}')[:-6]), "truncated"),
        (b64url_nopad(b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic"), "corrupt"),
        (b64url_nopad(gzip.compress(b'{"a": 1}') + b"trailing"), "trailing garbage"),
        ('{"unterminated": ', "not valid JSON"),
        ("[" * 100_000, "neither base64url"),
        ("{" * 100_000, "not valid JSON"),
    ],
)
def test_bad_input_raises_decode_error(text: str, fragment: str) -> None:
    with pytest.raises(ManifestDecodeError, match=re.escape(fragment)):
        decode_manifest(text)


def test_non_string_input() -> None:
    with pytest.raises(ManifestDecodeError, match="must be a string"):
        decode_manifest(b"abc")  # type: ignore[arg-type]


def test_gzip_bomb_is_bounded() -> None:
    bomb = b'{"a": "' + b" " * (MAX_DECODED_BYTES + 10) + b'"}'
    encoded = b64url_nopad(gzip.compress(bomb))
    assert len(encoded) < 10_000
    with pytest.raises(ManifestDecodeError, match="exceeds"):
        decode_manifest(encoded)


def test_encode_rejects_non_json() -> None:
    with pytest.raises(ManifestEncodeError):
        encode_manifest({"x": object()})
    with pytest.raises(ManifestEncodeError):
        encode_manifest({"x": float("nan")})


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(b64url_nopad))
def test_decode_never_raises_anything_else(text: str) -> None:
    try:
        result = decode_manifest(text)
    except ManifestDecodeError:
        return
    assert isinstance(result, dict)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decode_of_gzipped_garbage(data: bytes) -> None:
    try:
        result = decode_manifest(b64url_nopad(gzip.compress(data)))
    except ManifestDecodeError:
        return
    assert isinstance(result, dict)


# ---------------------------------------------------------------- kernel command line


def test_parse_cmdline_kernel_rules() -> None:
    text = (
        "console=ttyS0 reboot=k panic=1 quiet ip=10.0.0.2::10.0.0.1:255.255.255.0:vm:eth0:off "
        'a="b c d" "e=f g" h=1 h=2 "bare" k= \tm=x=y volant.manifest=H4sI_-\n'
    )
    assert parse_cmdline(text) == {
        "console": "ttyS0",
        "reboot": "k",
        "panic": "1",
        "quiet": "",
        "ip": "10.0.0.2::10.0.0.1:255.255.255.0:vm:eth0:off",
        "a": "b c d",
        "e": "f g",
        "h": "2",
        "bare": "",
        "k": "",
        "m": "x=y",
        "volant.manifest": "H4sI_-",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("   \n", {}),
        ('a="unterminated b c', {"a": "unterminated b c"}),
        ('a=x"y z"w', {"a": 'x"y z"w'}),
        ("=z", {"=z": ""}),
        ('a=""', {"a": ""}),
        ("a=1\tb=2\nc=3", {"a": "1", "b": "2", "c": "3"}),
    ],
)
def test_parse_cmdline_edge_cases(text: str, expected: dict[str, str]) -> None:
    assert parse_cmdline(text) == expected


def test_manifest_survives_the_cmdline() -> None:
    obj = {"name": "hello", "env": {"A": "b c"}}
    line = format_cmdline({"console": "ttyS0", MANIFEST_KEY: encode_manifest(obj), "quiet": ""})
    assert decode_manifest(parse_cmdline(line)[MANIFEST_KEY]) == obj


def test_format_cmdline_sorts_and_quotes() -> None:
    assert format_cmdline({"z": "1", "a": "x y", "q": ""}) == 'a="x y" q z=1'
    with pytest.raises(ValueError, match="quote"):
        format_cmdline({"a": 'x"y'})
    with pytest.raises(ValueError, match="invalid kernel parameter name"):
        format_cmdline({"a b": "1"})


_keys = st.from_regex(r"[a-z][a-z0-9._-]{0,12}", fullmatch=True)
_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"'),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=8))
def test_format_then_parse_round_trip(args: dict[str, str]) -> None:
    assert parse_cmdline(format_cmdline(args)) == args


def test_codec_needs_only_the_standard_library() -> None:
    # The guest has no site-packages: load the module file in an isolated
    # interpreter (-I -S: no site, no user paths) and use it.
    import subprocess
    import sys
    from pathlib import Path

    import kestrel.codec

    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('codec', {kestrel.codec.__file__!r})\n"
        "codec = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(codec)\n"
        "assert codec.decode_manifest(codec.encode_manifest({'a': 1})) == {'a': 1}\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('attrs', 'cattrs', 'volant')]\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(kestrel.codec.__file__).parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
