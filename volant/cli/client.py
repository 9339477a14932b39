"""The one adapter between volar and volantd's HTTP API (httpx).

Every request goes through ``ApiClient.request``: it adds the API key, maps
transport failures and error statuses to one-line ``CliError``s, and with
``verbose`` prints each exchange (method, URL, status, time) to stderr.
A 404 whose body says "no route" means this volantd does not have the route
yet; that becomes a distinct, clear message instead of "not found".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import httpx

from volant.cli.errors import ApiError, CliError

DEFAULT_API = "http://127.0.0.1:7777"
DEFAULT_TIMEOUT = 30.0
API_KEY_HEADER = "X-Volant-API-Key"


def error_message(response: httpx.Response) -> str:
    """The API's ``{"error": ...}`` text, else the body, else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = response.text.strip().splitlines()
    return text[0][:300] if text else reason(response)


def reason(response: httpx.Response) -> str:
    """The reason phrase; hypercorn sends none, so fall back to the standard one."""
    return response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code)


def is_no_route(status: int, message: str) -> bool:
    return status in (404, 405) and message.startswith(("no route", "method "))


class ApiClient:
    def __init__(self, base: str = DEFAULT_API, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, verbose: bool = False,
                 log: TextIO | None = None) -> None:
        self.base = base.rstrip("/")
        self.api_key = api_key or None
        self.verbose = verbose
        self.log = log or sys.stderr
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        transport: httpx.HTTPTransport | None = None
        base_url = self.base
        if self.base.startswith("unix://"):
            # volantd's optional Unix-socket listener (VOLANT_API_UNIX_SOCKET), e.g. a
            # daemon inside a network namespace: unix:///run/volant/api.sock
            transport = httpx.HTTPTransport(uds=self.base[len("unix://"):])
            base_url = "http://volantd"
        try:
            self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout,
                                     transport=transport)
        except (ValueError, httpx.InvalidURL) as exc:
            raise CliError(f"invalid --api URL {base!r}: {exc}") from None

    def close(self) -> None:
        self.http.close()

    def _trace(self, text: str) -> None:
        if self.verbose:
            print(f"* {text}", file=self.log, flush=True)

    def _unreachable(self, exc: Exception) -> CliError:
        reason = str(exc) or type(exc).__name__
        return CliError(f"cannot reach volantd at {self.base}: {reason}")

    def response(self, method: str, path: str, *, timeout: float | None = None,
                 **kwargs: Any) -> httpx.Response:
        """Send one request; raise ``CliError``/``ApiError`` unless the status is < 400."""
        if timeout is not None:
            kwargs["timeout"] = timeout
        started = time.monotonic()
        try:
            request = self.http.build_request(method, path, **kwargs)
            self._trace(f"> {request.method} {request.url}")
            response = self.http.send(request)
        except httpx.InvalidURL as exc:
            raise CliError(f"invalid URL: {exc}") from None
        except httpx.TimeoutException as exc:
            raise CliError(f"timed out talking to volantd at {self.base} ({type(exc).__name__})"
                           ) from None
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        elapsed = (time.monotonic() - started) * 1000
        self._trace(f"< {response.status_code} {reason(response)} "
                    f"({elapsed:.1f} ms, {len(response.content)} bytes)")
        self.check(response)
        return response

    def check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        message = error_message(response)
        no_route = is_no_route(response.status_code, message)
        if no_route:
            message = (f"{message} (this volantd does not serve this route; "
                       "is it older than this volar?)")
        raise ApiError(response.status_code, message, no_route=no_route)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send and decode: JSON body, text body, or ``None`` for an empty one."""
        response = self.response(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streaming response (SSE); errors are raised like ``response``."""
        self._trace(f"> {method} {self.base}{path} (stream)")
        try:
            with self.http.stream(method, path, **kwargs) as response:
                self._trace(f"< {response.status_code} {reason(response)} (stream)")
                if response.status_code >= 400:
                    response.read()
                    self.check(response)
                yield response
        except httpx.TimeoutException as exc:
            raise CliError(f"timed out talking to volantd at {self.base} ({type(exc).__name__})"
                           ) from None
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def ws_url(self, path: str) -> str:
        if self.base.startswith("https://"):
            return "wss://" + self.base[len("https://"):] + path
        if self.base.startswith("http://"):
            return "ws://" + self.base[len("http://"):] + path
        if self.base.startswith("unix://"):
            raise CliError("websockets (console, logs) need an http(s) --api, not a Unix socket")
        raise CliError(f"cannot derive a websocket URL from {self.base!r}")
