"""Build JSON-like request bodies from fuzzer bytes, biased towards the fields parsers know.

Mutating raw JSON text mostly produces syntax errors; choosing keys from the
parsers' vocabulary and values near their limits reaches the validation code
far more often. Works with any object offering atheris' ``FuzzedDataProvider``
methods used below (so this module does not import atheris).
"""

from __future__ import annotations

from typing import Any, Protocol


class Provider(Protocol):
    def ConsumeIntInRange(self, low: int, high: int) -> int: ...
    def ConsumeUnicodeNoSurrogates(self, count: int) -> str: ...
    def ConsumeRegularFloat(self) -> float: ...
    def remaining_bytes(self) -> int: ...


KEYS: tuple[str, ...] = (
    "name", "plugin", "runtime", "cpu_cores", "memory_mb", "kernel_cmdline", "api_host",
    "api_port", "config", "restart_policy", "resources", "api", "network", "mode", "host",
    "port", "max_retries", "replicas", "rollout_timeout", "min_ready_seconds",
)
STRINGS: tuple[str, ...] = (
    "", " ", "web", "web-1", "Web", "-web", "fuzzplug", "FuzzPlug", " fuzzplug ", "other",
    "bridged", "vsock", "dhcp", "BRIDGED", "bogus", "always", "no", "on-failure",
    "console=ttyS0", "volant.manifest=x", "a\x00b", "a b", "\u00b2", "x" * 64, "x" * 1025,
)
INTS: tuple[int, ...] = (
    0, 1, -1, 2, 15, 16, 255, 256, 257, 1000, 1001, 65535, 65536, 86400, 86401,
    1024 * 1024, 1024 * 1024 + 1, 1 << 31, (1 << 31) + 1, 1 << 64,
)
FLOATS: tuple[float, ...] = (0.0, 0.5, 1.0, 0.999, 86400.0, 86400.5, float("nan"),
                             float("inf"), -0.0, 1e400)


def json_value(fdp: Provider, depth: int = 0) -> Any:
    """One JSON value; objects and arrays only while ``depth`` is small."""
    limit = 9 if depth < 4 else 6
    kind = fdp.ConsumeIntInRange(0, limit)
    if kind == 0 or fdp.remaining_bytes() == 0:
        return None
    if kind == 1:
        return fdp.ConsumeIntInRange(0, 1) == 1
    if kind == 2:
        return INTS[fdp.ConsumeIntInRange(0, len(INTS) - 1)] * (
            -1 if fdp.ConsumeIntInRange(0, 3) == 0 else 1)
    if kind == 3:
        return FLOATS[fdp.ConsumeIntInRange(0, len(FLOATS) - 1)]
    if kind == 4:
        return STRINGS[fdp.ConsumeIntInRange(0, len(STRINGS) - 1)]
    if kind == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 6:
        return fdp.ConsumeRegularFloat()
    if kind == 7:
        return [json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return json_object(fdp, depth + 1)


def json_object(fdp: Provider, depth: int = 0) -> dict[str, Any]:
    """An object whose keys are mostly known field names."""
    body: dict[str, Any] = {}
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        if fdp.remaining_bytes() == 0:
            break
        if fdp.ConsumeIntInRange(0, 7) == 0:
            key = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
        else:
            key = KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]
        body[key] = json_value(fdp, depth)
    return body
