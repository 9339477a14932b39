"""The Deployment actor against a fake VM manager: resume, heal, scale order, delete."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from volant.actors import Actor, ActorRef
from volant.errors import ConflictError, NotFoundError
from volant.manifest import parse_manifest
from volant.media import MediaCache
from volant.orchestrator.deployments import (
    DEPLOYMENT_CODEC,
    DeleteDeployment,
    DeploymentActor,
    DeploymentDeps,
    Patch,
    deployment_path,
    new_document,
    parse_create_deployment,
)
from volant.orchestrator.events import EventBus
from volant.orchestrator.plugins import Resolve
from volant.orchestrator.vms import CreateVM, DestroyVM
from volant.store import StateStore, StoreFullError


class FakeVMs(Actor[Any]):
    """Creates and destroys 'VMs' as views only; records every call in order."""

    def __init__(self) -> None:
        self.views: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.boot_status = "running"
        self.disk_full = False

    def list_views(self) -> list[dict[str, Any]]:
        return list(self.views.values())

    def add(self, name: str, deployment: str, status: str = "running",
            desired: str = "running") -> None:
        self.views[name] = {"name": name, "deployment": deployment, "status": status,
                            "desired_state": desired, "last_exit": None, "cpu_cores": 1}

    async def handle(self, msg: Any) -> Any:
        match msg:
            case CreateVM(resolved, _, _, deployment):
                name = resolved.request.name
                self.calls.append(("create", name))
                if self.disk_full:
                    raise StoreFullError(f"no space left to write vms/{name}/state.json")
                if name in self.views:
                    raise ConflictError(f"vm {name} already exists")
                self.add(name, deployment, self.boot_status)
                self.views[name]["cpu_cores"] = resolved.cpu_cores
                return self.views[name]
            case DestroyVM(name):
                self.calls.append(("destroy", name))
                if name not in self.views:
                    raise NotFoundError(f"vm {name} not found")
                del self.views[name]
                done = trio.Event()
                done.set()
                return done
        raise TypeError(msg)


class FakePlugins(Actor[Any]):
    def __init__(self, manifest: Any) -> None:
        self.manifest = manifest

    async def handle(self, msg: Any) -> Any:
        assert isinstance(msg, Resolve)
        return self.manifest


@attrs.define
class Env:
    deps: DeploymentDeps
    vms: FakeVMs
    store: StateStore
    nursery: trio.Nursery
    events: EventBus

    async def start(self, name: str, initial: dict[str, Any] | None = None
                    ) -> ActorRef[Any]:
        actor = DeploymentActor(name, self.deps, initial)
        await self.nursery.start(actor.run)
        return actor.ref


def manifest(tmp_path: Path) -> Any:
    media = tmp_path / "initramfs.img"
    media.write_bytes(b"fake initramfs\n")
    digest = hashlib.sha256(media.read_bytes()).hexdigest()
    return parse_manifest({
        "schema_version": "1", "name": "demo", "version": "1.0.0",
        "initramfs": {"url": str(media), "checksum": f"sha256:{digest}"},
        "resources": {"cpu_cores": 1, "memory_mb": 128},
        "workload": {"type": "http", "base_url": "http://127.0.0.1:8000",
                     "entrypoint": ["/bin/true"]},
    })


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = StateStore(tmp_path / "state")
    vms = FakeVMs()
    plugins = FakePlugins(manifest(tmp_path))
    bus = EventBus(tmp_path / "state" / "events")
    async with trio.open_nursery() as nursery:
        for actor in (vms, plugins, bus):
            await nursery.start(actor.run)
        views: dict[str, dict[str, Any] | None] = {}
        deps = DeploymentDeps(
            store=store, events=bus, vm_manager=vms,  # type: ignore[arg-type]
            vms=vms.ref, plugins=plugins.ref, media=MediaCache(tmp_path / "media"),
            publish_view=views.__setitem__, poll_interval=0.01)
        yield Env(deps, vms, store, nursery, bus)
        nursery.cancel_scope.cancel()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.01)


def doc_for(name: str, replicas: int, **changes: Any) -> dict[str, Any]:
    spec = parse_create_deployment({"name": name, "replicas": replicas, "min_ready_seconds": 0,
                                    "rollout_timeout": 2, "config": {"plugin": "demo"}})
    return {**new_document(spec), **changes}


async def test_scale_creates_missing_and_removes_highest_first(env: Env) -> None:
    ref = await env.start("web", doc_for("web", 3))
    await until(lambda: sorted(env.vms.views) == ["web-1", "web-2", "web-3"])
    assert env.store.read(deployment_path("web"), DEPLOYMENT_CODEC) is not None

    env.vms.calls.clear()
    await ref.call(Patch(replicas=6))
    await until(lambda: len(env.vms.views) == 6)
    assert sorted(n for op, n in env.vms.calls if op == "create") == [
        "web-4", "web-5", "web-6"]

    env.vms.calls.clear()
    await ref.call(Patch(replicas=1))
    await until(lambda: sorted(env.vms.views) == ["web-1"])
    assert env.vms.calls == [("destroy", "web-6"), ("destroy", "web-5"), ("destroy", "web-4"),
                             ("destroy", "web-3"), ("destroy", "web-2")]

    def versions() -> Any:
        doc = env.store.read(deployment_path("web"), DEPLOYMENT_CODEC)
        return doc and doc["replica_versions"]

    await until(lambda: versions() == {"web-1": 1})


async def test_a_full_disk_fails_passes_without_crashing_the_actor(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by volant-chaos: a pass failing on a full disk then failed to record its
    error (the disk was still full) and the exception crashed the deployment actor."""
    ref = await env.start("web", doc_for("web", 1))
    await until(lambda: sorted(env.vms.views) == ["web-1"])
    real_write = env.store.write

    def full_write(*args: Any, **kwargs: Any) -> None:
        raise StoreFullError("no space left to write deployments/web.toml")

    env.vms.disk_full = True
    monkeypatch.setattr(env.store, "write", full_write)
    env.vms.calls.clear()
    del env.vms.views["web-1"]  # a replica lost while nothing can be written
    env.events.publish("VM_DELETED", "web-1", "stopped")
    await until(lambda: len(env.vms.calls) >= 2)  # it kept trying: the actor is alive
    env.vms.disk_full = False
    monkeypatch.setattr(env.store, "write", real_write)
    await until(lambda: sorted(env.vms.views) == ["web-1"], timeout=10)
    assert (await ref.call(Patch(replicas=1)))["desired_replicas"] == 1


async def test_startup_reconciles_with_existing_replicas_without_duplicates(env: Env) -> None:
    # As after a kill -9 mid-scale: two replicas exist, one above the new desired count,
    # and an unrelated VM with a look-alike name must be left alone.
    env.vms.add("db-1", "db")
    env.vms.add("db-4", "db")
    env.vms.add("db-x", "")
    env.store.write(deployment_path("db"), DEPLOYMENT_CODEC, doc_for("db", 3))
    await env.start("db")
    await until(lambda: sorted(env.vms.views) == ["db-1", "db-2", "db-3", "db-x"])
    creates = [n for op, n in env.vms.calls if op == "create"]
    assert sorted(creates) == ["db-2", "db-3"]  # db-1 was kept, not recreated
    assert ("destroy", "db-4") in env.vms.calls


async def test_dead_replicas_are_replaced_but_self_restarting_ones_are_left(env: Env) -> None:
    await env.start("app", doc_for("app", 2))
    await until(lambda: len(env.vms.views) == 2)
    env.vms.calls.clear()
    # app-1 crashed and its VM will restart it (desired running): not ours to touch.
    env.vms.views["app-1"]["status"] = "crashed"
    # app-2 crashed with policy "no": its VM gave up; the deployment must replace it.
    env.vms.views["app-2"].update(status="crashed", desired_state="stopped")
    env.events.publish("VM_CRASHED", "app-2", "crashed")
    await until(lambda: ("create", "app-2") in env.vms.calls)
    assert env.vms.calls[:2] == [("destroy", "app-2"), ("create", "app-2")]
    assert env.vms.views["app-2"]["status"] == "running"
    await trio.sleep(0.3)
    assert all(name != "app-1" for _, name in env.vms.calls)


async def test_interrupted_rollout_redoes_the_current_replica_then_the_rest(env: Env) -> None:
    new_config = {"plugin": "demo", "cpu_cores": 2}
    for index in (1, 2, 3):
        env.vms.add(f"ro-{index}", "ro")
    doc = doc_for("ro", 3, config=new_config, config_version=2,
                  replica_versions={"ro-1": 2, "ro-2": 1, "ro-3": 1},
                  rollout={"state": "in_progress", "target_version": 2, "updated": 0,
                           "current": "ro-1"})
    env.store.write(deployment_path("ro"), DEPLOYMENT_CODEC, doc)
    await env.start("ro")

    def done() -> bool:
        saved = env.store.read(deployment_path("ro"), DEPLOYMENT_CODEC)
        return saved is not None and saved["rollout"]["state"] == "completed"

    await until(done)
    assert env.vms.calls == [("destroy", "ro-1"), ("create", "ro-1"),
                             ("destroy", "ro-2"), ("create", "ro-2"),
                             ("destroy", "ro-3"), ("create", "ro-3")]
    assert {v["cpu_cores"] for v in env.vms.views.values()} == {2}
    saved = env.store.read(deployment_path("ro"), DEPLOYMENT_CODEC)
    assert saved is not None and saved["stable_version"] == 2
    assert saved["replica_versions"] == {"ro-1": 2, "ro-2": 2, "ro-3": 2}


async def test_rollout_stops_at_a_replica_that_never_runs(env: Env) -> None:
    ref = await env.start("st", doc_for("st", 2))
    await until(lambda: len(env.vms.views) == 2)
    env.vms.calls.clear()
    env.vms.boot_status = "starting"  # new replicas never become running
    await ref.call(Patch(config={"plugin": "demo", "cpu_cores": 2}, rollout_timeout=1.0))

    def failed() -> bool:
        saved = env.store.read(deployment_path("st"), DEPLOYMENT_CODEC)
        return saved is not None and saved["rollout"]["state"] == "failed"

    await until(failed)
    saved = env.store.read(deployment_path("st"), DEPLOYMENT_CODEC)
    assert saved is not None and saved["rollout"]["failed_replica"] == "st-1"
    assert "not healthy within" in saved["rollout"]["reason"]
    await until(lambda: env.vms.calls.count(("create", "st-1")) == 2)
    # st-2 was never touched; st-1 went back to the stable config (version 1).
    assert all(name == "st-1" for _, name in env.vms.calls)
    assert env.vms.views["st-1"]["cpu_cores"] == 1
    await trio.sleep(0.05)  # events are delivered once durable
    assert "DEPLOYMENT_ROLLOUT_FAILED" in [e.type for e in env.events.recent() if e.name == "st"]


async def test_delete_removes_replicas_then_the_file(env: Env) -> None:
    ref = await env.start("del", doc_for("del", 3))
    await until(lambda: len(env.vms.views) == 3)
    done: trio.Event = await ref.call(DeleteDeployment())
    with trio.fail_after(5):
        await done.wait()
    assert env.vms.views == {}
    assert env.store.read(deployment_path("del"), DEPLOYMENT_CODEC) is None


async def test_a_foreign_vm_with_a_replica_name_is_reported_not_destroyed(env: Env) -> None:
    env.vms.add("svc-2", "")  # created by hand, not by the deployment
    await env.start("svc", doc_for("svc", 3))

    def error() -> Any:
        doc = env.store.read(deployment_path("svc"), DEPLOYMENT_CODEC)
        return doc and doc.get("last_error")

    await until(lambda: bool(error()))
    assert "svc-2 exists outside deployment svc" in error()
    assert sorted(env.vms.views) == ["svc-1", "svc-2", "svc-3"]  # the others were made
    assert ("destroy", "svc-2") not in env.vms.calls
    assert ("create", "svc-2") not in env.vms.calls


async def test_an_interrupted_delete_is_finished_at_start(env: Env) -> None:
    for index in (1, 2, 7):
        env.vms.add(f"old-{index}", "old")
    env.vms.add("keep-1", "keep")
    env.store.write(deployment_path("old"), DEPLOYMENT_CODEC, doc_for("old", 2, deleting=True))
    await env.start("old")
    await until(lambda: env.store.read(deployment_path("old"), DEPLOYMENT_CODEC) is None)
    assert sorted(env.vms.views) == ["keep-1"]
    assert not any(op == "create" for op, _ in env.vms.calls)
