"""The six VFIO routes against the fake sysfs, with upstream's shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from quart_trio import QuartTrio

from tests.fakesysfs import AUDIO, GPU, NIC, FakeSysfsTree, standard_tree
from volant.api import vfio
from volant.api.context import ApiContext
from volant.api.errors import install_error_handlers
from volant.config import Config
from volant.devices import VfioManager
from volant.orchestrator.vfio import VfioOwnership

P = "/api/v1/vfio/devices"


@pytest.fixture
def tree(tmp_path: Path) -> FakeSysfsTree:
    return standard_tree(tmp_path / "sys")


def make_app(tree: FakeSysfsTree, ownership: VfioOwnership | None = None,
             *, fake_kernel: bool = True) -> QuartTrio:
    services: dict[str, Any] = {}
    if fake_kernel:
        services["vfio_manager"] = VfioManager(tree.sysfs())
    if ownership is not None:
        services["vfio_ownership"] = ownership
    app = QuartTrio("test")
    app.config["VOLANT_CONTEXT"] = ApiContext(config=Config(), version="t", services=services)
    install_error_handlers(app)
    app.register_blueprint(vfio.blueprint)
    return app


async def post(app: QuartTrio, path: str, body: Any) -> tuple[int, Any]:
    response = await app.test_client().post(f"{P}/{path}", json=body)
    return response.status_code, await response.get_json()


async def test_info_and_errors(tree: FakeSysfsTree) -> None:
    app = make_app(tree)
    status, body = await post(app, "info", {"pci_address": NIC})
    assert status == 200
    assert body == {"address": NIC, "vendor": "8086", "device": "1533", "driver": "igb",
                    "iommu_group": "2", "numa_node": 1}
    assert (await post(app, "info", {"pci_address": "nope"}))[0] == 400
    assert (await post(app, "info", {"pci_address": "0000:09:00.0"}))[0] == 404


async def test_validate_is_always_200(tree: FakeSysfsTree) -> None:
    app = make_app(tree)
    assert await post(app, "validate", {"pci_addresses": [GPU], "allowlist": ["10de:*"]}) == (
        200, {"valid": True, "message": "all devices are valid"})
    status, body = await post(app, "validate", {"pci_addresses": [GPU, NIC],
                                                "allowlist": ["10de:*"]})
    assert status == 200 and body["valid"] is False
    assert len(body["errors"]) == 1 and NIC in body["errors"][0]


async def test_groups_bind_paths_unbind(tree: FakeSysfsTree) -> None:
    app = make_app(tree)
    assert await post(app, "iommu-groups", {"pci_addresses": [GPU, AUDIO, NIC]}) == (
        200, [{"id": "1", "devices": [GPU, AUDIO]}, {"id": "2", "devices": [NIC]}])
    status, body = await post(app, "bind", {"pci_addresses": [NIC]})
    assert status == 200
    assert body["success"] is True and body["bound_devices"] == [NIC]
    assert body["original_drivers"] == {NIC: "igb"}
    assert tree.driver_of(NIC) == "vfio-pci"
    status, body = await post(app, "group-paths", {"pci_addresses": [NIC]})
    assert (status, body) == (200, {"group_paths": [f"{tree.root}/bus/pci/devices/{NIC}"]})
    status, body = await post(app, "unbind", {"pci_addresses": [NIC]})
    assert status == 200 and body["unbound_devices"] == [NIC]
    assert tree.driver_of(NIC) == "igb"
    assert (await post(app, "group-paths", {"pci_addresses": [NIC]}))[0] == 409


async def test_bind_refuses_unviable_group_and_changes_nothing(tree: FakeSysfsTree) -> None:
    app = make_app(tree)
    status, body = await post(app, "bind", {"pci_addresses": [NIC, GPU]})
    assert status == 409
    assert body["success"] is False and AUDIO in body["message"]
    assert (tree.driver_of(NIC), tree.driver_of(GPU)) == ("igb", "nvidia")


async def test_unbind_refuses_a_device_owned_by_a_vm(tree: FakeSysfsTree) -> None:
    ownership = VfioOwnership()
    ownership.claim(NIC, "web")
    app = make_app(tree, ownership)
    status, body = await post(app, "unbind", {"pci_addresses": [NIC]})
    assert status == 409 and "vm web" in body["message"]
    assert (await post(app, "bind", {"pci_addresses": "x"}))[0] == 400


async def test_sysfs_root_comes_from_the_environment(tree: FakeSysfsTree,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an injected manager the route reads VOLANT_SYSFS_ROOT (real adapter)."""
    monkeypatch.setenv("VOLANT_SYSFS_ROOT", str(tree.root))
    app = make_app(tree, fake_kernel=False)
    status, body = await post(app, "info", {"pci_address": GPU})
    assert (status, body["driver"], body["iommu_group"]) == (200, "nvidia", "1")
    monkeypatch.setenv("VOLANT_SYSFS_ROOT", str(tree.root / "missing"))
    assert (await post(app, "info", {"pci_address": GPU}))[0] == 404
