"""The Deployment actor: one per deployment, keeping its replicas alive and on its config.

A deployment is a desired replica count plus a VM config. Replicas are named
``<deployment>-<index>`` from 1 (upstream's naming), so after any crash the set of
replicas can be recomputed from the VM views alone: there is nothing to leak and
nothing to duplicate.

Why a reconcile *worker* inside the actor: the actor answers messages (scale,
new config, delete) at once and only records intent; one background task of the
actor compares intent with the VM views and acts. It is woken by those messages,
by VM events of its replicas (crash, failure, deletion, stop) and by a slow
ticker, so healing does not depend on API calls (upstream reconciled only then,
and counted a crashed replica as present forever).

Rollouts replace one replica at a time and wait until it has been running for
``min_ready_seconds`` (within ``rollout_timeout``) before the next; a replica that
never gets healthy stops the rollout (``rollout_failed``, ``DEPLOYMENT_ROLLOUT_FAILED``)
and is itself put back on the last config that worked.

The actor is the only writer of ``deployments/<name>.toml``. It records the
deployment config version each replica was created from, and the replica being
replaced, *before* acting, so a volantd killed mid-way resumes the same step.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import trio
import trio.lowlevel

from volant.actors import Actor, ActorRef
from volant.errors import ConflictError, NotFoundError, ValidationError, VolantError
from volant.logging import get_logger
from volant.media import MediaCache
from volant.names import MAX_NAME_LENGTH, validate_name
from volant.orchestrator.events import EventBus, EventFilter, utc_now
from volant.orchestrator.vmcreate import prepare_create
from volant.orchestrator.vms import DestroyVM, VMManager
from volant.store import SnapshotCodec, StateStore, StoreFullError, StoreWriteError

log = get_logger("volant.deployments")

DEPLOYMENT_CODEC = SnapshotCodec("deployment", 1)
CREATE_CONCURRENCY = 4
MAX_REPLICAS = 1000
DEFAULT_ROLLOUT_TIMEOUT = 180.0
DEFAULT_MIN_READY_SECONDS = 1.0
HEAL_BACKOFF_MAX = 30.0
#: VM events after which a replica may need healing or the counts changed.
WATCHED_EVENTS = frozenset({"VM_CRASHED", "VM_FAILED", "VM_DELETED", "VM_STOPPED",
                            "VM_RUNNING", "VM_ADOPTED"})
DEAD_STATUSES = frozenset({"crashed", "failed", "stopped"})

#: Keys a deployment config may have: a create-VM body without ``name``, plus the
#: vmconfig-style sections (``resources``, ``api``, ``network``) upstream stores.
_TOP_LEVEL_KEYS = ("plugin", "runtime", "cpu_cores", "memory_mb", "kernel_cmdline",
                   "api_host", "api_port", "restart_policy")
_SECTION_KEYS = ("resources", "api", "network")
CONFIG_KEYS = frozenset(_TOP_LEVEL_KEYS + _SECTION_KEYS + ("config",))


def deployment_path(name: str) -> str:
    return f"deployments/{name}.toml"


def replica_name(deployment: str, index: int) -> str:
    return f"{deployment}-{index}"


def replica_index(deployment: str, vm_name: str) -> int | None:
    """The index of ``<deployment>-<index>``; None for any other name (as upstream)."""
    prefix = f"{deployment}-"
    if not vm_name.startswith(prefix):
        return None
    suffix = vm_name[len(prefix):]
    if not re.fullmatch(r"[1-9][0-9]*", suffix):
        return None
    return int(suffix)


# -- request parsing (shared with the API) -------------------------------------------------
def parse_replicas(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("replicas: expected an integer", field="replicas")
    if not 0 <= value <= MAX_REPLICAS:
        raise ValidationError(f"replicas: must be between 0 and {MAX_REPLICAS}",
                              field="replicas")
    return value


def _parse_seconds(value: Any, field: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{field}: expected a number of seconds", field=field)
    if not minimum <= value <= 86400:
        raise ValidationError(f"{field}: must be between {minimum} and 86400", field=field)
    return float(value)


def parse_config(value: Any) -> dict[str, Any]:
    """Check the shape of a deployment config; plugin resolution is ``prepare_create``'s."""
    if not isinstance(value, dict):
        raise ValidationError("config: expected an object", field="config")
    unknown = sorted(set(value) - CONFIG_KEYS)
    if unknown:
        raise ValidationError(f"config: unknown field {unknown[0]!r}", field=f"config.{unknown[0]}")
    if "name" in value:
        raise ValidationError("config: must not contain name", field="config.name")
    nested = value.get("config")
    if nested is not None and not isinstance(nested, dict):
        raise ValidationError("config.config: expected an object", field="config.config")
    cleaned: dict[str, Any] = _without_nulls(value, "config")
    return cleaned


def _without_nulls(value: Any, where: str) -> Any:
    """TOML has no null: drop null fields now, so the stored config equals the one compared.

    A null inside a list has no meaning to drop to, so it is refused.
    """
    if isinstance(value, dict):
        return {key: _without_nulls(item, f"{where}.{key}")
                for key, item in value.items() if item is not None}
    if isinstance(value, list):
        if any(item is None for item in value):
            raise ValidationError(f"{where}: null is not allowed inside a list", field=where)
        return [_without_nulls(item, where) for item in value]
    return value


def create_body(vm_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The create-VM body for one replica, so replicas follow the API's rules exactly."""
    body: dict[str, Any] = {"name": vm_name}
    nested = dict(config.get("config") or {})
    for key in _SECTION_KEYS:
        if key in config:
            nested[key] = config[key]
    for key in _TOP_LEVEL_KEYS:
        if key in config:
            body[key] = config[key]
    if nested:
        body["config"] = nested
    return body


@attrs.frozen
class DeploymentSpec:
    """A validated create request."""

    name: str
    replicas: int
    config: dict[str, Any]
    rollout_timeout: float = DEFAULT_ROLLOUT_TIMEOUT
    min_ready_seconds: float = DEFAULT_MIN_READY_SECONDS


def parse_create_deployment(body: dict[str, Any]) -> DeploymentSpec:
    known = {"name", "replicas", "config", "rollout_timeout", "min_ready_seconds"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
    name = validate_name(body.get("name"), "name")
    # Leave room for "-<index>" so every replica name is a valid VM name too.
    if len(name) > MAX_NAME_LENGTH - 5:
        raise ValidationError(f"name is too long for replica names (at most "
                              f"{MAX_NAME_LENGTH - 5} characters)", field="name")
    replicas = parse_replicas(body.get("replicas", 0))
    if "config" not in body:
        raise ValidationError("config is required", field="config")
    config = parse_config(body["config"])
    timeout = _parse_seconds(body.get("rollout_timeout", DEFAULT_ROLLOUT_TIMEOUT),
                             "rollout_timeout", 1.0)
    min_ready = _parse_seconds(body.get("min_ready_seconds", DEFAULT_MIN_READY_SECONDS),
                               "min_ready_seconds", 0.0)
    return DeploymentSpec(name, replicas, config, timeout, min_ready)


@attrs.frozen
class Patch:
    replicas: int | None = None
    config: dict[str, Any] | None = None
    rollout_timeout: float | None = None
    min_ready_seconds: float | None = None


def parse_patch(body: dict[str, Any]) -> Patch:
    known = {"replicas", "config", "rollout_timeout", "min_ready_seconds"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
    if body.get("replicas") is None and body.get("config") is None:
        raise ValidationError("replicas field required", field="replicas")
    replicas = parse_replicas(body["replicas"]) if body.get("replicas") is not None else None
    config = parse_config(body["config"]) if body.get("config") is not None else None
    timeout = (_parse_seconds(body["rollout_timeout"], "rollout_timeout", 1.0)
               if body.get("rollout_timeout") is not None else None)
    min_ready = (_parse_seconds(body["min_ready_seconds"], "min_ready_seconds", 0.0)
                 if body.get("min_ready_seconds") is not None else None)
    return Patch(replicas, config, timeout, min_ready)


# -- messages --------------------------------------------------------------------------------
@attrs.frozen
class GetDeployment:
    pass


@attrs.frozen
class DeleteDeployment:
    """Reply: a ``trio.Event`` set once every replica and the file are gone."""


@attrs.frozen
class Reconcile:
    """Ask for a reconcile pass now (tests, operators)."""


# -- the state -------------------------------------------------------------------------------
def new_document(spec: DeploymentSpec) -> dict[str, Any]:
    now = utc_now()
    return {
        "name": spec.name,
        "desired_replicas": spec.replicas,
        "config": spec.config,
        "config_version": 1,
        "stable_config": spec.config,
        "stable_version": 1,
        "rollout_timeout": spec.rollout_timeout,
        "min_ready_seconds": spec.min_ready_seconds,
        "replica_versions": {},
        "rollout": {"state": "none"},
        "deleting": False,
        "created_at": now,
        "updated_at": now,
    }


def deployment_status(doc: dict[str, Any], indices: Iterable[int], ready: int) -> str:
    """One word for operators; the rollout's state wins over the counts."""
    if doc.get("deleting"):
        return "deleting"
    rollout = doc.get("rollout", {}).get("state", "none")
    if rollout == "in_progress":
        return "rolling_out"
    if rollout == "failed":
        return "rollout_failed"
    desired = int(doc["desired_replicas"])
    if sorted(indices) != list(range(1, desired + 1)):
        return "scaling"
    return "ready" if ready == desired else "degraded"


@attrs.define
class DeploymentDeps:
    """What every deployment actor shares; built by the deployment manager."""

    store: StateStore
    events: EventBus
    vm_manager: VMManager
    vms: ActorRef[Any]
    plugins: ActorRef[Any]
    media: MediaCache
    publish_view: Callable[[str, dict[str, Any] | None], None]
    poll_interval: float = 0.1
    recheck_interval: float = 0.25  # while not converged: an in-memory scan, cheap
    idle_resync: float = 15.0


class ReplicaUnhealthy(Exception):
    """A replica did not become healthy in time (rollouts)."""


class DeploymentActor(Actor[Any]):
    mailbox_size = 64

    def __init__(self, name: str, deps: DeploymentDeps,
                 initial: dict[str, Any] | None = None) -> None:
        self.deployment = name
        self.deps = deps
        self.initial = initial
        self.doc: dict[str, Any] = {}
        self._kicked = trio.Event()
        self._converged = False
        self._write_lock = trio.Lock()
        self._heal_attempts: dict[str, int] = {}
        self._heal_not_before: dict[str, float] = {}
        self._deleted = trio.Event()
        self._announced_scale: int | None = None
        self._announced_ready: int | None = None
        self._failed_passes = 0
        self._requested = trio.Event()
        self.log = log.bind(deployment=name)

    # -- lifecycle ------------------------------------------------------------------------
    async def on_start(self) -> None:
        doc = await trio.to_thread.run_sync(
            self.deps.store.read, deployment_path(self.deployment), DEPLOYMENT_CODEC)
        if doc is None:
            if self.initial is None:
                raise NotFoundError(f"deployment {self.deployment} not found")
            self.doc = dict(self.initial)
            await self._persist()
            self.deps.events.publish("DEPLOYMENT_CREATED", self.deployment, "scaling",
                                     message=f"deployment created with "
                                             f"{self.doc['desired_replicas']} replicas",
                                     desired_replicas=self.doc["desired_replicas"])
        else:
            self.doc = dict(doc)
            self.deps.publish_view(self.deployment, self._static_view())
        self._announced_scale = None
        subscription = await self.deps.events.subscribe(
            flt=EventFilter(types=WATCHED_EVENTS))
        self.nursery.start_soon(self._watch_events, subscription)
        self.nursery.start_soon(self._worker)
        self.nursery.start_soon(self._ticker)
        self._kick()

    def _kick(self) -> None:
        self._kicked.set()

    def _request(self) -> None:
        """A kick from an operator's message: also cuts short a failure backoff."""
        self._requested.set()
        self._requested = trio.Event()
        self._kick()

    # -- persistence and views -------------------------------------------------------------
    def _static_view(self) -> dict[str, Any]:
        doc = self.doc
        return {
            "name": doc["name"],
            "desired_replicas": doc["desired_replicas"],
            "config": doc["config"],
            "config_version": doc["config_version"],
            "created_at": doc["created_at"],
            "updated_at": doc["updated_at"],
            "rollout": dict(doc["rollout"]),
            "rollout_timeout": doc["rollout_timeout"],
            "min_ready_seconds": doc["min_ready_seconds"],
            "replica_versions": dict(doc["replica_versions"]),
            "deleting": bool(doc.get("deleting")),
            "last_error": doc.get("last_error"),
        }

    async def _persist(self, compute: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                       **changes: Any) -> None:
        """Write the new document, then adopt it; a failed write changes nothing.

        ``compute`` derives changes from the document *inside* the write lock, so
        concurrent replica creations cannot overwrite each other's entries.
        """
        async with self._write_lock:
            if compute is not None:
                changes = {**changes, **compute(self.doc)}
            updated = {**self.doc, **changes, "updated_at": utc_now()}
            await trio.to_thread.run_sync(
                self.deps.store.write, deployment_path(self.deployment), DEPLOYMENT_CODEC,
                updated)
            self.doc = updated
        self.deps.publish_view(self.deployment, self._static_view())

    def _event(self, type_: str, message: str, **extra: Any) -> None:
        indices, ready = self._counts()
        self.deps.events.publish(type_, self.deployment,
                                 deployment_status(self.doc, indices, ready),
                                 message=message, **extra)

    def _replicas(self) -> dict[str, dict[str, Any]]:
        """Views of every VM of this deployment (including oddly named ones)."""
        return {view["name"]: view for view in self.deps.vm_manager.list_views()
                if view.get("deployment") == self.deployment}

    def _counts(self) -> tuple[list[int], int]:
        indices: list[int] = []
        ready = 0
        for name, view in self._replicas().items():
            index = replica_index(self.deployment, name)
            if index is not None:
                indices.append(index)
                ready += view["status"] == "running"
        return indices, ready

    # -- messages ---------------------------------------------------------------------------
    async def handle(self, msg: Any) -> Any:
        if self.doc.get("deleting") and not isinstance(msg, DeleteDeployment | GetDeployment):
            raise ConflictError(f"deployment {self.deployment} is being deleted")
        match msg:
            case GetDeployment():
                return self._static_view()
            case Patch():
                return await self._patch(msg)
            case DeleteDeployment():
                if not self.doc.get("deleting"):
                    await self._persist(deleting=True)
                    self._event("DEPLOYMENT_DELETING", "deleting every replica")
                self._request()
                return self._deleted
            case Reconcile():
                self._request()
                return None
        raise TypeError(f"unknown message {msg!r}")

    async def _patch(self, patch: Patch) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if patch.rollout_timeout is not None:
            changes["rollout_timeout"] = patch.rollout_timeout
        if patch.min_ready_seconds is not None:
            changes["min_ready_seconds"] = patch.min_ready_seconds
        if patch.replicas is not None and patch.replicas != self.doc["desired_replicas"]:
            changes["desired_replicas"] = patch.replicas
        # The same config again after a failed rollout is a retry: a new version.
        new_rollout = patch.config is not None and (
            patch.config != self.doc["config"] or self.doc["rollout"].get("state") == "failed")
        if new_rollout:
            assert patch.config is not None
            version = int(self.doc["config_version"]) + 1
            changes["config"] = patch.config
            changes["config_version"] = version
            changes["rollout"] = {"state": "in_progress", "target_version": version,
                                  "from_version": self.doc["stable_version"],
                                  "updated": 0, "started_at": utc_now()}
        if changes:
            await self._persist(**changes)
        if "desired_replicas" in changes:
            # Reset only now: before the write the worker still sees the old count.
            self._announced_scale = None
            self._event("DEPLOYMENT_SCALING", f"scaling to {patch.replicas} replicas",
                        desired_replicas=patch.replicas)
        if new_rollout:
            self._event("DEPLOYMENT_ROLLOUT_STARTED",
                        f"rolling out config version {self.doc['config_version']}",
                        config_version=self.doc["config_version"])
        self._request()
        return self._static_view()

    # -- background tasks ---------------------------------------------------------------------
    async def _watch_events(self, subscription: Any) -> None:
        """React to our replicas' VM events; resubscribe (and resync) after an overflow."""
        while True:
            with subscription:
                async for event in subscription:
                    if replica_index(self.deployment, event.name) is not None:
                        self._kick()
            subscription = await self.deps.events.subscribe(
                flt=EventFilter(types=WATCHED_EVENTS))
            self._kick()

    async def _ticker(self) -> None:
        """A safety net for what no event announces (a policy decision saved after its event)."""
        idle = 0.0
        while True:
            await trio.sleep(self.deps.recheck_interval)
            idle += self.deps.recheck_interval
            if not self._converged or idle >= self.deps.idle_resync:
                idle = 0.0
                self._kick()

    async def _worker(self) -> None:
        while True:
            await self._kicked.wait()
            self._kicked = trio.Event()
            try:
                await self._reconcile()
            except VolantError as exc:
                self._converged = False
                self._failed_passes += 1
                self.log.warning("reconcile pass failed", error=str(exc))
                if self.doc.get("last_error") != str(exc):
                    # Best effort: when the pass failed because the disk is full, this
                    # write fails too, and the next pass retries anyway.
                    with contextlib.suppress(StoreFullError, StoreWriteError):
                        await self._persist(last_error=str(exc))
                # Back off (a removed plugin fails every pass), but an operator's request
                # (scale, config, delete) is served at once.
                delay = min(HEAL_BACKOFF_MAX, 0.5 * 2 ** (self._failed_passes - 1))
                with trio.move_on_after(delay):
                    await self._requested.wait()
            else:
                self._failed_passes = 0
            if self._deleted.is_set():
                self.stop_self()
                return

    # -- reconciliation -----------------------------------------------------------------------
    async def _reconcile(self) -> None:
        if self.doc.get("deleting"):
            await self._delete_everything()
            return
        self._announce_ready()
        desired = int(self.doc["desired_replicas"])
        replicas = self._replicas()
        surplus = sorted(
            (name for name in replicas
             if (replica_index(self.deployment, name) or desired + 1) > desired),
            key=lambda name: -(replica_index(self.deployment, name) or 0))
        problems = await self._bounded(surplus, self._remove_replica)

        replicas = self._replicas()
        missing = [replica_name(self.deployment, i) for i in range(1, desired + 1)
                   if replica_name(self.deployment, i) not in replicas]
        # A VM outside this deployment holding a replica's name is not ours to destroy.
        foreign = [name for name in missing if name in self.deps.vm_manager.views]
        missing = [name for name in missing if name not in foreign]
        version, _ = self._creation_config()
        problems += await self._bounded(
            missing, lambda name: self._create_replica(name, version))

        await self._heal()
        desired = int(self.doc["desired_replicas"])  # a PATCH may have landed meanwhile
        indices, ready = self._counts()
        if sorted(indices) == list(range(1, desired + 1)) and self._announced_scale != desired:
            self._announced_scale = desired
            self._event("DEPLOYMENT_SCALED", f"{desired} replicas present",
                        desired_replicas=desired, ready_replicas=ready)

        if self.doc["rollout"].get("state") == "in_progress":
            await self._rollout_step()
            indices, ready = self._counts()
        self._converged = (sorted(indices) == list(range(1, desired + 1)) and ready == desired
                           and self.doc["rollout"].get("state") != "in_progress")
        if self._converged and self.doc.get("last_error"):
            await self._persist(last_error=None)
        self._announce_ready()
        self.deps.publish_view(self.deployment, self._static_view())
        if foreign:
            problems.append(ConflictError(
                f"vm {foreign[0]} exists outside deployment {self.deployment}; rename or "
                "delete it", vm=foreign[0]))
        if problems:  # reported after the rest of the pass was done, not instead of it
            self._converged = False
            raise problems[0]

    def _announce_ready(self) -> None:
        """``DEPLOYMENT_READY_REPLICAS`` whenever the ready count changed: a dip is on record."""
        _, ready = self._counts()
        if ready != self._announced_ready:
            self._announced_ready = ready
            self._event("DEPLOYMENT_READY_REPLICAS", f"{ready} replicas ready",
                        ready_replicas=ready, desired_replicas=self.doc["desired_replicas"])

    async def _bounded(self, names: list[str], action: Callable[[str], Awaitable[None]]
                       ) -> list[VolantError]:
        """Run ``action`` over ``names`` in order, at most ``CREATE_CONCURRENCY`` at a time.

        Returns the domain errors; one failed replica does not stop the others.
        """
        if not names:
            return []
        limiter = trio.CapacityLimiter(CREATE_CONCURRENCY)
        errors: list[VolantError] = []

        async def one(name: str) -> None:
            async with limiter:
                try:
                    await action(name)
                except VolantError as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
                # Let it take the limiter before the next: highest index first on scale-down.
                await trio.lowlevel.checkpoint()
        return errors

    def _creation_config(self) -> tuple[int, dict[str, Any]]:
        """New replicas use the target config, or the last good one after a failed rollout."""
        if self.doc["rollout"].get("state") == "failed":
            return int(self.doc["stable_version"]), self.doc["stable_config"]
        return int(self.doc["config_version"]), self.doc["config"]

    def _config_of(self, version: int) -> dict[str, Any]:
        if version == int(self.doc["config_version"]):
            return dict(self.doc["config"])
        if version == int(self.doc["stable_version"]):
            return dict(self.doc["stable_config"])
        return self._creation_config()[1]

    async def _create_replica(self, name: str, version: int) -> None:
        """Create one replica from config ``version``; an existing VM counts as present."""
        if self.doc["replica_versions"].get(name) != version:  # intent first, then act
            await self._persist(lambda doc: {
                "replica_versions": {**doc["replica_versions"], name: version}})
        create = await prepare_create(create_body(name, self._config_of(version)),
                                      self.deps.plugins, self.deps.media,
                                      deployment=self.deployment)
        try:
            await self.deps.vms.call(create, timeout=60)
        except ConflictError:
            self.log.info("replica already exists", replica=name)

    async def _destroy_vm(self, name: str) -> None:
        try:
            done: trio.Event = await self.deps.vms.call(DestroyVM(name), timeout=30)
        except NotFoundError:
            return
        except ConflictError:  # already being destroyed: wait for it to go
            # The manager keeps that destroy's event to itself: watch the view go.
            while name in self.deps.vm_manager.views:  # noqa: ASYNC110
                await trio.sleep(self.deps.poll_interval)
            return
        await done.wait()

    async def _remove_replica(self, name: str) -> None:
        await self._destroy_vm(name)
        if name in self.doc["replica_versions"]:
            await self._persist(lambda doc: {"replica_versions": {
                key: value for key, value in doc["replica_versions"].items() if key != name}})

    async def _heal(self) -> None:
        """Replace replicas that will not come back by themselves (their VM gave up)."""
        now = trio.current_time()
        for name, view in sorted(self._replicas().items()):
            index = replica_index(self.deployment, name)
            if index is None or index > int(self.doc["desired_replicas"]):
                continue
            if view["status"] == "running" and now - self._heal_not_before.get(name, 0) > 60:
                self._heal_attempts.pop(name, None)
            dead = view.get("desired_state") == "stopped" and view["status"] in DEAD_STATUSES
            if not dead:
                continue
            if now < self._heal_not_before.get(name, 0.0):
                self._converged = False
                continue
            attempts = self._heal_attempts.get(name, 0)
            self._heal_attempts[name] = attempts + 1
            self._heal_not_before[name] = now + min(HEAL_BACKOFF_MAX, float(2 ** attempts) - 1)
            version = int(self.doc["replica_versions"].get(name, self._creation_config()[0]))
            if self.doc["rollout"].get("state") == "failed" and version == int(
                    self.doc["config_version"]):
                version = int(self.doc["stable_version"])
            self.log.info("replacing replica", replica=name, status=view["status"])
            await self._destroy_vm(name)
            await self._create_replica(name, version)
            self._event("DEPLOYMENT_REPLICA_REPLACED",
                        f"replica {name} was {view['status']}; replaced",
                        replica=name, previous_status=view["status"])

    async def _rollout_step(self) -> None:
        """Replace the next replica still on an older config version, and wait for it."""
        rollout = dict(self.doc["rollout"])
        target = int(rollout["target_version"])
        desired = int(self.doc["desired_replicas"])
        versions = self.doc["replica_versions"]
        current = rollout.get("current")
        if not current:
            pending = [replica_name(self.deployment, i) for i in range(1, desired + 1)
                       if int(versions.get(replica_name(self.deployment, i), 0)) != target]
            if not pending:
                await self._persist(rollout={**rollout, "state": "completed",
                                             "finished_at": utc_now()},
                                    stable_config=self.doc["config"], stable_version=target)
                self._event("DEPLOYMENT_ROLLOUT_COMPLETED",
                            f"config version {target} rolled out", config_version=target)
                return
            current = pending[0]
            # Recorded before acting: a volantd killed now replaces this replica again.
            await self._persist(rollout={**rollout, "current": current})
        await self._destroy_vm(current)
        await self._create_replica(current, target)
        try:
            await self._wait_healthy(current, target)
        except ReplicaUnhealthy as exc:
            await self._rollout_failed(current, target, str(exc))
            return
        if self.doc.get("deleting") or self.doc["rollout"].get("target_version") != target:
            return  # superseded (a newer config, a delete) while we waited
        rollout = dict(self.doc["rollout"])
        rollout.pop("current", None)
        rollout["updated"] = int(rollout.get("updated", 0)) + 1
        await self._persist(rollout=rollout)
        self._event("DEPLOYMENT_ROLLOUT_PROGRESS", f"replica {current} is on version {target}",
                    replica=current, config_version=target)
        self._kick()  # next replica in the next pass, after healing in between

    async def _wait_healthy(self, name: str, target: int) -> None:
        """Running for ``min_ready_seconds`` without a break, within ``rollout_timeout``."""
        timeout = float(self.doc["rollout_timeout"])
        min_ready = float(self.doc["min_ready_seconds"])
        deadline = trio.current_time() + timeout
        running_since: float | None = None
        last = "never seen"
        while trio.current_time() < deadline:
            if self.doc.get("deleting") or self.doc["rollout"].get("target_version") != target:
                return  # the operator moved on; the caller rechecks
            view = self.deps.vm_manager.views.get(name)
            now = trio.current_time()
            if view is None:
                running_since, last = None, "missing"
            elif view["status"] == "running":
                running_since = running_since if running_since is not None else now
                if now - running_since >= min_ready:
                    return
            else:
                running_since = None
                last = view["status"]
                if view.get("desired_state") == "stopped" and last in DEAD_STATUSES:
                    reason = view.get("last_exit") or last
                    raise ReplicaUnhealthy(f"replica {name} is {last}: {reason}")
            await trio.sleep(self.deps.poll_interval)
        raise ReplicaUnhealthy(f"replica {name} not healthy within {timeout:g}s (last: {last})")

    async def _rollout_failed(self, name: str, target: int, reason: str) -> None:
        rollout = {**self.doc["rollout"], "state": "failed", "failed_replica": name,
                   "reason": reason, "finished_at": utc_now()}
        rollout.pop("current", None)
        await self._persist(rollout=rollout)
        self._event("DEPLOYMENT_ROLLOUT_FAILED", reason, replica=name, config_version=target)
        # Put the broken replica back on the last config that worked.
        stable = int(self.doc["stable_version"])
        await self._destroy_vm(name)
        await self._create_replica(name, stable)

    async def _delete_everything(self) -> None:
        """Destroy every replica (the VM manager removes taps, IPs and files), then the file."""
        while True:
            names = sorted(self._replicas(), key=lambda n: -(replica_index(self.deployment, n)
                                                            or 0))
            if not names:
                break
            problems = await self._bounded(names, self._destroy_vm)
            if problems:
                raise problems[0]
        await trio.to_thread.run_sync(self.deps.store.delete, deployment_path(self.deployment))
        self.deps.publish_view(self.deployment, None)
        self.deps.events.publish("DEPLOYMENT_DELETED", self.deployment, "deleted",
                                 message="deployment and its replicas deleted")
        self._deleted.set()


__all__ = [
    "DEPLOYMENT_CODEC",
    "DeleteDeployment",
    "DeploymentActor",
    "DeploymentDeps",
    "DeploymentSpec",
    "GetDeployment",
    "Patch",
    "Reconcile",
    "create_body",
    "deployment_path",
    "deployment_status",
    "new_document",
    "parse_create_deployment",
    "parse_patch",
    "replica_index",
    "replica_name",
]
