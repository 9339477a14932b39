"""VFIO routes (upstream section 1.8): all ``POST``, JSON in and out, upstream shapes.

Differences from upstream, all on the side of safety:
- ``bind`` validates and checks IOMMU group viability first, binds through
  ``driver_override`` and is all-or-nothing (devices bound by a failed request
  are given back); the response adds ``original_drivers``.
- ``unbind`` refuses a device that a VM owns (409) and lets the kernel re-probe
  the device's own driver instead of leaving it driverless.
- Failures carry the right status (400/404/409/422/503), not always 500; the
  body keeps upstream's ``{success: false, message}`` plus our ``error``.

The sysfs root is ``config.sysfs_root`` if the daemon config has one, else
``VOLANT_SYSFS_ROOT``, else ``/sys``. Services used when present:
``vfio_ownership`` (a ``VfioOwnership``) and ``vfio_manager`` (a ``VfioManager``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
from quart import Blueprint, Response, jsonify

from volant.api import spec
from volant.api.common import context, json_object
from volant.devices import Sysfs, VfioManager, normalize_address, sysfs_root
from volant.errors import ConflictError, ValidationError, VolantError
from volant.orchestrator.vfio import VfioOwnership

ADDRESSES = spec.obj({"pci_addresses": spec.array(spec.STRING)}, required=["pci_addresses"])

blueprint = Blueprint("vfio", __name__)

PREFIX = "/api/v1/vfio/devices"
MAX_DEVICES = 64
T = TypeVar("T")


def _manager() -> VfioManager:
    ctx = context()
    supplied = ctx.services.get("vfio_manager")
    if isinstance(supplied, VfioManager):
        return supplied
    root = getattr(ctx.config, "sysfs_root", None)
    return VfioManager(Sysfs(Path(root) if root else sysfs_root()))


def _ownership() -> VfioOwnership | None:
    found = context().services.get("vfio_ownership")
    return found if isinstance(found, VfioOwnership) else None


async def _blocking(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


def _addresses(body: dict[str, Any], *, allow_empty: bool = False) -> list[str]:
    raw = body.get("pci_addresses")
    if raw is None:
        raw = []
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValidationError("pci_addresses: expected an array of strings",
                              field="pci_addresses")
    if not raw and not allow_empty:
        raise ValidationError("pci_addresses: at least one address is required",
                              field="pci_addresses")
    if len(raw) > MAX_DEVICES:
        raise ValidationError(f"pci_addresses: at most {MAX_DEVICES} devices",
                              field="pci_addresses")
    return list(raw)


def _allowlist(body: dict[str, Any]) -> list[str]:
    raw = body.get("allowlist")
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValidationError("allowlist: expected an array of strings", field="allowlist")
    return list(raw)


def _failure(exc: VolantError) -> tuple[Response, int]:
    body: dict[str, Any] = {"success": False, "message": exc.message, "error": exc.message}
    if exc.details:
        body["details"] = {k: v if isinstance(v, str) else str(v)
                           for k, v in exc.details.items()}
    return jsonify(body), exc.status


@blueprint.post(f"{PREFIX}/info")
@spec.api_doc(summary="PCI device info", tags=["vfio"], operation_id="vfioDeviceInfo",
              request=spec.obj({"pci_address": spec.STRING}, required=["pci_address"]),
              responses={200: spec.obj({"address": spec.STRING, "vendor": spec.STRING,
                                        "device": spec.STRING, "driver": spec.STRING,
                                        "iommu_group": spec.STRING, "numa_node": spec.STRING}),
                         400: spec.ERROR, 404: spec.ERROR})
async def device_info() -> Response:
    body = await json_object()
    address = body.get("pci_address")
    manager = _manager()
    info = await _blocking(lambda: manager.info(address))
    return jsonify(info.to_json())


@blueprint.post(f"{PREFIX}/validate")
@spec.api_doc(summary="Validate PCI addresses (+ allowlist)", tags=["vfio"],
              operation_id="vfioValidate",
              request=spec.obj({"pci_addresses": spec.array(spec.STRING),
                                "allowlist": spec.array(spec.STRING)}),
              responses={200: spec.obj({"valid": spec.BOOLEAN, "message": spec.STRING,
                                        "errors": spec.array(spec.STRING)}),
                         400: spec.ERROR})
async def validate_devices() -> Response:
    """Always 200: ``{valid, message?, errors?}`` (upstream)."""
    body = await json_object()
    addresses = _addresses(body, allow_empty=True)
    allowlist = _allowlist(body)
    manager = _manager()
    errors = await _blocking(lambda: manager.validation_errors(addresses, allowlist))
    if errors:
        return jsonify({"valid": False, "message": f"{len(errors)} device(s) failed validation",
                        "errors": errors})
    return jsonify({"valid": True, "message": "all devices are valid"})


@blueprint.post(f"{PREFIX}/iommu-groups")
@spec.api_doc(summary="IOMMU groups of devices", tags=["vfio"], operation_id="vfioIommuGroups",
              request=ADDRESSES,
              responses={200: spec.array(spec.obj({"id": spec.STRING,
                                                   "devices": spec.array(spec.STRING)})),
                         400: spec.ERROR})
async def iommu_groups() -> Response:
    body = await json_object()
    addresses = _addresses(body)
    manager = _manager()
    groups = await _blocking(lambda: manager.iommu_groups(addresses))
    return jsonify([group.to_json() for group in groups])


def _refuse_owned(addresses: list[str], action: str) -> None:
    ownership = _ownership()
    if ownership is None:
        return
    for address in addresses:
        owner = ownership.owner(address)
        if owner is not None:
            raise ConflictError(
                f"PCI device {normalize_address(address)} is assigned to vm {owner}; "
                f"it cannot be {action} through this route", owner=owner)


def _bind_all(manager: VfioManager, addresses: list[str]) -> dict[str, str | None]:
    wanted = manager.validate(addresses)
    manager.check_viability(wanted)
    originals: dict[str, str | None] = {}
    try:
        for address in wanted:
            plan = manager.bind(address)
            originals[address] = plan.original_driver
    except VolantError:
        for address, original in originals.items():
            manager.release(address, original)
        raise
    return originals


@blueprint.post(f"{PREFIX}/bind")
@spec.api_doc(summary="Bind devices to vfio-pci (group viability checked)", tags=["vfio"],
              operation_id="vfioBind", request=ADDRESSES,
              responses={200: spec.ANY_OBJECT, 400: spec.ERROR, 409: spec.ANY_OBJECT})
async def bind_devices() -> tuple[Response, int]:
    body = await json_object()
    try:
        addresses = _addresses(body)
        _refuse_owned(addresses, "rebound")
        manager = _manager()
        originals = await _blocking(lambda: _bind_all(manager, addresses))
    except VolantError as exc:
        return _failure(exc)
    bound = list(originals)
    return jsonify({"success": True, "message": f"bound {len(bound)} device(s) to vfio-pci",
                    "bound_devices": bound,
                    "original_drivers": {k: v or "" for k, v in originals.items()}}), 200


@blueprint.post(f"{PREFIX}/unbind")
@spec.api_doc(summary="Release devices from vfio-pci, restoring the original driver",
              tags=["vfio"], operation_id="vfioUnbind", request=ADDRESSES,
              responses={200: spec.ANY_OBJECT, 400: spec.ERROR, 409: spec.ANY_OBJECT})
async def unbind_devices() -> tuple[Response, int]:
    body = await json_object()
    try:
        addresses = _addresses(body)
        _refuse_owned(addresses, "unbound")
        manager = _manager()

        def unbind_all() -> list[str]:
            done = []
            for address in addresses:
                manager.unbind_to_host(address)
                done.append(normalize_address(address))
            return done

        unbound = await _blocking(unbind_all)
    except VolantError as exc:
        return _failure(exc)
    return jsonify({"success": True, "message": f"unbound {len(unbound)} device(s)",
                    "unbound_devices": unbound}), 200


@blueprint.post(f"{PREFIX}/group-paths")
@spec.api_doc(summary="Device paths to hand to the VMM", tags=["vfio"],
              operation_id="vfioGroupPaths", request=ADDRESSES,
              responses={200: spec.obj({"group_paths": spec.array(spec.STRING)}),
                         400: spec.ERROR, 409: spec.ERROR})
async def group_paths() -> Response:
    """Device paths for the VMM (as upstream, despite the name); 409 if not on vfio-pci."""
    body = await json_object()
    addresses = _addresses(body)
    manager = _manager()
    paths = await _blocking(lambda: manager.device_paths(addresses))
    return jsonify({"group_paths": paths})
