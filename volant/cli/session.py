"""What every command needs: the API client (made on first use) and the output."""

from __future__ import annotations

import typer

from volant.cli.client import ApiClient
from volant.cli.render import Output


class Session:
    def __init__(self, api: str, api_key: str | None, output: Output, *,
                 verbose: bool = False) -> None:
        self.api = api
        self.api_key = api_key
        self.output = output
        self.verbose = verbose
        self._client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.api, self.api_key, verbose=self.verbose)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def session(ctx: typer.Context) -> Session:
    found = ctx.find_object(Session)
    if found is None:  # a command invoked without the root callback (tests, docs)
        found = Session("http://127.0.0.1:7777", None, Output())
        ctx.obj = found
    return found
