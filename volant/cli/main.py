"""``volar``: a CLI over the volantd HTTP API (never touches state files or sockets).

Global options follow upstream: ``--api`` (``VOLANT_API_BASE``, default
``http://127.0.0.1:7777``); plus ``--api-key`` (``VOLANT_API_KEY``), which
upstream's CLI lacked. Exit codes: 0 success, 1 API/operation error, 2 usage.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

from volant import __version__

app = typer.Typer(
    name="volar",
    help="Command-line client for the Volant control plane.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


class Client:
    def __init__(self, base: str, api_key: str | None, timeout: float = 30.0) -> None:
        headers = {"X-Volant-API-Key": api_key} if api_key else {}
        self.base = base.rstrip("/")
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            _fail(f"cannot reach volantd at {self.base}: {exc}")
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except (ValueError, AttributeError):
                message = response.text.strip() or response.reason_phrase
            _fail(f"http {response.status_code}: {message}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text


def _fail(message: str) -> Any:
    typer.echo(f"volar: {message}", err=True)
    raise typer.Exit(1)


@app.callback()
def main_callback(
    ctx: typer.Context,
    api: Annotated[
        str, typer.Option("--api", "-a", envvar="VOLANT_API_BASE", help="volantd base URL.")
    ] = "http://127.0.0.1:7777",
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="VOLANT_API_KEY", help="API key.")
    ] = None,
) -> None:
    ctx.obj = Client(api, api_key)


@app.command()
def version() -> None:
    """Print the CLI version."""
    typer.echo(f"volar {__version__}")


@app.command()
def health(ctx: typer.Context) -> None:
    """Show volantd's liveness answer."""
    client: Client = ctx.obj
    typer.echo(json.dumps(client.request("GET", "/healthz"), indent=2))


def main() -> None:
    app(prog_name="volar")
