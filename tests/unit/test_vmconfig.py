"""VM config model: parsing, PATCH merge rules, restart_required, versions and history."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from volant.errors import UnprocessableError, ValidationError
from volant.store import StateStore
from volant.vmconfig import (
    CONFIG_CODEC,
    ConfigStore,
    VMConfig,
    apply_patch,
    config_to_dict,
    effective_devices,
    effective_network,
    parse_config,
    parse_patch,
    restart_required,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "manifests" / "hello.json"


def manifest_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(FIXTURE.read_text())
    return doc


def config_doc(**overrides: Any) -> dict[str, Any]:
    """The shape VMManager writes at create, plus overrides."""
    doc: dict[str, Any] = {
        "plugin": "hello",
        "runtime": "hello",
        "kernel_cmdline": "quiet",
        "resources": {"cpu_cores": 2, "memory_mb": 512},
        "api": {"host": "10.0.0.1", "port": 7777},
        "network": {"mode": "bridged"},
        "restart_policy": {"name": "on-failure", "max_retries": 5},
        "manifest": manifest_doc(),
    }
    doc.update(overrides)
    return doc


def base_config() -> VMConfig:
    return parse_config(config_doc(metadata={"owner": "ops"}))


# ------------------------------------------------------------------ parse


def test_parse_round_trips_through_config_to_dict() -> None:
    config = parse_config(config_doc(
        metadata={"team": "a", "n": 3, "tags": ["x"]},
        expose=[{"port": 80, "host_port": 8080}],
        kernel_override="/boot/vmlinux",
    ))
    assert config.resources.cpu_cores == 2
    assert config.api.port == 7777
    assert config.expose[0].protocol == "tcp"
    again = parse_config(config_to_dict(config))
    assert again == config


def test_runtime_defaults_to_the_manifest_runtime() -> None:
    doc = config_doc()
    del doc["runtime"]
    assert parse_config(doc).runtime == "hello"


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ({"resources": {"cpu_cores": "2", "memory_mb": 1}}, ValidationError,
         "resources.cpu_cores"),
        ({"resources": {"cpu_cores": 0, "memory_mb": 512}}, UnprocessableError,
         "resources.cpu_cores"),
        ({"resources": None}, ValidationError, "resources"),
        ({"bogus": 1}, ValidationError, "bogus"),
        ({"api": {"port": 70000}}, UnprocessableError, "api.port"),
        ({"expose": [{"port": 80}]}, ValidationError, "expose[0].host_port"),
        ({"expose": [{"port": 80, "host_port": 8080, "protocol": "sctp"}]},
         UnprocessableError, "expose[0].protocol"),
        ({"kernel_cmdline": "volant.ip=1"}, UnprocessableError, "kernel_cmdline"),
        ({"network": {"mode": "wifi"}}, UnprocessableError, "network.mode"),
        ({"devices": {"pci_passthrough": ["01:00.0"]}}, UnprocessableError,
         "devices.pci_passthrough[0]"),
        ({"cloud_init": {"user_data": {"content": "x"}}}, UnprocessableError,
         "cloud_init.user_data.inline"),
        ({"manifest": None}, ValidationError, "manifest"),
        ({"metadata": {"a": None}}, UnprocessableError, "metadata.a"),
        ({"metadata": {"big": 2**64}}, UnprocessableError, "metadata.big"),
        ({"cloud_init": {"user_data": {"path": "u.yaml"}}}, ValidationError,
         "cloud_init.user_data.path"),
        ({"restart_policy": {"name": "sometimes"}}, UnprocessableError,
         "restart_policy.name"),
    ],
)
def test_parse_errors_name_the_field(change: dict[str, Any], error: type[Exception],
                                     field: str) -> None:
    with pytest.raises(error) as info:
        parse_config(config_doc(**change))
    assert type(info.value) is error
    assert info.value.details["field"] == field  # type: ignore[attr-defined]
    assert str(info.value).startswith(field)


def test_embedded_manifest_errors_are_prefixed() -> None:
    manifest = manifest_doc()
    manifest["resources"]["cpu_cores"] = 0
    with pytest.raises(UnprocessableError) as info:
        parse_config(config_doc(manifest=manifest))
    assert info.value.details["field"] == "manifest.resources.cpu_cores"


def test_manifest_must_name_the_plugin() -> None:
    with pytest.raises(UnprocessableError) as info:
        parse_config(config_doc(plugin="other"))
    assert info.value.details["field"] == "manifest.name"


# ------------------------------------------------------------------ patch


def test_resources_and_api_deep_merge() -> None:
    config = base_config()
    patched = apply_patch(config, parse_patch({"resources": {"cpu_cores": 4},
                                               "api": {"port": 9000}}))
    assert (patched.resources.cpu_cores, patched.resources.memory_mb) == (4, 512)
    assert (patched.api.host, patched.api.port) == ("10.0.0.1", 9000)
    cleared = apply_patch(patched, parse_patch({"api": {"host": None}}))
    assert (cleared.api.host, cleared.api.port) == ("", 9000)
    assert apply_patch(patched, parse_patch({"api": None})).api.port is None


def test_sub_objects_replace_whole() -> None:
    config = parse_config(config_doc(
        network={"mode": "bridged", "subnet": "10.9.0.0/24", "gateway": "10.9.0.1"}))
    patched = apply_patch(config, parse_patch({"network": {"mode": "dhcp"}}))
    assert patched.network is not None
    assert patched.network.mode == "dhcp"
    assert patched.network.subnet == ""  # replaced, not merged
    patched = apply_patch(config, parse_patch({"metadata": {"new": "x"}}))
    assert patched.metadata == {"new": "x"}


def test_null_clears_and_empty_expose_clears() -> None:
    config = parse_config(config_doc(
        metadata={"a": "b"}, expose=[{"port": 80, "host_port": 8080}],
        cloud_init={"user_data": {"inline": True, "content": "#cloud-config\n"}}))
    patched = apply_patch(config, parse_patch(
        {"metadata": None, "kernel_cmdline": None, "cloud_init": None, "expose": []}))
    assert patched.metadata == {}
    assert patched.kernel_cmdline == ""
    assert patched.cloud_init is None
    assert patched.expose == ()
    assert "expose" not in config_to_dict(patched)


def test_network_patch_is_applied() -> None:
    patched = apply_patch(base_config(), parse_patch({"network": {"mode": "vsock"}}))
    assert patched.network is not None and patched.network.mode == "vsock"
    network = effective_network(patched)
    assert network is not None and network.mode == "vsock"
    cleared = apply_patch(patched, parse_patch({"network": None}))
    manifest_network = effective_network(cleared)
    assert manifest_network is not None and manifest_network.subnet == "192.168.127.0/24"


def test_config_devices_override_the_manifest() -> None:
    config = base_config()
    manifest_devices = effective_devices(config)
    assert manifest_devices is not None
    assert manifest_devices.pci_passthrough == ("0000:01:00.0",)
    patched = apply_patch(config, parse_patch({"devices": {"pci_passthrough": ["0000:02:00.0"]}}))
    override = effective_devices(patched)
    assert override is not None and override.pci_passthrough == ("0000:02:00.0",)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"plugin": "other"}, ValidationError),
        ({"unknown": 1}, ValidationError),
        ({"resources": None}, ValidationError),
        ({"resources": {"cpu_cores": None}}, ValidationError),
        ({"runtime": None}, ValidationError),
        ({"resources": {"cpu_cores": 100000}}, UnprocessableError),
        ({"cloud_init": {"meta_data": {"path": "m.yaml"}}}, ValidationError),
        ({"manifest": {**manifest_doc(), "name": "other"}}, UnprocessableError),
        ([], ValidationError),
    ],
)
def test_invalid_patch_raises_and_changes_nothing(body: Any, error: type[Exception]) -> None:
    config = base_config()
    snapshot = copy.deepcopy(config_to_dict(config))
    with pytest.raises(error):
        apply_patch(config, parse_patch(body))
    assert config_to_dict(config) == snapshot


# ------------------------------------------------------------------ restart_required


def test_restart_required_ignores_metadata_and_restart_policy() -> None:
    running = base_config()
    live = apply_patch(running, parse_patch({"metadata": {"x": 1},
                                             "restart_policy": {"name": "always"}}))
    assert live != running
    assert not restart_required(running, live)
    for body in ({"resources": {"memory_mb": 1024}}, {"kernel_cmdline": "debug"},
                 {"network": {"mode": "dhcp"}}, {"expose": [{"port": 1, "host_port": 2}]}):
        assert restart_required(running, apply_patch(running, parse_patch(body))), body


# ------------------------------------------------------------------ store


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def test_reads_the_file_the_manager_writes(store: StateStore) -> None:
    store.write("vms/web/config.toml", CONFIG_CODEC,
                {"version": 1, "updated_at": "2026-01-01T00:00:00Z", "config": config_doc()})
    current = ConfigStore(store, "web").load()
    assert current is not None
    assert current.version == 1
    assert current.config.api.host == "10.0.0.1"


def test_patch_versions_and_history_newest_first(store: StateStore) -> None:
    configs = ConfigStore(store, "web")
    configs.create(base_config(), now="t1")
    for index, cpus in enumerate((3, 4, 5), start=2):
        entry = configs.patch(parse_patch({"resources": {"cpu_cores": cpus}}), now=f"t{index}")
        assert entry.version == index
    history = configs.history()
    assert [h.version for h in history] == [4, 3, 2, 1]
    assert [h.config.resources.cpu_cores for h in history] == [5, 4, 3, 2]
    assert [h.updated_at for h in history] == ["t4", "t3", "t2", "t1"]
    assert [h.version for h in configs.history(limit=2)] == [4, 3]
    assert history[0].to_json()["id"] == 4
    assert (store.path_of("vms/web/history/3.toml")).exists()


def test_invalid_patch_writes_nothing(store: StateStore) -> None:
    configs = ConfigStore(store, "web")
    configs.create(base_config(), now="t1")
    before = store.path_of("vms/web/config.toml").read_bytes()
    with pytest.raises(UnprocessableError):
        configs.patch(parse_patch({"resources": {"memory_mb": 0}}))
    assert store.path_of("vms/web/config.toml").read_bytes() == before
    assert store.list_dir("vms/web/history") == []


def test_crash_between_archive_and_update_keeps_history_consistent(store: StateStore) -> None:
    configs = ConfigStore(store, "web")
    current = configs.create(base_config(), now="t1")
    # Simulate a crash after archiving version 1 but before writing version 2.
    from volant.vmconfig import HISTORY_CODEC

    store.write("vms/web/history/1.toml", HISTORY_CODEC, current.to_json())
    assert [h.version for h in configs.history()] == [1]
    configs.patch(parse_patch({"kernel_cmdline": "debug"}), now="t2")
    assert [h.version for h in configs.history()] == [2, 1]


def test_history_is_pruned(store: StateStore) -> None:
    configs = ConfigStore(store, "web", keep_history=2)
    configs.create(base_config())
    for cpus in range(2, 7):
        configs.patch(parse_patch({"resources": {"cpu_cores": cpus}}))
    assert [h.version for h in configs.history()] == [6, 5, 4]


def test_toml_round_trip_of_a_rich_config(store: StateStore) -> None:
    config = parse_config(config_doc(
        metadata={"team": "a", "n": 3, "ratio": 0.5, "tags": ["x", "y"],
                  "owners": [{"name": "ann", "on_call": True}], "nested": {"k": {"v": 1}}},
        expose=[{"port": 80, "host_port": 8080, "protocol": "udp", "mode": "vsock"}],
        cloud_init={"seed_mode": "vfat",
                    "user_data": {"inline": True, "content": "#cloud-config\na: 'b'\n"}},
        devices={"pci_passthrough": ["0000:01:00.0"], "allowlist": ["10de:*"]},
        rootfs={"url": "https://example.com/root.img"},
    ))
    configs = ConfigStore(store, "rich")
    configs.create(config, now="t1")
    loaded = configs.load()
    assert loaded is not None
    assert loaded.config == config
    assert loaded.to_json()["config"]["metadata"]["owners"] == [{"name": "ann", "on_call": True}]
