"""The VM actor: one VM's state machine, its record, and its restart policy.

States (DESIGN.md section 4): pending → starting → running → stopping → stopped,
plus crashed (the VMM ended unexpectedly), failed (restart budget exhausted) and
destroying. The actor is the only writer of ``vms/<name>/state.json``.

While the VM should run, the actor supervises a *runner*: a rest_for_one
supervisor of the tap actor (when the network mode needs one) and the VMM actor.
Actor crashes inside the runner are the supervisor's business; the VM's own
exits are the user's restart policy, applied here: ``VM_CRASHED``, then
``VM_RESTARTING`` after a jittered exponential backoff, or ``VM_FAILED`` when the
budget of consecutive retries is spent.

Messages from the runner carry a *generation*; a message from a runner that was
already replaced (a late exit report during a stop, say) is ignored.

Config (``vms/<name>/config.toml`` and its history): this actor is the only
writer. ``PatchConfig`` validates the whole patched config (merge rules in
``volant.vmconfig``, cloud-init ``path`` documents refused, the manifest must
still fit the kernel command line) and writes version n+1; nothing changes on
any error. Changes take effect at the next launch: before *every* launch the
actor derives CPU, memory, command line, API endpoint, network mode and restart
policy from the current config (``launch_fields``) and records the version it
booted (``config_version``). The restart policy is also applied at once (it is
not a boot parameter). ``restart_required`` in the view compares the running
instance's config with the current one.

Network mode changes need IPAM, which belongs to the VM manager: at launch, if
the config's mode differs from the record's, the actor calls the manager's
``renetwork`` (a plain synchronous method: IPAM is only used from the trio
thread, so the call is atomic and cannot deadlock on mailboxes). The old IP is
therefore kept until the next start and released only then.

Launch also builds the cloud-init seed (``<runtime_dir>/vms/<name>/seed.img``,
rebuilt only when its content changes, attached read-only as the last disk) and
checks the VFIO devices (``config.devices`` else the manifest's): a device that
cannot be assigned fails a user's start with its 4xx, and an automatic launch
with ``VM_FAILED`` instead of a restart loop. The runner then holds one
``VfioBindingActor`` per device between the tap and the VMM.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from volant.actors import Actor, Backoff, ChildSpec, Restart, Strategy, Supervisor
from volant.cloudinit import (
    ensure_seed,
    merge_cloud_init,
    reject_path_documents,
    remove_seed,
    seed_documents,
    seed_path,
)
from volant.config import Config
from volant.devices import Sysfs, VfioManager, normalize_address, sysfs_root
from volant.errors import ConflictError, ValidationError, VolantError
from volant.logging import get_logger
from volant.media import copy_once
from volant.network import links
from volant.network.ipam import derive_mac
from volant.network.modes import NetworkMode, parse_mode
from volant.network.tapname import tap_name
from volant.orchestrator.events import EventBus, utc_now
from volant.orchestrator.hostnet import HostNetwork
from volant.orchestrator.lifecycle import DaemonLifecycle
from volant.orchestrator.tap import TapActor
from volant.orchestrator.vfio import (
    NOT_RECORDED,
    VfioBindingActor,
    VfioOwnership,
    check_assignment,
)
from volant.orchestrator.vmm import (
    StopTimeouts,
    VMMActor,
    VmmAdopted,
    VmmExited,
    VmmLaunched,
    VmmNotReady,
    VmmReady,
)
from volant.orchestrator.vmrecord import (
    VM_CODEC,
    RestartPolicyName,
    VMRecord,
    VMStatus,
    record_to_doc,
    record_view,
)
from volant.orchestrator.vmrequest import launch_fields, network_mode_of
from volant.runtime.base import (
    DiskSpec,
    ExitInfo,
    Launcher,
    LaunchSpec,
    VMMHandle,
    VMMStuckError,
    find_marked_processes,
    stop_ladder,
)
from volant.store import StateStore
from volant.store.retry import write_until_stored
from volant.vmconfig import (
    ConfigStore,
    VersionedConfig,
    VMConfig,
    apply_patch,
    effective_devices,
    parse_patch,
    restart_required,
)

log = get_logger("volant.vm")

BOOT_MARKER = b"VOLANT_BOOT_OK"


# Messages from the API / manager ---------------------------------------------------
@attrs.frozen
class Start:
    pass


@attrs.frozen
class Stop:
    pass


@attrs.frozen
class RestartVM:
    pass


@attrs.frozen
class Destroy:
    pass


@attrs.frozen
class GetView:
    pass


@attrs.frozen
class PatchConfig:
    """A PATCH body (decoded JSON); the reply is the new ``VersionedConfig`` as JSON."""

    body: Any


# Internal messages -------------------------------------------------------------------
@attrs.frozen
class RunnerFailed:
    generation: int
    reason: str


@attrs.frozen
class RestartNow:
    generation: int


@attrs.define
class VMDeps:
    """What every VM actor shares; built once by the VM manager."""

    cfg: Config
    store: StateStore
    events: EventBus
    launcher: Launcher
    lifecycle: DaemonLifecycle
    hostnet: HostNetwork | None
    publish_view: Callable[[str, dict[str, Any] | None], None]
    ready_marker: bytes = BOOT_MARKER
    #: ``renetwork(vm, mode) -> ip`` (``""`` for none): the manager's IPAM, set by it.
    renetwork: Callable[[str, NetworkMode], str] = lambda _name, _mode: ""
    vfio_ownership: VfioOwnership = attrs.field(factory=VfioOwnership)
    vfio: VfioManager | None = None  # built from VOLANT_SYSFS_ROOT on first use
    timeouts: StopTimeouts = attrs.field(factory=StopTimeouts)
    rng: random.Random = attrs.field(factory=random.Random)


    def vfio_manager(self) -> VfioManager:
        if self.vfio is None:
            self.vfio = VfioManager(Sysfs(sysfs_root()))
        return self.vfio


#: Stands in for the VM's address when a check must count the command line's length.
_LONGEST_IP = "255.255.255.255"


def vm_run_dir(cfg: Config, name: str) -> Path:
    return cfg.runtime_dir / "vms" / name


def vfio_request(config: VMConfig) -> tuple[list[str], list[str]]:
    """The PCI addresses a config passes through and its allowlist."""
    devices = effective_devices(config)
    if devices is None:
        return [], []
    return list(devices.pci_passthrough), list(devices.allowlist)


def full_cmdline(record: VMRecord) -> str:
    """Base args, then ``volant.*`` keys sorted, so the command line is deterministic."""
    extra = " ".join(f"{key}={value}" for key, value in sorted(record.boot_args.items()))
    return f"{record.kernel_cmdline} {extra}".strip()


class VMActor(Actor[Any]):
    mailbox_size = 256

    def __init__(self, record: VMRecord, deps: VMDeps) -> None:
        self.record = record
        self.deps = deps
        self.generation = 0
        self.runner: Supervisor | None = None
        self._runner_done: trio.Event | None = None
        self._adopted: VMMHandle | None = None
        self._running_since: float | None = None
        self._destroyed = False
        self._start_settled = True  # no runner started yet: nothing to sweep
        self.config: VersionedConfig | None = None
        #: The config the current (or last) instance booted with.
        self.booted: VMConfig | None = None
        self._save_lock = trio.Lock()

    # -- helpers ------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return vm_run_dir(self.deps.cfg, self.record.name)

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def config_store(self) -> ConfigStore:
        return ConfigStore(self.deps.store, self.record.name)

    def _restart_required(self) -> bool:
        r = self.record
        if self.config is None or (r.vmm is None and self.runner is None):
            return False
        if r.config_version == self.config.version:
            return False
        if self.booted is None:
            return True
        return restart_required(self.booted, self.config.config)

    def view(self) -> dict[str, Any]:
        serial = self.record.vmm.serial_socket if self.record.vmm else str(
            self.run_dir / "serial.sock")
        return record_view(
            self.record, serial, str(self.console_log),
            current_config_version=self.config.version if self.config is not None else None,
            restart_required=self._restart_required())

    async def _save(self, **changes: Any) -> None:
        """Persist a fact about the VM, then publish the new view.

        A fact (a VMM launched or exited, a restart counted) cannot be refused, so a
        full or failing disk is waited out (``write_until_stored``); until the write
        lands nothing of it is published, as the event journal holds its events back.
        Only a user's request may be refused for lack of space: ``_save_request``.

        Serialised by a lock: a VFIO binding actor records original drivers from the
        runner's task while this actor may be saving too; no update may be lost.
        """
        await self._write(changes, retry=True)

    async def _save_request(self, **changes: Any) -> None:
        """Persist what a user asked for; a failed write raises (507) and changes nothing."""
        await self._write(changes, retry=False)

    async def _write(self, changes: dict[str, Any], *, retry: bool) -> None:
        async with self._save_lock:
            updated = attrs.evolve(self.record, updated_at=utc_now(), **changes)
            path, doc = f"vms/{updated.name}/state.json", record_to_doc(updated)
            if retry:
                await write_until_stored(
                    lambda: self.deps.store.write(path, VM_CODEC, doc), what=path)
            else:
                await trio.to_thread.run_sync(self.deps.store.write, path, VM_CODEC, doc)
            self.record = updated
        self.deps.publish_view(updated.name, self.view())

    async def _load_config(self) -> None:
        store = self.config_store
        booted_version = self.record.config_version

        def load() -> tuple[VersionedConfig | None, VMConfig | None]:
            current = store.load()
            if current is None or current.version == booted_version:
                return current, current.config if current is not None else None
            try:
                old = store.get_version(booted_version)
            except VolantError:
                old = None
            return current, old.config if old is not None else None

        try:
            self.config, self.booted = await trio.to_thread.run_sync(load)
        except Exception as exc:  # an unreadable config must not crash-loop the actor
            log.warning("vm config unreadable; booting from the record", vm=self.record.name,
                        error=repr(exc))
            self.config = self.booted = None

    def _event(self, type_: str, message: str = "", **extra: Any) -> None:
        r = self.record
        self.deps.events.publish(
            type_, r.name, r.status.value, pid=r.pid, ip_address=r.ip_address or None,
            mac_address=r.mac_address or None, message=message or None,
            restart_count=r.restart_count, **extra,
        )

    # -- lifecycle ------------------------------------------------------------------------
    async def on_start(self) -> None:
        await self._load_config()
        self.deps.publish_view(self.record.name, self.view())
        r = self.record
        if r.desired == "running":
            if r.vmm is not None:
                handle = self.deps.launcher.adopt(r.vmm)
                if handle is not None and await self._tap_missing():
                    await self._replace_vmm_without_tap(handle)
                    return
                if handle is not None:
                    self._adopted = handle
                    await self._start_runner()
                    return
                await self._save(vmm=None, status=VMStatus.CRASHED,
                                 last_exit="vmm exited while volantd was down")
                self._event("VM_CRASHED", "vmm exited while volantd was down")
                await self._apply_policy(clean=False)
                return
            if r.status is VMStatus.CRASHED:
                # volantd died during a restart backoff: continue with the policy.
                await self._apply_policy(clean=False, count_failure=False)
                return
            await self._launch()
            return
        # Not supposed to run. A VMM still alive from an interrupted stop is stopped now.
        if r.vmm is not None:
            handle = self.deps.launcher.adopt(r.vmm)
            if handle is not None:
                self._adopted = handle
                await self._start_runner()
                await self._stop_runner()
            await self._save(vmm=None)
        if r.status in (VMStatus.STARTING, VMStatus.RUNNING, VMStatus.STOPPING,
                        VMStatus.PENDING):
            await self._save(status=VMStatus.STOPPED)

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self._stop_runner()

    # -- the runner -----------------------------------------------------------------------
    async def _launch(self) -> None:
        # Not persisted: "starting" without a VMM identity means nothing to recovery
        # (desired=running relaunches either way); the launch's identity is saved next.
        self.record = attrs.evolve(self.record, status=VMStatus.STARTING, updated_at=utc_now())
        self.deps.publish_view(self.record.name, self.view())
        self._event("VM_STARTING", "launching vmm")
        try:
            await self._apply_config()
        except VolantError as exc:
            # A config the host cannot honour does not heal by retrying: no restart loop.
            await self._save(status=VMStatus.FAILED, desired="stopped", vmm=None,
                             last_exit=exc.message)
            self._event("VM_FAILED", f"cannot start with config version "
                        f"{self.config.version if self.config else '?'}: {exc.message}")
            return
        try:
            await self._prepare_media()
        except (OSError, VolantError) as exc:
            await self._fail_start(f"cannot prepare disks: {exc}")
            return
        await self._start_runner()

    async def _check_config(self, config: VMConfig) -> None:
        """Everything a launch with ``config`` would refuse, without side effects."""
        r = self.record
        mode = network_mode_of(config)
        launch_fields(self.deps.cfg, r.name, config, mode=mode,
                      ip=_LONGEST_IP if mode.needs_ip else "",
                      rootfs=bool(r.root_disk_source), policy=r.restart_policy)
        addresses, allowlist = vfio_request(config)
        if addresses:
            deps = self.deps
            await trio.to_thread.run_sync(check_assignment, deps.vfio_manager(),
                                          deps.vfio_ownership, r.name, addresses, allowlist)

    async def _apply_config(self) -> None:
        """Derive this boot's parameters from the current config and record its version."""
        if self.config is None:
            return  # a VM from before configs existed: its record holds everything
        versioned = self.config
        config = versioned.config
        r = self.record
        await self._check_config(config)
        mode = network_mode_of(config)
        changes: dict[str, Any] = {}
        ip = r.ip_address
        if mode.value != r.network_mode or mode.needs_ip != bool(ip):
            ip = self.deps.renetwork(r.name, mode)
            changes.update(ip_address=ip, mac_address=derive_mac(r.name, ip or None),
                           tap=tap_name(r.name) if mode.needs_tap else "")
        changes.update(launch_fields(self.deps.cfg, r.name, config, mode=mode, ip=ip,
                                     rootfs=bool(r.root_disk_source), policy=r.restart_policy))
        await self._save(config_version=versioned.version, **changes)
        self.booted = config

    async def _prepare_media(self) -> None:
        r = self.record
        await trio.to_thread.run_sync(lambda: self.run_dir.mkdir(parents=True, exist_ok=True))
        if r.root_disk and r.root_disk_source:
            await trio.to_thread.run_sync(copy_once, Path(r.root_disk_source), Path(r.root_disk))
        config = self.booted
        merged = (merge_cloud_init(config.manifest.cloud_init, config.cloud_init)
                  if config is not None else None)
        docs = seed_documents(merged, r.id, r.name)
        seed = seed_path(self.run_dir)
        if docs is None:
            await trio.to_thread.run_sync(remove_seed, seed)
            return
        _, rebuilt = await trio.to_thread.run_sync(ensure_seed, seed, docs)
        if rebuilt:
            log.info("cloud-init seed built", vm=r.name, path=str(seed), mode=docs.seed_mode)

    def _spec(self) -> LaunchSpec:
        r = self.record
        disks: list[DiskSpec] = []
        if r.root_disk:
            disks.append(DiskSpec(path=Path(r.root_disk), readonly=False, id="root"))
        for index, disk in enumerate(r.extra_disks):
            disks.append(DiskSpec(path=Path(disk["path"]), readonly=bool(disk.get("readonly")),
                                  id=f"disk{index}"))
        seed = seed_path(self.run_dir)
        if seed.is_file():  # removed at launch when the config has no cloud-init
            disks.append(DiskSpec(path=seed, readonly=True, id="seed"))
        addresses = self._vfio_addresses()
        vfio_paths = (tuple(self.deps.vfio_manager().device_paths(addresses))
                      if addresses else ())
        mode = parse_mode(r.network_mode)
        log.info("launch spec", vm=r.name, config_version=r.config_version,
                 disks=[{"id": d.id, "path": str(d.path), "readonly": d.readonly}
                        for d in disks], vfio_devices=list(vfio_paths))
        return LaunchSpec(
            name=r.name,
            instance_id=self.deps.lifecycle.instance_id,
            cpu_cores=r.cpu_cores,
            memory_mb=r.memory_mb,
            kernel=Path(r.kernel),
            initramfs=Path(r.initramfs) if r.initramfs else None,
            cmdline=full_cmdline(r),
            run_dir=self.run_dir,
            console_log=self.console_log,
            disks=tuple(disks),
            tap=r.tap or None if mode.needs_tap else None,
            mac=r.mac_address or None,
            vsock_cid=r.vsock_cid if not mode.needs_tap else None,
            vfio_devices=vfio_paths,
            accel=self.deps.cfg.accel,
        )

    def _vfio_addresses(self) -> list[str]:
        config = self.booted or (self.config.config if self.config is not None else None)
        return vfio_request(config)[0] if config is not None else []

    async def _record_vfio_original(self, address: str, driver: str | None) -> None:
        """Persist a device's original driver before it is touched (binding actor callback)."""
        await self._save(vfio_originals={**self.record.vfio_originals, address: driver})

    def _vfio_child(self, address: str, addresses: list[str], allowlist: list[str]
                    ) -> ChildSpec:
        deps = self.deps
        name = self.record.name
        others = [a for a in addresses if a != address]

        def make() -> VfioBindingActor:
            recorded = self.record.vfio_originals
            return VfioBindingActor(
                name, address, manager=deps.vfio_manager(), ownership=deps.vfio_ownership,
                lifecycle=deps.lifecycle, record_original=self._record_vfio_original,
                recorded_original=recorded.get(normalize_address(address), NOT_RECORDED),
                allowlist=allowlist, passed_with=others, events=deps.events)

        return ChildSpec(f"vfio:{address}", make, Restart.PERMANENT, shutdown_timeout=30.0)

    def _take_adopted(self) -> VMMHandle | None:
        handle, self._adopted = self._adopted, None
        return handle

    async def _start_runner(self) -> None:
        self.generation += 1
        generation = self.generation
        self._start_settled = False
        deps = self.deps
        r = self.record
        children: list[ChildSpec] = []
        if r.tap and deps.hostnet is not None and deps.hostnet.enabled:
            hostnet = deps.hostnet
            children.append(ChildSpec(
                "tap", lambda: TapActor(r.name, r.tap, hostnet, deps.events, deps.lifecycle),
                Restart.PERMANENT, shutdown_timeout=10.0))
        config = self.booted or (self.config.config if self.config is not None else None)
        addresses, allowlist = vfio_request(config) if config is not None else ([], [])
        for address in addresses:
            children.append(self._vfio_child(address, addresses, allowlist))
        # Only a real guest has an agent; the hollow stand-in must never cause traffic
        # to a guest address (it has no guest, and the address may not be local).
        has_agent = getattr(deps.launcher, "kind", "") != "hollow"
        agent_ip = (r.ip_address if has_agent and parse_mode(r.network_mode).ip_on_cmdline
                    else "")
        # A VMM adopted before its boot marker (volantd died while it booted) is still
        # starting: its runner keeps waiting for the marker instead of calling it running.
        adopted_booting = self._adopted is not None and r.status is VMStatus.STARTING
        children.append(ChildSpec(
            "vmm",
            lambda: VMMActor(
                vm_name=r.name, vm=self.ref, launcher=deps.launcher, spec_factory=self._spec,
                take_adopted=self._take_adopted, generation=generation,
                ready_marker=deps.ready_marker, ready_timeout=r.ready_timeout,
                agent_ip=agent_ip, lifecycle=deps.lifecycle, timeouts=deps.timeouts,
                adopted_booting=adopted_booting),
            Restart.TRANSIENT, shutdown_timeout=deps.timeouts.total))
        runner = Supervisor(
            f"vm:{r.name}", children, Strategy.REST_FOR_ONE, intensity=3, period=60.0,
            backoff=Backoff(initial=0.5, maximum=10.0, reset_after=60.0),
            rng=deps.rng,
        )
        self.runner = runner
        done = self._runner_done = trio.Event()
        self.nursery.start_soon(self._run_runner, runner, generation, done)

    async def _run_runner(self, runner: Supervisor, generation: int, done: trio.Event) -> None:
        try:
            await runner.run()
        except Exception as exc:
            log.warning("vm runner gave up", vm=self.record.name, error=repr(exc))
            self.ref.cast(RunnerFailed(generation, f"vmm could not be kept running: {exc!r}"))
        finally:
            done.set()

    async def _stop_runner(self) -> None:
        """Stop the runner (VMM stop ladder, then tap removal) and wait for it."""
        self.generation += 1  # reports from the old runner are stale from now on
        runner, done = self.runner, self._runner_done
        self.runner = None
        self._running_since = None
        if runner is None or done is None:
            return
        runner.request_stop()
        await done.wait()
        if not self.deps.lifecycle.detaching:
            if not self._start_settled:
                # Only a stop that landed before the runner reported its VMM can leave a
                # half-made tap or an unreported VMM; a /proc scan is too dear to do on
                # every crash with a thousand VMs.
                await self._sweep_leftovers()
            if self.record.vfio_originals and not self.deps.vfio_ownership.devices_of(
                    self.record.name):
                await self._save(vfio_originals={})  # every device was given back

    async def _tap_missing(self) -> bool:
        r = self.record
        hostnet = self.deps.hostnet
        if not r.tap or hostnet is None or not hostnet.enabled:
            return False
        return not await trio.to_thread.run_sync(links.link_exists, r.tap, hostnet.netns)

    async def _replace_vmm_without_tap(self, handle: VMMHandle) -> None:
        """The tap was deleted while volantd was down (found by volant-chaos --qemu-vm).

        The VMM still holds the deleted device, so a recreated tap would never reach its
        guest: replace the VMM, as a tap loss under a live volantd does. The power-down
        rung is cut short (recovery of the other VMs waits for this one); the tap stays
        missing until the old VMM is gone, so a volantd killed in between decides the
        same at its next start.
        """
        r = self.record
        self._event("VM_NETWORK_REPAIRED", f"tap {r.tap} was deleted while volantd was down; "
                    "restarting the VMM")
        timeouts = self.deps.timeouts
        try:
            await stop_ladder(self.deps.launcher, handle,
                              powerdown_timeout=min(timeouts.powerdown, 3.0),
                              term_timeout=timeouts.term, kill_timeout=timeouts.kill)
        except VMMStuckError as exc:
            await self._fail_start(exc.message)
            return
        await self._save(vmm=None)
        await self._launch()

    async def _sweep_leftovers(self) -> None:
        """Measure, then act: nothing of a stopped runner may survive it.

        A stop can land while the runner is still starting (a tap being created, a
        VMM being spawned); whatever the cancelled start left behind is removed here.
        """
        r = self.record
        instance = self.deps.lifecycle.instance_id
        for proc in await trio.to_thread.run_sync(find_marked_processes, instance):
            if proc.vm_name == r.name:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                log.warning("killed a vmm left over by an interrupted start", vm=r.name,
                            pid=proc.pid)
        hostnet = self.deps.hostnet
        if r.tap and hostnet is not None and hostnet.enabled:
            await trio.to_thread.run_sync(links.delete_link, r.tap, hostnet.netns)

    # -- messages -------------------------------------------------------------------------
    async def handle(self, msg: Any) -> Any:
        if self._destroyed:
            raise ConflictError(f"vm {self.record.name} is being destroyed")
        match msg:
            case GetView():
                return self.view()
            case PatchConfig(body):
                return await self._patch_config(body)
            case Start():
                return await self._user_start()
            case Stop():
                return await self._user_stop()
            case RestartVM():
                await self._user_stop()
                return await self._user_start()
            case Destroy():
                return await self._destroy()
            case VmmLaunched(gen, identity) if gen == self.generation:
                self._start_settled = True
                await self._save(vmm=identity, status=VMStatus.STARTING)
                self._event("VM_STARTING", "vmm launched, waiting for boot")
            case VmmAdopted(gen, identity) if gen == self.generation:
                self._start_settled = True
                if self.record.status is VMStatus.STARTING:
                    if self.record.vmm != identity:
                        await self._save(vmm=identity)
                    self._event("VM_ADOPTED", "booting vmm adopted after volantd restart; "
                                "waiting for its boot marker")
                    return None
                if self.record.vmm != identity or self.record.status is not VMStatus.RUNNING:
                    await self._save(vmm=identity, status=VMStatus.RUNNING)
                self._running_since = trio.current_time()
                self._event("VM_ADOPTED", "running vmm adopted after volantd restart")
            case VmmReady(gen) if gen == self.generation:
                self._running_since = trio.current_time()
                await self._save(status=VMStatus.RUNNING)
                self._event("VM_RUNNING", "vm running")
            case VmmNotReady(gen, reason) if gen == self.generation:
                await self._crashed(reason, ExitInfo(returncode=None, signal=None), clean=False)
            case VmmExited(gen, exit_info) if gen == self.generation:
                reason = _describe_exit(exit_info)
                await self._crashed(reason, exit_info, clean=exit_info.clean)
            case RunnerFailed(gen, reason) if gen == self.generation:
                await self._crashed(reason, ExitInfo(returncode=None, signal=None), clean=False)
            case RestartNow(gen) if gen == self.generation and self.record.desired == "running":
                await self._save(restart_count=self.record.restart_count + 1)
                await self._launch()
            case _:
                return None  # stale report from a replaced runner
        return None

    async def _patch_config(self, body: Any) -> dict[str, Any]:
        """Validate the whole patched config, then write version n+1 (nothing on error)."""
        patch = parse_patch(body)
        if patch.is_empty():
            raise ValidationError("patch: no fields given", field="patch")
        if self.config is None:
            raise ConflictError(f"vm {self.record.name} has no config to patch")
        patched = apply_patch(self.config.config, patch)
        reject_path_documents(merge_cloud_init(patched.manifest.cloud_init, patched.cloud_init))
        r = self.record
        mode = network_mode_of(patched)
        launch_fields(self.deps.cfg, r.name, patched, mode=mode,
                      ip=_LONGEST_IP if mode.needs_ip else "",
                      rootfs=bool(r.root_disk_source), policy=r.restart_policy)
        updated = await trio.to_thread.run_sync(self.config_store.update, patched)
        self.config = updated
        spec = patched.restart_policy
        policy = attrs.evolve(r.restart_policy, name=RestartPolicyName(spec.name),
                              max_retries=spec.max_retries)
        await self._save(restart_policy=policy)  # not a boot parameter: effective now
        self._event("VM_CONFIG_UPDATED", f"config version {updated.version}",
                    config_version=updated.version,
                    restart_required=self._restart_required())
        return updated.to_json()

    async def _user_start(self) -> dict[str, Any]:
        r = self.record
        if r.status in (VMStatus.RUNNING, VMStatus.STARTING) and self.runner is not None:
            raise ConflictError(f"vm {r.name} is already {r.status.value}")
        if self.config is not None:
            await self._check_config(self.config.config)  # a bad device is the caller's 4xx
        await self._save_request(desired="running", consecutive_failures=0)
        if self.runner is not None:
            await self._stop_runner()
        await self._launch()
        return self.view()

    async def _user_stop(self) -> dict[str, Any]:
        r = self.record
        was_running = self.runner is not None
        await self._save_request(desired="stopped",
                                 status=VMStatus.STOPPING if was_running else r.status)
        self.generation += 1  # cancels a pending automatic restart too
        if was_running:
            self._event("VM_STOPPING", "stopping vm")
            await self._stop_runner()
        if self.record.status is not VMStatus.STOPPED or self.record.vmm is not None:
            await self._save(status=VMStatus.STOPPED, vmm=None)
            self._event("VM_STOPPED", "vm stopped")
        return self.view()

    async def _destroy(self) -> dict[str, Any]:
        await self._save_request(desired="stopped", status=VMStatus.DESTROYING)
        self.generation += 1
        had_runner = self.runner is not None
        await self._stop_runner()
        if not had_runner:
            # A VM without a runner (failed, crashed, stopped) can still own a tap or a
            # VMM left from before a volantd restart; destroy must leave nothing.
            await self._sweep_leftovers()
        name = self.record.name
        await trio.to_thread.run_sync(
            lambda: shutil.rmtree(self.run_dir, ignore_errors=True))
        await trio.to_thread.run_sync(self.deps.store.delete_tree, f"vms/{name}")
        self._destroyed = True
        view = self.view()
        self.deps.events.publish("VM_DELETED", name, VMStatus.STOPPED.value,
                                 message="vm deleted")
        self.deps.publish_view(name, None)
        self.stop_self()
        return view

    async def _fail_start(self, reason: str) -> None:
        await self._crashed(reason, ExitInfo(returncode=None, signal=None), clean=False)

    async def _crashed(self, reason: str, exit_info: ExitInfo, *, clean: bool) -> None:
        uptime = (trio.current_time() - self._running_since
                  if self._running_since is not None else 0.0)
        policy = self.record.restart_policy
        failures = 0 if uptime >= policy.reset_after else self.record.consecutive_failures
        # Report first (crash detection latency is what operators see), then persist and
        # clean up. Should volantd die between the two, recovery finds the VMM gone and
        # reports the crash again: a duplicate report, never a lost one.
        status = VMStatus.STOPPED if clean else VMStatus.CRASHED
        self.record = attrs.evolve(self.record, status=status, vmm=None, last_exit=reason,
                                   consecutive_failures=failures, updated_at=utc_now())
        self._event("VM_STOPPED" if clean else "VM_CRASHED", reason)
        await self._save()
        await self._stop_runner()
        await self._apply_policy(clean=clean)

    async def _apply_policy(self, *, clean: bool, count_failure: bool = True) -> None:
        r = self.record
        policy = r.restart_policy
        if not policy.should_restart(clean):
            await self._save(desired="stopped")
            return
        failures = r.consecutive_failures
        if failures >= policy.max_retries:
            await self._save(status=VMStatus.FAILED, desired="stopped")
            self._event("VM_FAILED",
                        f"restart budget exhausted after {failures} consecutive restarts")
            return
        if count_failure:
            failures += 1
            await self._save(consecutive_failures=failures)
        delay = Backoff(initial=policy.backoff_initial, maximum=policy.backoff_max,
                        jitter=0.2).delay(failures, self.deps.rng)
        self.generation += 1
        generation = self.generation
        self._event("VM_RESTARTING", f"restart {failures}/{policy.max_retries} in {delay:.2f}s",
                    delay=round(delay, 3))
        self.nursery.start_soon(self._restart_later, generation, delay)

    async def _restart_later(self, generation: int, delay: float) -> None:
        await trio.sleep(delay)
        self.ref.cast(RestartNow(generation))


def _describe_exit(exit_info: ExitInfo) -> str:
    if exit_info.signal is not None:
        return f"vmm killed by signal {exit_info.signal}"
    if exit_info.returncode is None:
        return "vmm exited (status unknown: adopted process)"
    if exit_info.returncode == 0:
        return "vm exited cleanly"
    return f"vmm exited with status {exit_info.returncode}"
