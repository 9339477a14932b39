"""The app factory: one blueprint per resource, shared error model, request ids."""

from __future__ import annotations

import contextlib
import re
import uuid

import trio
from quart import Response, g, request
from quart_trio import QuartTrio

from volant.api import (
    agent,
    artifacts,
    deployments,
    events,
    metrics,
    openapi,
    plugins,
    system,
    vfio,
    vms,
    ws,
)
from volant.api.auth import install_auth
from volant.api.context import ApiContext
from volant.api.errors import install_error_handlers

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(ctx: ApiContext) -> QuartTrio:
    app = QuartTrio("volant")
    app.config["VOLANT_CONTEXT"] = ctx
    # Streaming responses (SSE, agent proxy, waits) must never be cut by a server-side
    # timeout, which is what killed upstream's event stream after 30 s.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 120
    app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.before_request
    async def _assign_request_id() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    async def _echo_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        return response

    @app.after_request
    async def _drain_request_body(response: Response) -> Response:
        """Read what the handler left unread before answering.

        A handler that fails early (an unknown plugin, say) answers without touching the
        body; hypercorn then left the keep-alive connection waiting for it, and the
        client's next request on that connection hung (seen as 5 s read timeouts on
        every other request). Bodies are bounded by MAX_CONTENT_LENGTH.
        """
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            # Exceptions: already streamed away (agent proxy), or too large.
            with trio.move_on_after(5), contextlib.suppress(Exception):
                await request.get_data()
        return response

    install_error_handlers(app)
    api_metrics = metrics.install_metrics(app, ctx)
    install_auth(app, ctx.config,
                 on_reject=lambda reason: api_metrics.auth_rejections.labels(reason).inc())
    app.register_blueprint(system.blueprint)
    app.register_blueprint(events.blueprint)
    app.register_blueprint(metrics.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(plugins.blueprint)
    app.register_blueprint(artifacts.blueprint)
    app.register_blueprint(vms.blueprint)
    app.register_blueprint(deployments.blueprint)
    app.register_blueprint(agent.blueprint)
    app.register_blueprint(ws.blueprint)
    app.register_blueprint(vfio.blueprint)
    return app
