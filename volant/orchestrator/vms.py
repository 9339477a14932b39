"""The VM manager actor: names, addresses, creation, destruction and recovery.

It owns what must be unique across VMs — names, IPs and vsock CIDs (IPAM) — and
the VM supervisor's children. Allocations are *derived* from the VM records at
startup (there is no allocation table that could leak), and a VM keeps its IP
across restarts because the IP lives in its record.

Startup recovery (DESIGN.md section 6) happens in ``on_start``, before the API
opens: load records (quarantining unreadable ones), rebuild IPAM, kill VMM
processes that carry our marker but belong to no record, delete orphan taps,
finish interrupted destroys, then start one VM actor per record — each adopts
its live VMM (same PID, no reboot) or applies its restart policy.

Reads (get, list) are served from ``views``: each VM actor publishes an
immutable snapshot of its public state here after every change, so listing a
thousand VMs never waits on a thousand mailboxes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from typing import Any

import attrs
import trio

from volant.actors import Actor, Backoff, ChildSpec, DynamicSupervisor, Restart
from volant.errors import ConflictError, NotFoundError, VolantError
from volant.logging import get_logger
from volant.network import dhcp, links
from volant.network.ipam import IPAM, derive_mac
from volant.network.modes import NetworkMode
from volant.network.tapname import is_our_tap, tap_name
from volant.orchestrator.events import utc_now
from volant.orchestrator.vfio import VfioLedger, check_assignment, recover_vfio
from volant.orchestrator.vm import Destroy, GetView, VMActor, VMDeps, vfio_request, vm_run_dir
from volant.orchestrator.vmrecord import (
    VM_CODEC,
    VMRecord,
    VMStatus,
    record_from_doc,
    record_to_doc,
)
from volant.orchestrator.vmrequest import Resolved, launch_fields
from volant.runtime.base import RuntimeUnsupported, find_marked_processes, read_start_time
from volant.store import SnapshotCodec
from volant.vmconfig import ConfigStore

log = get_logger("volant.vms")

#: ``vms.json``: the highest VM id ever handed out, so ids are never reused.
IDS_CODEC = SnapshotCodec("vm-ids", 1)


@attrs.frozen
class CreateVM:
    resolved: Resolved
    initramfs: str
    rootfs: str
    deployment: str = ""


@attrs.frozen
class DestroyVM:
    name: str


@attrs.frozen
class VMRef:
    name: str


VMSort = ("name", "status", "runtime", "updated_at", "created_at")


class VMManager(Actor[Any]):
    mailbox_size = 1024

    def __init__(self, deps: VMDeps, supervisor: DynamicSupervisor, plugins_ref: Any) -> None:
        self.deps = deps
        self.supervisor = supervisor
        self.plugins_ref = plugins_ref
        cfg = deps.cfg
        self.ipam = IPAM(cfg.subnet, cfg.host_ip)
        self.views: dict[str, dict[str, Any]] = {}
        self.names: set[str] = set()
        self.destroying: set[str] = set()
        self.next_id = 1
        deps.publish_view = self._publish_view
        deps.renetwork = self.renetwork
        if deps.hostnet is not None:
            deps.hostnet.lease_lookup = self.lease_for_mac

    def _publish_view(self, name: str, view: dict[str, Any] | None) -> None:
        if view is None:
            self.views.pop(name, None)
        else:
            self.views[name] = view

    # -- recovery -------------------------------------------------------------------------
    async def on_start(self) -> None:
        store, events = self.deps.store, self.deps.events
        result = await trio.to_thread.run_sync(store.load_all, "vms", "*/state.json", VM_CODEC)
        for item in result.quarantined:
            events.publish("SNAPSHOT_QUARANTINED", item.relpath, message=item.reason)
        records: list[VMRecord] = []
        for relpath, doc in result.documents.items():
            try:
                records.append(record_from_doc(doc))
            except Exception as exc:  # a structurally wrong record must not stop the daemon
                await trio.to_thread.run_sync(store.quarantine, relpath, repr(exc))
                events.publish("SNAPSHOT_QUARANTINED", relpath, message=repr(exc))
        conflicts = self.ipam.rebuild(
            (r.name, r.ip_address or None, r.vsock_cid or None) for r in records)
        for conflict in conflicts:
            events.publish("IPAM_CONFLICT", conflict.vm_name,
                           message=f"{conflict.field} {conflict.value}: {conflict.reason}")
        by_name = {r.name: r for r in records}
        # Ids are never reused, even after the newest VM was destroyed: clients (and the
        # chaos harness) key restart counters and caches by id.
        meta = await trio.to_thread.run_sync(store.read, "vms.json", IDS_CODEC) or {}
        self.next_id = max([r.id for r in records] + [int(meta.get("last_id", 0))]) + 1
        await self._sweep_processes(by_name)
        await self._sweep_taps(by_name)
        await self._recover_vfio(records)
        for record in records:
            if record.name in self.supervisor:
                # This manager restarted while the VM supervisor kept running: the VM's
                # actor (and its VMM) live on; take over its view instead of a new actor.
                self.names.add(record.name)
                with contextlib.suppress(VolantError):
                    view = await self.supervisor.ref(record.name).call(GetView(), timeout=10)
                    self.views[record.name] = view
                continue
            if record.status is VMStatus.DESTROYING:
                await self._finish_destroy(record.name)
                continue
            self.names.add(record.name)
            await self._start_actor(record.name)

    async def _sweep_processes(self, records: dict[str, VMRecord]) -> None:
        marked = await trio.to_thread.run_sync(
            find_marked_processes, self.deps.lifecycle.instance_id)
        for proc in marked:
            record = records.get(proc.vm_name)
            if record is not None and record.vmm is not None and (
                    record.status is not VMStatus.DESTROYING) and (
                    record.vmm.pid, record.vmm.start_time) == (proc.pid, proc.start_time):
                continue  # the VM actor adopts it
            if read_start_time(proc.pid) != proc.start_time:
                continue  # gone or reused meanwhile
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.deps.events.publish(
                "ORPHAN_VMM_KILLED", proc.vm_name, pid=proc.pid,
                message="vmm carrying our marker with no matching record was killed")

    async def _recover_vfio(self, records: list[VMRecord]) -> None:
        """Rebuild device ownership; give back devices no live record holds, from the
        records and the VFIO ledger (before any binding actor starts, so nothing races
        with it; a restarted manager holds the ledger's lock instead)."""
        deps = self.deps
        ownership = deps.vfio_ownership
        ledger = ownership.ledger
        if ledger is None:  # first start of this daemon: open the ledger
            ledger = VfioLedger(deps.store)
            problem = await trio.to_thread.run_sync(ledger.load)
            ownership.ledger = ledger
            if problem is not None:
                deps.events.publish(
                    "SNAPSHOT_QUARANTINED", problem.relpath,
                    message=f"{problem.reason} (vfio devices are recovered from the vm "
                            "records alone)")
        recorded = {r.name: dict(r.vfio_originals) for r in records if r.vfio_originals}
        if not recorded and not ledger.entries():
            return
        live = {r.name for r in records if r.status is not VMStatus.DESTROYING}
        async with ledger.lock:
            result = await trio.to_thread.run_sync(recover_vfio, deps.vfio_manager(),
                                                   ownership, recorded, live)
        for vm, address, message in result.mismatches:
            deps.events.publish("VFIO_LEDGER_MISMATCH", vm, pci_address=address,
                                message=message)
        for vm, address in result.released:
            deps.events.publish("VFIO_RELEASED", vm, pci_address=address,
                                message=f"{address} given back at startup: its vm is gone")
        for vm, address, error in result.failed:
            deps.events.publish("VFIO_RELEASE_FAILED", vm, pci_address=address, message=error)
        for address, kept, refused in result.conflicts:
            deps.events.publish("VFIO_CONFLICT", refused, pci_address=address,
                                message=f"{address} is recorded for {kept} too; {kept} keeps it")
        if result.ledger_error:
            deps.events.publish("VFIO_LEDGER_WRITE_FAILED", ledger.relpath,
                                message=result.ledger_error)

    async def _sweep_taps(self, records: dict[str, VMRecord]) -> None:
        hostnet = self.deps.hostnet
        if hostnet is None or not hostnet.enabled:
            return
        owned = [r.tap for r in records.values() if r.tap]
        removed = await trio.to_thread.run_sync(
            links.sweep_orphan_taps, owned, is_our_tap, hostnet.netns)
        for name in removed:
            self.deps.events.publish("ORPHAN_TAP_DELETED", name,
                                     message="tap with our prefix owned by no VM was deleted")

    # -- children ------------------------------------------------------------------------
    def _load_record(self, name: str) -> VMRecord:
        doc = self.deps.store.read(f"vms/{name}/state.json", VM_CODEC)
        if doc is None:
            raise NotFoundError(f"vm {name} not found")
        return record_from_doc(doc)

    async def _start_actor(self, name: str) -> None:
        deps = self.deps
        spec = ChildSpec(name, lambda: VMActor(self._load_record(name), deps),
                         Restart.TRANSIENT, shutdown_timeout=deps.timeouts.total + 5)
        await self.supervisor.start_child(spec)

    def vm_ref(self, name: str) -> Any:
        if name not in self.names or name in self.destroying or name not in self.supervisor:
            raise NotFoundError(f"vm {name} not found")
        return self.supervisor.ref(name)

    # -- messages ------------------------------------------------------------------------
    async def handle(self, msg: Any) -> Any:
        match msg:
            case CreateVM():
                return await self._create(msg)
            case DestroyVM(name):
                return self._begin_destroy(name)
            case VMRef(name):
                return self.vm_ref(name)
        raise TypeError(f"unknown message {msg!r}")

    async def _create(self, msg: CreateVM) -> dict[str, Any]:
        res = msg.resolved
        req = res.request
        name = req.name
        if name in self.names:
            raise ConflictError(f"vm {name} already exists", name=name)
        addresses, allowlist = vfio_request(res.config)
        if addresses:  # a device that cannot be assigned is the caller's 4xx, not a crash loop
            await trio.to_thread.run_sync(check_assignment, self.deps.vfio_manager(),
                                          self.deps.vfio_ownership, name, addresses, allowlist)
            if name in self.names:  # created while we were reading sysfs
                raise ConflictError(f"vm {name} already exists", name=name)
        mode = res.network_mode
        if mode is NetworkMode.VSOCK:
            vsock_unavailable(self.deps.launcher)
        ip = str(self.ipam.allocate_ip(name)) if mode.needs_ip else ""
        try:
            cid = self.ipam.allocate_cid(name)
            record = self._new_record(msg, ip, cid)
            self.names.add(name)
            try:
                await trio.to_thread.run_sync(self._persist_new, record, res)
            except BaseException:
                self.names.discard(name)
                raise
        except BaseException:
            self.ipam.release(name)
            raise
        self.next_id += 1
        self.deps.events.publish("VM_CREATED", name, record.status.value,
                                 ip_address=ip or None, mac_address=record.mac_address,
                                 message="vm record created")
        await self._start_actor(name)
        return self.views.get(name) or {}

    def _new_record(self, msg: CreateVM, ip: str, cid: int) -> VMRecord:
        res = msg.resolved
        cfg = self.deps.cfg
        name = res.request.name
        mode = res.network_mode
        fields = launch_fields(cfg, name, res.config, mode=mode, ip=ip, rootfs=bool(msg.rootfs),
                               policy=res.request.restart_policy)
        disks_dir = self.deps.store.path_of(f"vms/{name}") / "disks"
        now = utc_now()
        return VMRecord(
            id=self.next_id, name=name, plugin=res.manifest.name,
            status=VMStatus.PENDING, desired="running", ip_address=ip,
            mac_address=derive_mac(name, ip or None),
            tap=tap_name(name) if mode.needs_tap else "", vsock_cid=cid,
            kernel=str(cfg.kernel_vmlinux),
            initramfs=msg.initramfs, root_disk=str(disks_dir / "root.img") if msg.rootfs else "",
            root_disk_source=msg.rootfs, extra_disks=(), deployment=msg.deployment,
            config_version=1, created_at=now, updated_at=now, **fields,
        )

    def _persist_new(self, record: VMRecord, res: Resolved) -> None:
        store = self.deps.store
        try:
            ConfigStore(store, record.name).create(res.config, now=record.created_at)
            store.write(f"vms/{record.name}/state.json", VM_CODEC, record_to_doc(record))
        except BaseException:
            store.delete_tree(f"vms/{record.name}")
            raise

    def _begin_destroy(self, name: str) -> trio.Event:
        """Start destroying ``name`` in the background; the returned event fires when done."""
        if name not in self.names:
            raise NotFoundError(f"vm {name} not found")
        if name in self.destroying:
            raise ConflictError(f"vm {name} is already being destroyed")
        self.destroying.add(name)
        done = trio.Event()
        self.nursery.start_soon(self._destroy, name, done)
        return done

    async def _destroy(self, name: str, done: trio.Event) -> None:
        try:
            try:
                await self.supervisor.ref(name).call(Destroy(), timeout=300)
            except Exception as exc:
                log.warning("vm actor destroy failed; cleaning up directly", vm=name,
                            error=repr(exc))
                if name in self.supervisor:
                    await self.supervisor.terminate_child(name)
                await self._finish_destroy(name)
            self.ipam.release(name)
            self.names.discard(name)
            self.views.pop(name, None)
            # Only a destroy can make the highest id disappear from the records; remember
            # it then (not on every create) so ids are never handed out twice.
            await trio.to_thread.run_sync(self.deps.store.write, "vms.json", IDS_CODEC,
                                          {"last_id": self.next_id - 1})
        finally:
            self.destroying.discard(name)
            done.set()

    async def _finish_destroy(self, name: str) -> None:
        """Destroy without a VM actor (recovery of an interrupted destroy)."""
        await self._release_recorded_devices(name)
        run_dir = vm_run_dir(self.deps.cfg, name)
        await trio.to_thread.run_sync(lambda: shutil.rmtree(run_dir, ignore_errors=True))
        await trio.to_thread.run_sync(self.deps.store.delete_tree, f"vms/{name}")
        self.ipam.release(name)
        self.deps.events.publish("VM_DELETED", name, VMStatus.STOPPED.value,
                                 message="vm deleted")

    async def _release_recorded_devices(self, name: str) -> None:
        """Give back devices a VM still holds (its actor could not do it): those in its
        record, if readable, and those the VFIO ledger has for it."""
        deps = self.deps
        devices: dict[str, str | None] = {}
        ledger = deps.vfio_ownership.ledger
        if ledger is not None:
            devices.update({address: entry.original_driver
                            for address, entry in ledger.entries().items() if entry.vm == name})
        try:
            record = await trio.to_thread.run_sync(self._load_record, name)
        except Exception:
            record = None  # no readable record: the ledger's entries are all we know
        if record is not None:
            devices.update(record.vfio_originals)  # the record wins where both know one
        for address, original in sorted(devices.items()):
            owner = deps.vfio_ownership.owner(address)
            if owner is not None and owner != name:
                continue
            try:
                await trio.to_thread.run_sync(deps.vfio_manager().release, address, original)
            except VolantError as exc:
                log.warning("vfio release failed", vm=name, pci_address=address,
                            error=exc.message)
                continue
            deps.vfio_ownership.release(address, name)
            if ledger is not None:
                try:
                    await ledger.remove(address, name)
                except VolantError as exc:  # released; the next startup drops the entry
                    log.warning("vfio ledger entry not removed", vm=name,
                                pci_address=address, error=exc.message)
            deps.events.publish("VFIO_RELEASED", name, pci_address=address,
                                message=f"{address} returned to {original or 'no driver'}")

    def renetwork(self, name: str, mode: NetworkMode) -> str:
        """The VM's address for ``mode`` (called by its actor at launch after a mode change).

        Synchronous on purpose: IPAM is only used from the trio thread, so this is atomic.
        A mode without an address releases the old one; one with keeps or allocates.
        """
        if not mode.needs_ip:
            self.ipam.release_ip(name)
            return ""
        current = self.ipam.ip_of(name)
        return str(current if current is not None else self.ipam.allocate_ip(name))

    # -- reads (plain methods, same trio thread) -----------------------------------------
    def get_view(self, name: str) -> dict[str, Any]:
        view = self.views.get(name)
        if view is None or name not in self.names:
            raise NotFoundError(f"vm {name} not found")
        return view

    def list_views(self) -> list[dict[str, Any]]:
        return list(self.views.values())

    def lease_for_mac(self, mac: str) -> dhcp.Lease | None:
        """The DHCP answer for a dhcp-mode VM: its IPAM address, so it is stable."""
        for view in self.views.values():
            if view["mac_address"] == mac and view["network_mode"] == "dhcp":
                ip = self.ipam.ip_of(view["name"])
                return dhcp.Lease(ip=ip, hostname=view["name"]) if ip is not None else None
        return None

    def counts_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for view in self.views.values():
            counts[view["status"]] = counts.get(view["status"], 0) + 1
        return counts


def vsock_unavailable(launcher: Any) -> None:
    """Refuse vsock mode up front where the VMM cannot provide it (not a crash loop later).

    Cloud Hypervisor does hybrid vsock over a Unix socket; QEMU needs the host's
    /dev/vhost-vsock; the hollow stand-in pretends.
    """
    host = getattr(launcher, "host", None)
    if getattr(launcher, "kind", "") == "qemu" and host is not None and not host.vhost_vsock:
        raise RuntimeUnsupported(
            "network mode vsock needs /dev/vhost-vsock for QEMU (modprobe vhost_vsock) "
            "or Cloud Hypervisor; use bridged or dhcp on this host", field="network.mode")


def vm_supervisor() -> DynamicSupervisor:
    return DynamicSupervisor("vms", intensity=20, period=10.0,
                             backoff=Backoff(initial=0.1, maximum=5.0))


__all__ = ["CreateVM", "DestroyVM", "VMManager", "VMRef", "vm_supervisor"]
