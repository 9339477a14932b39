"""System routes: liveness and daemon facts."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, jsonify

from volant.api.context import ApiContext

blueprint = Blueprint("system", __name__)


def _ctx() -> ApiContext:
    ctx: ApiContext = current_app.config["VOLANT_CONTEXT"]
    return ctx


@blueprint.get("/healthz")
async def healthz() -> Response:
    """Liveness: 200 as long as the event loop answers (upstream: ``{"status":"ok"}``)."""
    ctx = _ctx()
    return jsonify(
        {"status": "ok", "version": ctx.version, "uptime_seconds": round(ctx.uptime_seconds, 3)}
    )


@blueprint.get("/api/v1/system/info")
async def system_info() -> Response:
    ctx = _ctx()
    cfg = ctx.config
    advertise = cfg.api_advertise or _derived_advertise(
        cfg.listen_host, cfg.listen_port, cfg.host_ip
    )
    return jsonify(
        {
            "status": "ok",
            "api_listen_addr": cfg.api_listen,
            "api_advertise_addr": advertise,
            "host_ip": cfg.host_ip,
            "version": ctx.version,
            "bridge": cfg.bridge,
            "subnet": cfg.subnet,
            "hypervisor": cfg.hypervisor,
        }
    )


def _derived_advertise(host: str, port: int, host_ip: str) -> str:
    """Upstream rule: the listen host if routable, else the bridge's host IP."""
    import ipaddress

    try:
        addr = ipaddress.ip_address(host)
        routable = not (addr.is_loopback or addr.is_unspecified)
    except ValueError:
        routable = host not in ("localhost", "")
    return f"{host if routable else host_ip}:{port}"
