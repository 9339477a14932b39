"""VM routes (upstream sections 1.2-1.4) plus ``/wait``.

Create returns as soon as the VM is accepted and persisted (201); the boot goes
on in the VM's actor. ``?wait=running&timeout=S`` on create, or
``GET /api/v1/vms/{name}/wait?state=running&timeout=S``, block until the state is
reached (200), the VM settles in another final state (409) or time runs out (408).

Config routes (upstream section 4): ``GET .../config`` and ``.../config/history``
read the files directly (reads need no actor); ``PATCH .../config`` goes to the
VM's actor, the only writer of its config files, which validates the patched
config as a whole and writes version n+1 (400/422 and no change on any error).
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, Response, current_app, jsonify, request

from volant.api import spec
from volant.api.common import context, json_object, query_int, service
from volant.errors import ConflictError, ValidationError, VolantError
from volant.orchestrator.events import EventBus, EventFilter
from volant.orchestrator.vm import PatchConfig, RestartVM, Start, Stop
from volant.orchestrator.vmcreate import prepare_create
from volant.orchestrator.vmm import StopTimeouts
from volant.orchestrator.vms import DestroyVM, VMManager
from volant.store import StateStore
from volant.vmconfig import ConfigStore

blueprint = Blueprint("vms", __name__)

SORT_FIELDS = ("name", "status", "runtime", "updated_at", "created_at")
WAITABLE = ("running", "stopped", "crashed", "failed")
SETTLED = {"running", "stopped", "crashed", "failed"}
LONG_CALL = StopTimeouts().total * 2 + 30


VERSIONED_CONFIG = spec.component("VersionedConfig", spec.obj(
    {"version": spec.INTEGER, "updated_at": spec.STRING,
     "config": spec.obj({}, description="the VM's config (upstream section 4)")},
    required=["version", "updated_at", "config"]))
CONFIG_HISTORY_ENTRY = spec.component("ConfigHistoryEntry", spec.obj(
    {"id": spec.INTEGER, "version": spec.INTEGER, "updated_at": spec.STRING,
     "config": spec.obj({})}, required=["version", "updated_at", "config"]))
CONFIG_PATCH = spec.component("VMConfigPatch", spec.obj(
    {}, description="any subset of the config's fields except plugin; merge rules in "
                    "docs (resources and api deep-merge, other fields replace, null clears)"))
DEFAULT_HISTORY_LIMIT = 50
MAX_HISTORY_LIMIT = 1000


class WaitTimeout(VolantError):
    status = 408


class ViewJsonCache:
    """Each published VM view serialised once, not once per GET.

    A VM actor publishes a new dict whenever its view changes and never mutates a
    published one, so the dict's identity tells whether the cached bytes are current.
    Under a read-heavy load, JSON encoding of the list was the largest single cost.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[dict[str, Any], bytes]] = {}

    def encode(self, view: dict[str, Any]) -> bytes:
        name = view["name"]
        hit = self._cache.get(name)
        if hit is not None and hit[0] is view:
            return hit[1]
        data: bytes = current_app.json.dumps(view, separators=(",", ":")).encode()
        self._cache[name] = (view, data)
        return data

    def prune(self, live: set[str]) -> None:
        """Forget VMs that are gone (called when the cache outgrows the live set)."""
        for name in [n for n in self._cache if n not in live]:
            del self._cache[name]

    def __len__(self) -> int:
        return len(self._cache)


_view_json = ViewJsonCache()


def _json_body(fragments: list[bytes] | bytes, status: int = 200) -> Response:
    """A JSON response from pre-encoded bytes, formatted as ``jsonify`` formats it."""
    body = b"[" + b",".join(fragments) + b"]" if isinstance(fragments, list) else fragments
    return Response(body + b"\n", status=status, content_type="application/json")


def _manager() -> VMManager:
    manager: VMManager = service("vm_manager")
    return manager


@blueprint.get("/api/v1/vms")
@spec.api_doc(
    summary="List VMs", tags=["vm"], operation_id="listVMs",
    parameters=[spec.query_param("status", spec.STRING, "repeatable or comma-separated"),
                spec.query_param("runtime", spec.STRING), spec.query_param("plugin", spec.STRING),
                spec.query_param("q", spec.STRING, "substring of name, ip or runtime"),
                spec.query_param("limit", spec.INTEGER), spec.query_param("offset", spec.INTEGER),
                spec.query_param("sort", spec.enum(list(SORT_FIELDS))),
                spec.query_param("order", spec.enum(["asc", "desc"]))],
    responses={200: spec.Response("VMs; X-Total-Count is the count before paging",
                                  spec.array(spec.VM),
                                  headers={"X-Total-Count": spec.INTEGER}),
               400: spec.ERROR},
)
async def list_vms() -> Response:
    views = _manager().list_views()
    statuses = {s.strip().lower() for raw in request.args.getlist("status")
                for s in raw.split(",") if s.strip()}
    runtime = request.args.get("runtime", "").strip().lower()
    plugin = request.args.get("plugin", "").strip().lower()
    text = request.args.get("q", "").strip().lower()
    limit = query_int("limit")
    offset = query_int("offset", 0) or 0
    sort = request.args.get("sort", "created_at")
    if sort not in SORT_FIELDS:
        sort = "created_at"
    descending = request.args.get("order", "asc").lower() == "desc"

    def keep(view: dict[str, Any]) -> bool:
        if statuses and view["status"] not in statuses:
            return False
        if runtime and view["runtime"].lower() != runtime:
            return False
        if plugin and view["plugin"].lower() != plugin:
            return False
        if text:
            haystack = f"{view['name']} {view['ip_address']} {view['runtime']}".lower()
            return text in haystack
        return True

    selected = [v for v in views if keep(v)]
    selected.sort(key=lambda v: (v.get(sort) or "", v["name"]), reverse=descending)
    total = len(selected)
    page = selected[offset: offset + limit if limit is not None else None]
    if len(_view_json) > 2 * len(views) + 64:
        _view_json.prune({v["name"] for v in views})
    response = _json_body([_view_json.encode(v) for v in page])
    response.headers["X-Total-Count"] = str(total)
    return response


@blueprint.post("/api/v1/vms")
@spec.api_doc(
    summary="Create a VM (returns once accepted; ?wait=running blocks)", tags=["vm"],
    operation_id="createVM", request=spec.CREATE_VM,
    parameters=[spec.query_param("wait", spec.enum(list(WAITABLE))),
                spec.query_param("timeout", spec.INTEGER, "seconds for ?wait")],
    responses={201: spec.VM, 400: spec.ERROR, 404: spec.ERROR, 408: spec.ERROR,
               409: spec.ERROR, 422: spec.ERROR, 507: spec.ERROR},
)
async def create_vm() -> tuple[Response, int]:
    body = await json_object()
    wait_state, wait_timeout = _wait_args()
    ctx = context()
    create = await prepare_create(body, ctx.services["plugins"], service("media"))
    view = await ctx.services["vms"].call(create, timeout=60)
    if wait_state:
        view = await _wait_for(create.resolved.request.name, wait_state, wait_timeout)
    return jsonify(view), 201


@blueprint.get("/api/v1/vms/<name>")
@spec.api_doc(summary="Fetch VM by name", tags=["vm"], operation_id="getVMByName",
              responses={200: spec.VM, 404: spec.ERROR})
async def get_vm(name: str) -> Response:
    return _json_body(_view_json.encode(_manager().get_view(name)))


@blueprint.delete("/api/v1/vms/<name>")
@spec.api_doc(summary="Destroy a VM (stop, then remove tap, IP, disks, record)", tags=["vm"],
              operation_id="deleteVM", responses={204: None, 404: spec.ERROR, 409: spec.ERROR})
async def delete_vm(name: str) -> tuple[str, int]:
    done: trio.Event = await context().services["vms"].call(DestroyVM(name), timeout=30)
    await done.wait()
    return "", 204


def _config_store(name: str) -> ConfigStore:
    _manager().get_view(name)  # 404 for an unknown VM
    store: StateStore = _manager().deps.store
    return ConfigStore(store, name)


@blueprint.get("/api/v1/vms/<name>/config")
@spec.api_doc(summary="Fetch a VM's current config", tags=["vm"], operation_id="getVMConfig",
              responses={200: VERSIONED_CONFIG, 404: spec.ERROR})
async def get_vm_config(name: str) -> Response:
    store = _config_store(name)
    current = await trio.to_thread.run_sync(store.require)
    return jsonify(current.to_json())


@blueprint.get("/api/v1/vms/<name>/config/history")
@spec.api_doc(summary="List a VM's config versions, newest (current) first", tags=["vm"],
              operation_id="getVMConfigHistory",
              parameters=[spec.query_param("limit", spec.INTEGER,
                                           f"1-{MAX_HISTORY_LIMIT}, default "
                                           f"{DEFAULT_HISTORY_LIMIT}")],
              responses={200: spec.array(CONFIG_HISTORY_ENTRY), 400: spec.ERROR,
                         404: spec.ERROR})
async def get_vm_config_history(name: str) -> Response:
    limit = query_int("limit", DEFAULT_HISTORY_LIMIT, minimum=1) or DEFAULT_HISTORY_LIMIT
    if limit > MAX_HISTORY_LIMIT:
        raise ValidationError(f"invalid limit: must be <= {MAX_HISTORY_LIMIT}", field="limit")
    store = _config_store(name)
    entries = await trio.to_thread.run_sync(store.history, limit)
    return jsonify([entry.to_json() for entry in entries])


@blueprint.patch("/api/v1/vms/<name>/config")
@spec.api_doc(summary="Patch a VM's config (new version; effective at the next start)",
              tags=["vm"], operation_id="patchVMConfig", request=CONFIG_PATCH,
              responses={200: VERSIONED_CONFIG, 400: spec.ERROR, 404: spec.ERROR,
                         409: spec.ERROR, 422: spec.ERROR, 507: spec.ERROR})
async def patch_vm_config(name: str) -> Response:
    body = await json_object()
    return jsonify(await _vm_call(name, PatchConfig(body)))


async def _vm_call(name: str, msg: Any) -> Any:
    ref = _manager().vm_ref(name)
    return await ref.call(msg, timeout=LONG_CALL)


async def _call_then_wait(name: str, msg: Any) -> dict[str, Any]:
    """Send ``msg`` to the VM, then honour ``?wait=STATE&timeout=S`` if given."""
    wait_state, wait_timeout = _wait_args()
    view: dict[str, Any] = await _vm_call(name, msg)
    if wait_state:
        view = await _wait_for(name, wait_state, wait_timeout)
    return view


@blueprint.post("/api/v1/vms/<name>/start")
@spec.api_doc(summary="Start a stopped VM", tags=["vm"], operation_id="startVM",
              parameters=[spec.query_param("wait", spec.enum(list(WAITABLE))),
                          spec.query_param("timeout", spec.INTEGER)],
              responses={200: spec.VM, 404: spec.ERROR, 408: spec.ERROR, 409: spec.ERROR})
async def start_vm(name: str) -> Response:
    return jsonify(await _call_then_wait(name, Start()))


@blueprint.post("/api/v1/vms/<name>/stop")
@spec.api_doc(summary="Stop a VM (agent power-off, VMM API, SIGTERM, SIGKILL)", tags=["vm"],
              operation_id="stopVM", responses={200: spec.VM, 404: spec.ERROR})
async def stop_vm(name: str) -> Response:
    return jsonify(await _vm_call(name, Stop()))


@blueprint.post("/api/v1/vms/<name>/restart")
@spec.api_doc(summary="Stop then start a VM", tags=["vm"], operation_id="restartVM",
              parameters=[spec.query_param("wait", spec.enum(list(WAITABLE))),
                          spec.query_param("timeout", spec.INTEGER)],
              responses={200: spec.VM, 404: spec.ERROR, 408: spec.ERROR, 409: spec.ERROR})
async def restart_vm(name: str) -> Response:
    return jsonify(await _call_then_wait(name, RestartVM()))


@blueprint.get("/api/v1/vms/<name>/wait")
@spec.api_doc(summary="Wait until a VM reaches a state", tags=["vm"], operation_id="waitVM",
              parameters=[spec.query_param("state", spec.enum(list(WAITABLE))),
                          spec.query_param("timeout", spec.INTEGER)],
              responses={200: spec.VM, 400: spec.ERROR, 404: spec.ERROR, 408: spec.ERROR,
                         409: spec.ERROR})
async def wait_vm(name: str) -> Response:
    state = request.args.get("state", "running")
    if state not in WAITABLE:
        raise ValidationError(f"state: expected one of {', '.join(WAITABLE)}", field="state")
    timeout = query_int("timeout", 60, minimum=0) or 0
    return jsonify(await _wait_for(name, state, float(timeout)))


def _wait_args() -> tuple[str, float]:
    state = request.args.get("wait", "")
    if state and state not in WAITABLE:
        raise ValidationError(f"wait: expected one of {', '.join(WAITABLE)}", field="wait")
    timeout = query_int("timeout", 120, minimum=0) or 0
    return state, float(timeout)


async def _wait_for(name: str, state: str, timeout: float) -> dict[str, Any]:
    """Wait on the VM's events (no polling) until it reaches ``state``."""
    manager = _manager()
    bus: EventBus = service("events")
    subscription = await bus.subscribe(flt=EventFilter(names=frozenset({name})))
    with subscription, trio.move_on_after(timeout):
        while True:
            view = manager.get_view(name)
            if view["status"] == state:
                return view
            if view["status"] in SETTLED - {state} and _settled_elsewhere(view, state):
                raise ConflictError(
                    f"vm {name} is {view['status']}, not {state}",
                    status=view["status"], last_exit=view.get("last_exit") or "")
            try:
                await subscription.__anext__()
            except StopAsyncIteration:
                await trio.sleep(0.05)  # overflowed subscription: fall back to re-checking
                subscription = await bus.subscribe(flt=EventFilter(names=frozenset({name})))
    raise WaitTimeout(f"vm {name} did not reach {state} within {timeout:.0f}s",
                      status=manager.get_view(name)["status"])


def _settled_elsewhere(view: dict[str, Any], state: str) -> bool:
    """A state that will not change by itself (a crash with a restart pending will)."""
    if view["status"] == "failed":
        return True
    return view.get("desired_state") != "running" and state == "running"
