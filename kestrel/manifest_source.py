"""Where the plugin manifest comes from, in order:

1. env ``VOLANT_MANIFEST`` (encoded, as on the command line);
2. ``volant.manifest=`` on the kernel command line;
3. ``GET http://<volant.api_host>:<volant.api_port>/api/v1/plugins/<volant.plugin>/manifest``
   with ``X-Volant-API-Key`` when ``volant.api_key`` is set, retried with backoff.
"""

from __future__ import annotations

import time

from kestrel.httpclient import HttpClientError, request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class ManifestUnavailable(Exception):
    """No source produced a manifest; the message lists what was tried."""


class LoadedManifest:
    __slots__ = ("manifest", "source")

    def __init__(self, manifest: dict[str, Any], source: str) -> None:
        self.manifest = manifest
        self.source = source  # "env" | "cmdline" | "api"


def local_manifest(env_value: str | None, cmdline: dict[str, str]) -> LoadedManifest | None:
    """Sources 1 and 2; raises ManifestDecodeError for an undecodable value."""
    from kestrel.codec import decode_manifest

    if env_value:
        return LoadedManifest(decode_manifest(env_value), "env")
    encoded = cmdline.get("volant.manifest")
    if encoded:
        return LoadedManifest(decode_manifest(encoded), "cmdline")
    return None


def manifest_url(cmdline: dict[str, str]) -> str | None:
    host = cmdline.get("volant.api_host", "").strip()
    plugin = cmdline.get("volant.plugin", "").strip() or cmdline.get("volant.runtime", "").strip()
    if not host or not plugin:
        return None
    port = cmdline.get("volant.api_port", "").strip() or "7777"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/api/v1/plugins/{plugin}/manifest"


def fetch_manifest(
    cmdline: dict[str, str],
    attempts: int = 5,
    first_delay: float = 0.5,
    timeout: float = 5.0,
    log: Callable[[str], None] = lambda _msg: None,
) -> LoadedManifest:
    """Source 3, with exponential backoff between attempts (blocks)."""
    import json

    url = manifest_url(cmdline)
    if url is None:
        raise ManifestUnavailable(
            "no manifest: VOLANT_MANIFEST unset, no volant.manifest on the command line, "
            "and volant.api_host / volant.plugin missing for the API fallback"
        )
    headers = [("Accept", "application/json")]
    api_key = cmdline.get("volant.api_key", "").strip()
    if api_key:
        headers.append(("X-Volant-API-Key", api_key))
    delay = first_delay
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            response = request("GET", url, headers, timeout=timeout)
            if response.status == 200:
                document = json.loads(response.body)
                if not isinstance(document, dict):
                    raise ManifestUnavailable(f"{url} did not return a JSON object")
                # volantd may wrap the manifest; accept both shapes.
                inner = document.get("manifest")
                return LoadedManifest(inner if isinstance(inner, dict) else document, "api")
            last_error = f"{url} answered {response.status}"
            if response.status in (401, 403, 404):
                break
        except (HttpClientError, ValueError) as exc:
            last_error = str(exc)
        log(f"kestrel: manifest fetch attempt {attempt}/{attempts} failed: {last_error}")
        if attempt < attempts:
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise ManifestUnavailable(f"manifest fetch failed: {last_error}")
