"""One error model for every route: ``{"error": "...", "details": {...}}``.

Domain errors (``VolantError``) carry their own status. Werkzeug/Quart HTTP
errors (unknown route, wrong method, body too large) are reshaped into the
same JSON. Anything else is a bug: it is logged with the request id and the
client gets a 500 that names that id, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Quart, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from volant.errors import BackPressureError, VolantError
from volant.logging import get_logger

log = get_logger("volant.api")


def error_response(status: int, message: str, details: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if details:
        # The published contract types details as a string map; keep it that way.
        body["details"] = {
            key: value if isinstance(value, str) else json.dumps(value, default=str)
            for key, value in details.items()
        }
    response = jsonify(body)
    response.status_code = status
    return response


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(VolantError)
    async def _volant_error(exc: VolantError) -> Response:
        response = error_response(exc.status, exc.message, exc.details or None)
        if isinstance(exc, BackPressureError):
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = (exc.description or exc.name or "error").rstrip(".")
        if status == 404:
            message = f"no route for {request.method} {request.path}"
        elif status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        return error_response(status, message)

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        request_id = getattr(g, "request_id", "-")
        log.error(
            "unhandled error in request handler",
            request_id=request_id,
            method=request.method,
            path=request.path,
            exc_info=exc,
        )
        return error_response(500, f"internal error (request id {request_id})")
