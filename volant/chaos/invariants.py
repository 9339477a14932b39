"""Invariants checked after each fault (once volantd answers again) and at the end.

volantd is eventually consistent for a moment after a fault (a crashed VMM is being
restarted, a repaired tap re-enslaved), so each check that compares the API with the
host is *settled*: it is re-measured every 0.25 s, and only a problem that is still
there after ``settle`` seconds is a violation. Honest states of a VM record:

- ``running`` (and ``stopping``): ``pid`` is alive and carries the marker
  ``VOLANT_VMM=<instance>:<vm name>``;
- ``crashed``, ``stopped``, ``failed``: no live process carries the VM's marker;
- ``pending``, ``starting``, ``destroying``: transient, anything goes, but a VM may not
  sit in one of them for more than ``STUCK_AFTER`` seconds.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from volant.chaos.context import ChaosContext
from volant.network import links
from volant.network.tapname import is_our_tap
from volant.runtime.base import find_marked_processes, read_marker

LIVE = {"running", "stopping"}
DOWN = {"crashed", "stopped", "failed"}
TRANSIENT = {"pending", "starting", "destroying"}
STUCK_AFTER = 90.0
STATE_FILE_GLOBS = ("vms/*/state.json", "plugins/*.json", "deployments/*.toml")
#: ``<timestamp>-<flattened relpath>[-<n>]`` as the store names quarantined files.
_QUARANTINED = re.compile(
    r"^\d{8}T\d{6}\.\d{6}Z-(vms__.+__state\.json|plugins__.+\.json|deployments__.+\.toml)"
    r"(?:-\d+)?$")


def parse_state_file(path: Path) -> str | None:
    """None if ``path`` parses (JSON or TOML by suffix) and has ``schema_version``, else why."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None  # replaced or quarantined between listing and reading
    try:
        doc: Any = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"does not parse: {exc}"
    if not isinstance(doc, dict):
        return "is not a table/object"
    if "schema_version" not in doc:
        return "has no schema_version"
    return None


def state_file_problems(state_dir: Path) -> list[str]:
    problems = []
    for pattern in STATE_FILE_GLOBS:
        for path in sorted(state_dir.glob(pattern)):
            why = parse_state_file(path)
            if why is not None:
                problems.append(f"{path.relative_to(state_dir)} {why}")
    return problems


def quarantined_state_files(state_dir: Path) -> Counter[str]:
    """Flattened relpaths (``vms__web__state.json``) of the state files in ``quarantine/``."""
    found: Counter[str] = Counter()
    quarantine = state_dir / "quarantine"
    if not quarantine.is_dir():
        return found
    for path in quarantine.iterdir():
        match = _QUARANTINED.match(path.name)
        if match and not path.name.endswith(".reason"):
            found[match.group(1)] += 1
    return found


def flat_relpath(relpath: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", relpath.replace("/", "__"))


@attrs.define
class Invariants:
    ctx: ChaosContext
    settle: float = 8.0
    #: Highest restart_count seen per VM id (a destroyed-and-recreated VM has a new id).
    restart_counts: dict[str, int] = attrs.field(factory=dict)
    #: (name, created_at) first seen for each VM id, to notice an id given to a second VM.
    id_owners: dict[str, tuple[str, str]] = attrs.field(factory=dict)
    #: First time each (VM id, transient status) was seen, for the stuck check.
    transient_since: dict[tuple[str, str], float] = attrs.field(factory=dict)

    async def vms(self) -> list[dict[str, Any]] | None:
        found = await self.ctx.get_json("/api/v1/vms")
        return found if isinstance(found, list) else None

    async def check_all(self) -> None:
        """Run every invariant once (settled); record checks and violations."""
        if not await self.ctx.wait_healthy():
            self.ctx.report.violation("daemon_answers", "volantd did not answer /healthz in 45 s")
            return
        vms = await self.vms()
        if vms is None:
            self.ctx.report.violation("daemon_answers", "GET /api/v1/vms failed")
            return
        self._restart_counters(vms)
        self._stuck(vms)
        await self._settled("ips_unique_in_subnet", self._ips)
        if self.ctx.target.controllable:
            await self._settled("vm_records_match_vmms", self._records_match_processes)
            await self._settled("no_unrecorded_vmm", self._unrecorded_processes)
            await self._settled("no_tap_without_vm", self._orphan_taps)
            await self._settled("state_files_parse", self._state_files)
            await self._quarantines()
            await self._qemu_adoption()

    async def _settled(self, name: str,
                       measure: Callable[[list[dict[str, Any]]], Awaitable[list[str]]]) -> None:
        deadline = time.monotonic() + self.settle
        problems: list[str] = []
        while True:
            vms = await self.vms()
            if vms is None:
                problems = ["GET /api/v1/vms failed"]
            else:
                problems = await measure(vms)
            if not problems or time.monotonic() >= deadline:
                break
            await trio.sleep(0.25)
        self.ctx.report.checked(name)
        for problem in problems:
            self.ctx.report.violation(name, problem)

    # -- API-only invariants -------------------------------------------------------------
    def _restart_counters(self, vms: list[dict[str, Any]]) -> None:
        for vm in vms:
            key, count = self._identity(vm), int(vm.get("restart_count") or 0)
            before = self.restart_counts.get(key)
            if before is not None and count < before:
                self.ctx.report.violation(
                    "restart_count_monotonic",
                    f"vm {vm['name']} ({key}) restart_count went from {before} to {count}")
            self.restart_counts[key] = max(count, before or 0)
        self.ctx.report.checked("restart_count_monotonic")

    def _identity(self, vm: dict[str, Any]) -> str:
        """A VM's identity: its id plus its creation time (volantd may reuse an id, see docs).

        volantd numbers VMs ``max(existing) + 1`` at startup, so when the VM with the highest
        id is destroyed (or quarantined) and volantd restarts, the next VM gets the same id.
        That is reported as a warning, and counters are kept per (id, created_at).
        """
        vm_id = str(vm.get("id") or vm["name"])
        owner = (str(vm["name"]), str(vm.get("created_at") or ""))
        first = self.id_owners.setdefault(vm_id, owner)
        if first != owner:
            self.ctx.report.warn(
                f"vm id {vm_id} reused: first {first[0]} created {first[1]}, now {owner[0]} "
                f"created {owner[1]}")
            self.id_owners[vm_id] = owner
        return f"{vm_id}@{owner[1]}"

    def _stuck(self, vms: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        current = set()
        for vm in vms:
            if vm["status"] not in TRANSIENT:
                continue
            key = (f"{vm.get('id') or vm['name']}@{vm.get('created_at')}", str(vm["status"]))
            current.add(key)
            since = self.transient_since.setdefault(key, now)
            if now - since > STUCK_AFTER:
                self.ctx.report.violation(
                    "no_vm_stuck_transient",
                    f"vm {vm['name']} has been {vm['status']} for {now - since:.0f}s")
                self.transient_since[key] = now  # report once per STUCK_AFTER
        for key in list(self.transient_since):
            if key not in current:
                del self.transient_since[key]
        self.ctx.report.checked("no_vm_stuck_transient")

    async def _ips(self, vms: list[dict[str, Any]]) -> list[str]:
        problems = []
        owners: dict[str, str] = {}
        subnet = ipaddress.ip_network(self.ctx.target.subnet) if self.ctx.target.subnet else None
        for vm in vms:
            ip = vm.get("ip_address")
            if not ip:
                continue
            if ip in owners:
                problems.append(f"ip {ip} held by both {owners[ip]} and {vm['name']}")
            owners[ip] = vm["name"]
            if subnet is not None:
                addr = ipaddress.ip_address(ip)
                reserved = {subnet.network_address, subnet.broadcast_address,
                            ipaddress.ip_address(self.ctx.target.host_ip or "0.0.0.0")}
                if addr not in subnet or addr in reserved:
                    problems.append(f"vm {vm['name']} has ip {ip} outside the usable {subnet}")
        return problems

    # -- host-side invariants (own target) -------------------------------------------------
    async def _records_match_processes(self, vms: list[dict[str, Any]]) -> list[str]:
        instance = self.ctx.target.instance_id
        assert instance is not None
        marked = await trio.to_thread.run_sync(find_marked_processes, instance)
        by_vm: dict[str, list[int]] = {}
        for proc in marked:
            by_vm.setdefault(proc.vm_name, []).append(proc.pid)
        problems = []
        for vm in vms:
            name, status, pid = vm["name"], vm["status"], vm.get("pid")
            expected = f"{instance}:{name}"
            if status in LIVE:
                if not pid:
                    problems.append(f"vm {name} is {status} without a pid")
                elif (marker := read_marker(int(pid))) != expected:
                    problems.append(f"vm {name} is {status} but pid {pid} "
                                    f"{'is gone' if marker is None else f'carries {marker!r}'}")
                extra = [p for p in by_vm.get(name, []) if p != pid]
                if extra:
                    problems.append(f"vm {name} has extra VMM processes {extra}")
            elif status in DOWN and by_vm.get(name):
                problems.append(f"vm {name} is {status} but VMM pids {by_vm[name]} are alive")
        return problems

    async def _qemu_adoption(self) -> None:
        """After a volantd restart, the QEMU VMM that outlived it was adopted (same pid)."""
        qemu = self.ctx.qemu
        if qemu is None or qemu.expected is None:
            return
        before = len(self.ctx.report.violations)

        async def measure(_vms: list[dict[str, Any]]) -> list[str]:
            return await qemu.adoption_problems(self.ctx)

        await self._settled("qemu_vm_adopted", measure)
        qemu.adoption_judged(ok=len(self.ctx.report.violations) == before)

    async def _unrecorded_processes(self, vms: list[dict[str, Any]]) -> list[str]:
        instance = self.ctx.target.instance_id
        assert instance is not None
        names = {vm["name"] for vm in vms}
        marked = await trio.to_thread.run_sync(find_marked_processes, instance)
        return [f"VMM pid {p.pid} carries the marker of {p.vm_name!r}, which has no record"
                for p in marked if p.vm_name not in names]

    async def _orphan_taps(self, vms: list[dict[str, Any]]) -> list[str]:
        owned = {vm.get("tap") for vm in vms if vm.get("tap")}
        present = await trio.to_thread.run_sync(links.list_links, "", self.ctx.target.netns)
        return [f"tap {name} exists but no VM owns it" for name in present
                if is_our_tap(name) and name not in owned]

    async def _state_files(self, _vms: list[dict[str, Any]]) -> list[str]:
        state_dir = self.ctx.target.state_dir
        assert state_dir is not None
        return await trio.to_thread.run_sync(state_file_problems, state_dir)

    async def _quarantines(self) -> None:
        """Every quarantined state file has its event; every file we corrupted is handled."""
        page = await self.ctx.get_json("/api/v1/events/vms",
                                       params={"type": "SNAPSHOT_QUARANTINED", "limit": 1000},
                                       headers={"Accept": "application/json"})
        if not isinstance(page, dict):
            return
        names = [str(e.get("name")) for e in page["events"]]
        announced = set(names)
        state_dir = self.ctx.target.state_dir
        assert state_dir is not None
        self._quarantine_announced(state_dir, names)
        for relpath in list(self.ctx.corrupted):
            path = state_dir / relpath
            valid = path.exists() and parse_state_file(path) is None
            if relpath in announced or valid:
                self.ctx.corrupted.remove(relpath)
                continue
            if path.exists():
                self.ctx.report.violation(
                    "corrupt_file_quarantined",
                    f"{relpath} was corrupted, is still unreadable and no SNAPSHOT_QUARANTINED "
                    "event names it")
                self.ctx.corrupted.remove(relpath)
            else:
                self.ctx.report.violation(
                    "corrupt_file_quarantined",
                    f"{relpath} was corrupted and disappeared without a SNAPSHOT_QUARANTINED "
                    "event")
                self.ctx.corrupted.remove(relpath)
        self.ctx.report.checked("corrupt_file_quarantined")

    def _quarantine_announced(self, state_dir: Path, announced: list[str]) -> None:
        events = Counter(flat_relpath(name) for name in announced)
        for flat, count in quarantined_state_files(state_dir).items():
            if count > events[flat]:
                self.ctx.report.violation(
                    "quarantine_announced",
                    f"{count} quarantined copies of {flat} but {events[flat]} "
                    "SNAPSHOT_QUARANTINED events")
        self.ctx.report.checked("quarantine_announced")
