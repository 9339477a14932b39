"""The root of the supervision tree (DESIGN.md section 3).

    Root supervisor (rest_for_one)
    ├── EventBus
    ├── HostNetwork
    ├── PluginRegistry
    ├── VMSupervisor (dynamic, one_for_one) ── VM actors ── runner: Tap → VMM
    ├── VMManager        recovery in on_start, then create/destroy/IPAM
    ├── DeploymentSupervisor (dynamic) ── Deployment actors (deployments.py)
    ├── DeploymentManager  restarts deployments after VM recovery; serves their views
    ├── ArtifactRegistry   plugin artifacts, fetched into the media cache (artifacts.py)
    └── API server       opens only after everything before it has started

rest_for_one: a child depends on every child started before it, so when one
restarts, the ones after it restart too and pick up the new instances through
``Tree`` (the factories read from it, never from captured objects).
"""

from __future__ import annotations

from typing import Any

import trio

from volant import __version__
from volant.actors import Backoff, ChildSpec, DynamicSupervisor, Restart, Strategy, Supervisor
from volant.actors.spec import SupervisorEvent
from volant.api.app import create_app
from volant.api.context import ApiContext
from volant.api.server import serve_api
from volant.config import Config
from volant.gcpolicy import settle_heap
from volant.logging import get_logger
from volant.media import MediaCache
from volant.orchestrator.artifacts import ArtifactRegistry
from volant.orchestrator.deployment_manager import DeploymentManager, deployment_supervisor
from volant.orchestrator.deployments import DeploymentDeps
from volant.orchestrator.events import Event, EventBus
from volant.orchestrator.hostnet import HostNetwork
from volant.orchestrator.lifecycle import DaemonLifecycle, instance_id_for
from volant.orchestrator.plugins import PluginRegistry
from volant.orchestrator.vfio import VfioOwnership
from volant.orchestrator.vm import BOOT_MARKER, VMDeps
from volant.orchestrator.vms import VMManager, vm_supervisor
from volant.runtime import select_launcher
from volant.runtime.hollow import HOLLOW_BOOT_MARKER
from volant.store import StateStore

log = get_logger("volant.root")


class ApiServer:
    """The HTTP server as a supervised child: started last, stopped first."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self._shutdown = trio.Event()

    def request_stop(self) -> None:
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        app = create_app(self.tree.api_context())
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve_api, app, self.tree.cfg, self._shutdown)
            log.info("api listening", binds=binds)
            settle_heap()  # the tree is up and recovery done: freeze what lives on
            task_status.started()


class Tree:
    """Holds the current instance of each root child for the factories and the API."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = StateStore(cfg.state_dir)
        self.lifecycle = DaemonLifecycle(instance_id_for(cfg.state_dir))
        self.media = MediaCache(cfg.state_dir / "cache" / "media")
        self.launcher = select_launcher(cfg.hypervisor)
        self.events: EventBus | None = None
        self.hostnet: HostNetwork | None = None
        self.plugins: PluginRegistry | None = None
        self.vm_supervisor: DynamicSupervisor | None = None
        self.vm_manager: VMManager | None = None
        self.vm_deps: VMDeps | None = None
        self.deployment_supervisor: DynamicSupervisor | None = None
        self.deployment_manager: DeploymentManager | None = None
        self.root: Supervisor | None = None
        self.vfio_ownership = VfioOwnership()
        self.crash_detections = 0

    # -- factories -----------------------------------------------------------------------
    def make_events(self) -> EventBus:
        self.events = EventBus(self.cfg.state_dir / "events")
        self.events.listeners.append(self._count_crashes)
        return self.events

    def make_hostnet(self) -> HostNetwork:
        assert self.events is not None
        self.hostnet = HostNetwork(self.cfg, self.events)
        return self.hostnet

    def make_plugins(self) -> PluginRegistry:
        assert self.events is not None
        self.plugins = PluginRegistry(self.store, self.events)
        return self.plugins

    def make_vm_supervisor(self) -> DynamicSupervisor:
        self.vm_supervisor = vm_supervisor()
        self.vm_supervisor.on_event = self.on_supervisor_event
        return self.vm_supervisor

    def make_vm_manager(self) -> VMManager:
        assert self.events is not None and self.vm_supervisor is not None
        kind = getattr(self.launcher, "kind", "")
        marker = HOLLOW_BOOT_MARKER.encode() if kind == "hollow" else BOOT_MARKER
        # One VMDeps for the daemon's life: a restarted manager finds the VM actors of
        # the still-running VM supervisor holding this same object, so the hooks it sets
        # (publish_view, renetwork) reach them too.
        if self.vm_deps is None:
            self.vm_deps = VMDeps(
                cfg=self.cfg, store=self.store, events=self.events, launcher=self.launcher,
                lifecycle=self.lifecycle, hostnet=self.hostnet,
                publish_view=lambda _n, _v: None, ready_marker=marker,
                vfio_ownership=self.vfio_ownership,
            )
        else:
            self.vm_deps.events = self.events
            self.vm_deps.hostnet = self.hostnet
        self.vm_manager = VMManager(self.vm_deps, self.vm_supervisor, None)
        return self.vm_manager

    def make_deployment_supervisor(self) -> DynamicSupervisor:
        self.deployment_supervisor = deployment_supervisor()
        self.deployment_supervisor.on_event = self.on_supervisor_event
        return self.deployment_supervisor

    def make_deployment_manager(self) -> DeploymentManager:
        assert self.root is not None and self.events is not None
        assert self.vm_manager is not None and self.deployment_supervisor is not None
        deps = DeploymentDeps(
            store=self.store, events=self.events, vm_manager=self.vm_manager,
            vms=self.root.ref("vm-manager"), plugins=self.root.ref("plugins"),
            media=self.media, publish_view=lambda _n, _v: None,
        )
        self.deployment_manager = DeploymentManager(deps, self.deployment_supervisor)
        return self.deployment_manager

    def make_artifacts(self) -> ArtifactRegistry:
        # Late in the tree on purpose: rest_for_one restarts only what follows a crashed
        # child, so a crash here never touches the VM actors.
        assert self.root is not None and self.events is not None
        return ArtifactRegistry(self.store, self.events, self.media, self.root.ref("plugins"))

    def make_api(self) -> ApiServer:
        return ApiServer(self)

    def api_context(self) -> ApiContext:
        assert self.root is not None and self.vm_manager is not None
        services: dict[str, Any] = {
            "events": self.events,
            "plugins": self.root.ref("plugins"),
            "artifacts": self.root.ref("artifacts"),
            "vms": self.root.ref("vm-manager"),
            "vm_manager": self.vm_manager,
            "media": self.media,
            "vm_counts": self.vm_manager.counts_by_status,
            "vm_summary": self.vm_summary,
            "plugin_summary": self.plugin_summary,
            "metrics_providers": [self.metrics],
            "deployments": self.deployment_manager,
            "vfio_ownership": self.vfio_ownership,
        }
        return ApiContext(config=self.cfg, version=__version__, services=services)

    # -- read-only providers for system routes and /metrics (same trio thread) -----------
    def vm_summary(self) -> dict[str, Any]:
        views = self.vm_manager.list_views() if self.vm_manager is not None else []
        by_status: dict[str, int] = {}
        by_runtime: dict[str, int] = {}
        for view in views:
            by_status[view["status"]] = by_status.get(view["status"], 0) + 1
            runtime = str(view["runtime"]).lower()
            by_runtime[runtime] = by_runtime.get(runtime, 0) + 1
        return {"total_vms": len(views), "by_status": by_status, "by_runtime": by_runtime}

    def plugin_summary(self) -> dict[str, Any]:
        plugins = (sorted(self.plugins.plugins.values(), key=lambda p: p.name)
                   if self.plugins is not None else [])
        return {
            "plugins": [{"name": p.name, "version": p.manifest.version, "enabled": p.enabled}
                        for p in plugins],
            "total_plugins": len(plugins),
            "enabled_plugins": sum(p.enabled for p in plugins),
        }

    def metrics(self) -> list[tuple[str, str, str, dict[str, str], float]]:
        samples: list[tuple[str, str, str, dict[str, str], float]] = []
        views = self.vm_manager.list_views() if self.vm_manager is not None else []
        counts: dict[str, int] = {}
        for view in views:
            counts[view["status"]] = counts.get(view["status"], 0) + 1
        for status, count in sorted(counts.items()):
            samples.append(("volant_vms", "VMs by state", "gauge", {"state": status}, count))
        samples.append(("volant_vm_restarts", "Automatic VM restarts (sum over live VMs)",
                        "counter", {}, float(sum(v["restart_count"] for v in views))))
        samples.append(("volant_vm_crashes", "VMM exits detected as crashes since start",
                        "counter", {}, float(self.crash_detections)))
        for child in ("plugins", "vm-manager", "hostnet"):
            if self.root is not None:
                try:
                    depth = self.root.ref(child).mailbox_depth
                except Exception:  # not started (yet)
                    continue
                samples.append(("volant_mailbox_depth", "Messages waiting in an actor's mailbox",
                                "gauge", {"actor": child}, float(depth)))
        if self.vm_supervisor is not None:
            for info in self.vm_supervisor.which_children():
                try:
                    depth = self.vm_supervisor.ref(info.id).mailbox_depth
                except Exception:
                    continue
                if depth:
                    samples.append(("volant_mailbox_depth",
                                    "Messages waiting in an actor's mailbox", "gauge",
                                    {"actor": f"vm:{info.id}"}, float(depth)))
        return samples

    def _count_crashes(self, event: Event) -> None:
        if event.type == "VM_CRASHED":
            self.crash_detections += 1

    def on_supervisor_event(self, event: SupervisorEvent) -> None:
        if self.events is None or event.kind not in ("child_crashed", "escalated"):
            return
        self.events.publish("ACTOR_CRASHED" if event.kind == "child_crashed" else
                            "SUPERVISOR_ESCALATED", event.child,
                            message=event.error or "", supervisor=event.supervisor)

    def build(self) -> Supervisor:
        children = [
            ChildSpec("events", self.make_events, Restart.PERMANENT, shutdown_timeout=5),
            ChildSpec("hostnet", self.make_hostnet, Restart.PERMANENT, shutdown_timeout=5),
            ChildSpec("plugins", self.make_plugins, Restart.PERMANENT, shutdown_timeout=5),
            ChildSpec("vm-supervisor", self.make_vm_supervisor, Restart.PERMANENT,
                      shutdown_timeout=120),
            ChildSpec("vm-manager", self.make_vm_manager, Restart.PERMANENT,
                      shutdown_timeout=30),
            ChildSpec("deployment-supervisor", self.make_deployment_supervisor,
                      Restart.PERMANENT, shutdown_timeout=30),
            ChildSpec("deployment-manager", self.make_deployment_manager, Restart.PERMANENT,
                      shutdown_timeout=10),
            ChildSpec("artifacts", self.make_artifacts, Restart.PERMANENT, shutdown_timeout=5),
            ChildSpec("api", self.make_api, Restart.PERMANENT, shutdown_timeout=10),
        ]
        self.root = Supervisor("root", children, Strategy.REST_FOR_ONE, intensity=3,
                               period=30.0, backoff=Backoff(initial=0.2, maximum=5.0),
                               on_event=self.on_supervisor_event)
        return self.root


async def run_root(cfg: Config, stop: trio.Event) -> None:
    """Run the tree until ``stop`` is set; VMs keep running after volantd exits."""
    tree = Tree(cfg)
    root = tree.build()
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        log.info("volantd ready", instance=tree.lifecycle.instance_id,
                 launcher=getattr(tree.launcher, "kind", "?"))
        await stop.wait()
        tree.lifecycle.detaching = True
        root.request_stop()
