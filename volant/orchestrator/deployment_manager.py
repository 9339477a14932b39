"""The deployment manager actor: creates deployment actors and serves their views.

It starts after the VM manager (root order), so when its ``on_start`` restarts one
actor per ``deployments/*.toml`` the VM views are already complete: each actor
then reconciles against the real set of replicas (finishing a scale, a rollout or
a delete that a killed volantd left half done).

Reads are served from views: each deployment actor publishes its static state
here, and the live part (replicas, ready count, status) is computed from the VM
views at read time, so ``ready_replicas`` is never stale.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from volant.actors import Actor, ActorRef, Backoff, ChildSpec, DynamicSupervisor, Restart
from volant.errors import ConflictError, NotFoundError
from volant.logging import get_logger
from volant.orchestrator.deployments import (
    DEPLOYMENT_CODEC,
    DeploymentActor,
    DeploymentDeps,
    DeploymentSpec,
    deployment_status,
    new_document,
    replica_index,
)

log = get_logger("volant.deployments")


@attrs.frozen
class CreateDeployment:
    spec: DeploymentSpec


class DeploymentManager(Actor[Any]):
    mailbox_size = 256

    def __init__(self, deps: DeploymentDeps, supervisor: DynamicSupervisor) -> None:
        self.deps = deps
        self.supervisor = supervisor
        self.views: dict[str, dict[str, Any]] = {}
        deps.publish_view = self._publish_view

    def _publish_view(self, name: str, view: dict[str, Any] | None) -> None:
        if view is None:
            self.views.pop(name, None)
        else:
            self.views[name] = view

    async def on_start(self) -> None:
        store, events = self.deps.store, self.deps.events
        result = await trio.to_thread.run_sync(store.load_all, "deployments", "*.toml",
                                               DEPLOYMENT_CODEC)
        for item in result.quarantined:
            events.publish("SNAPSHOT_QUARANTINED", item.relpath, message=item.reason)
        for relpath, doc in sorted(result.documents.items()):
            name = doc.get("name")
            if not isinstance(name, str) or relpath != f"deployments/{name}.toml":
                await trio.to_thread.run_sync(store.quarantine, relpath, "name mismatch")
                events.publish("SNAPSHOT_QUARANTINED", relpath, message="name mismatch")
                continue
            try:
                await self._start_actor(name, None)
            except Exception as exc:  # one broken deployment must not stop the daemon
                log.error("deployment actor failed to start", deployment=name, error=repr(exc))

    async def _start_actor(self, name: str, initial: dict[str, Any] | None) -> None:
        deps = self.deps
        spec = ChildSpec(name, lambda: DeploymentActor(name, deps, initial),
                         Restart.TRANSIENT, shutdown_timeout=10.0)
        await self.supervisor.start_child(spec)

    async def handle(self, msg: Any) -> Any:
        match msg:
            case CreateDeployment(spec):
                if spec.name in self.supervisor or spec.name in self.views:
                    raise ConflictError(f"deployment {spec.name} already exists", name=spec.name)
                await self._start_actor(spec.name, new_document(spec))
                return self.get_view(spec.name)
        raise TypeError(f"unknown message {msg!r}")

    # -- plain methods (same trio thread) --------------------------------------------------
    def deployment_ref(self, name: str) -> ActorRef[Any]:
        if name not in self.views or name not in self.supervisor:
            raise NotFoundError(f"deployment {name} not found")
        return self.supervisor.ref(name)

    def get_view(self, name: str) -> dict[str, Any]:
        static = self.views.get(name)
        if static is None:
            raise NotFoundError(f"deployment {name} not found")
        return self._live_view(static)

    def list_views(self) -> list[dict[str, Any]]:
        return [self._live_view(v) for _, v in sorted(self.views.items())]

    def _live_view(self, static: dict[str, Any]) -> dict[str, Any]:
        name = static["name"]
        replicas: list[tuple[int, str]] = []
        ready = 0
        for view in self.deps.vm_manager.list_views():
            if view.get("deployment") != name:
                continue
            index = replica_index(name, view["name"])
            if index is None:
                continue
            replicas.append((index, view["name"]))
            ready += view["status"] == "running"
        replicas.sort()
        versions = static["replica_versions"]
        return {
            "name": name,
            "desired_replicas": static["desired_replicas"],
            "ready_replicas": ready,
            "config": static["config"],
            "created_at": static["created_at"],
            "updated_at": static["updated_at"],
            "replicas": [replica for _, replica in replicas],
            "status": deployment_status(static, (i for i, _ in replicas), ready),
            "config_version": static["config_version"],
            "rollout": static["rollout"],
            "replica_versions": {replica: versions[replica] for _, replica in replicas
                                 if replica in versions},
            "rollout_timeout": static["rollout_timeout"],
            "min_ready_seconds": static["min_ready_seconds"],
            "last_error": static.get("last_error"),
        }


def deployment_supervisor() -> DynamicSupervisor:
    return DynamicSupervisor("deployments", intensity=10, period=10.0,
                             backoff=Backoff(initial=0.2, maximum=5.0))


__all__ = ["CreateDeployment", "DeploymentManager", "deployment_supervisor"]
