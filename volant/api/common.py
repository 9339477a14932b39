"""Small helpers shared by the resource modules."""

from __future__ import annotations

import json
from typing import Any

from quart import current_app, request

from volant.actors import ActorRef
from volant.api.context import ApiContext
from volant.errors import UnavailableError, ValidationError

CALL_TIMEOUT = 30.0


def context() -> ApiContext:
    ctx: ApiContext = current_app.config["VOLANT_CONTEXT"]
    return ctx


def service(name: str) -> Any:
    """A service (usually an ``ActorRef``) by name; 503 until the daemon has started it."""
    found = context().services.get(name)
    if found is None:
        raise UnavailableError(f"{name} service is not available")
    return found


async def call(name: str, msg: Any, timeout: float = CALL_TIMEOUT) -> Any:
    ref: ActorRef[Any] = service(name)
    return await ref.call(msg, timeout=timeout)


async def json_body(*, required: bool = True) -> Any:
    """The decoded JSON body; 400 with the parser's reason when it is not JSON."""
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        if required:
            raise ValidationError("request body must be a JSON document")
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"invalid JSON body: {exc}") from None


async def json_object(*, required: bool = True) -> dict[str, Any]:
    body = await json_body(required=required)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object")
    return body


def query_int(name: str, default: int | None = None, minimum: int = 0) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"invalid {name}: expected an integer", field=name) from None
    if value < minimum:
        raise ValidationError(f"invalid {name}: must be >= {minimum}", field=name)
    return value
