"""The one real QEMU VM of a chaos run (``volant-chaos --qemu-vm``).

Its media come from ``volant-image`` (Debian's cloud kernel and the ``hello`` plugin's
initramfs: busybox, python3, kestrel and a tiny HTTP workload), both cached by the image
builder. volantd runs it next to the hollow VMs through ``volant.chaos.mixed_volantd``.

What the run holds it to, on top of the invariants every VM gets:

- ``qemu_vm_adopted``: a QEMU process that is alive when volantd is restarted after a
  kill -9 is adopted, same PID (a ``VM_ADOPTED`` event naming that pid follows the
  restart) -- unless its tap is missing at that moment: the process still holds the
  deleted device, so volantd must replace it instead (``VM_NETWORK_REPAIRED`` naming
  the pid, and the pid gone). One excuse: volantd had already announced a VMM restart
  for this VM (tap lost) when it was killed and the old process ended on its way down
  during the restart; then volantd must report that (``VM_CRASHED``).
- ``qemu_vm_restarted``: after the harness SIGKILLs its VMM, the VM is restarted per its
  policy (``always``): running again, with another pid and a higher ``restart_count``.
- ``qemu_agent_healthz``: at the end, once the faults stopped and the population
  converged, the guest agent answers ``GET /api/v1/vms/<name>/agent/healthz`` through
  volantd with a healthy workload.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from volant.network import links
from volant.runtime.base import read_marker, read_stat

if TYPE_CHECKING:
    from volant.chaos.context import ChaosContext

QEMU_VM = "chaos-qemu"
QEMU_BINARY = "qemu-system-x86_64"
HELLO_FLEDGE = Path(__file__).resolve().parents[2] / "conf" / "plugins" / "hello" / "fledge.toml"
#: Longest SIGSTOP the QEMU VMM gets (a TCG guest frozen for long only tests the guest).
MAX_STOP_SECONDS = 1.0
#: How long the agent may take to answer healthy (boot under TCG: 10-30 s on 2 busy cores).
AGENT_DEADLINE = 90.0
#: The VM's own events that say what volantd was doing with its VMM, newest decides.
LIFECYCLE = ("VM_STARTING", "VM_RUNNING", "VM_ADOPTED", "VM_CRASHED", "VM_STOPPED",
             "VM_FAILED", "VM_NETWORK_REPAIRED")


class MediaError(RuntimeError):
    """The QEMU VM's boot media could not be made (a setup error, not a violation)."""


@attrs.frozen
class QemuMedia:
    vmlinux: Path
    manifest: dict[str, Any]


def prepare_media(out: Path, fledge: Path = HELLO_FLEDGE) -> QemuMedia:
    """Kernel and hello image through volant-image's builder (both cached), into ``out``."""
    from volant.errors import VolantError
    from volant.images import builder, kernel, paths

    if shutil.which(QEMU_BINARY) is None:
        raise MediaError(f"{QEMU_BINARY} is not on PATH (apt-get install qemu-system-x86)")
    if not fledge.is_file():
        raise MediaError(f"the hello plugin's {fledge} is missing (run from the repository)")
    cache = paths.cache_root()
    try:
        artifacts = kernel.ensure_kernel(cache)
        result = builder.build(fledge, out, cache=cache)
    except VolantError as exc:
        raise MediaError(f"volant-image could not build the QEMU VM's media: {exc}") from exc
    manifest: dict[str, Any] = json.loads(result.manifest.read_text())
    return QemuMedia(vmlinux=artifacts.vmlinux, manifest=manifest)


def process_is(pid: int, start_time: int, marker: str) -> bool:
    """True when ``pid`` is still the live process started at ``start_time`` with ``marker``."""
    stat = read_stat(pid)
    return (stat is not None and stat[0] not in ("Z", "X") and stat[1] == start_time
            and read_marker(pid) == marker)


@attrs.frozen
class Expectation:
    """A QEMU VMM that was alive when volantd came back: it must be adopted."""

    pid: int
    start_time: int
    marker: str
    after: int  # the journal's last id before the kill
    restart_announced: bool  # volantd was replacing this VMM (tap lost) when killed
    tap_missing: bool  # its tap did not exist when volantd started again


@attrs.frozen
class KilledVMM:
    pid: int
    restart_count: int
    created_at: str


@attrs.define
class QemuVM:
    name: str
    manifest: dict[str, Any]
    #: Filled between the kill and the restart of volantd.
    head: int | None = None
    restart_announced: bool = False
    recorded: tuple[int, int, str, str] | None = None
    expected: Expectation | None = None
    adopted: list[int] = attrs.field(factory=list)
    replaced: list[int] = attrs.field(factory=list)
    excused: int = 0
    kills: list[KilledVMM] = attrs.field(factory=list)
    health: dict[str, Any] | None = None
    final_view: dict[str, Any] | None = None

    @property
    def plugin(self) -> str:
        return str(self.manifest["name"])

    @property
    def state_relpath(self) -> str:
        return f"vms/{self.name}/state.json"

    # -- around a volantd kill -------------------------------------------------------------
    async def before_kill(self, ctx: ChaosContext) -> None:
        """The journal head and what volantd was last doing with this VM's VMM."""
        self.head, self.restart_announced, self.recorded = None, False, None
        page = await ctx.get_json("/api/v1/events/vms", params={"name": self.name, "limit": 50},
                                  headers={"Accept": "application/json"})
        if not isinstance(page, dict):
            return
        self.head = int(page["last_event_id"])
        lifecycle = [e["type"] for e in page["events"] if e["type"] in LIFECYCLE]
        self.restart_announced = bool(lifecycle) and lifecycle[-1] == "VM_NETWORK_REPAIRED"

    def after_kill(self, state_dir: Path) -> None:
        """Which VMM the dead volantd had recorded for this VM (its state file says)."""
        try:
            doc = json.loads((state_dir / self.state_relpath).read_text())
        except (OSError, ValueError):
            return
        vmm = doc.get("vmm") if isinstance(doc, dict) else None
        if doc.get("desired") == "running" and isinstance(vmm, dict) and vmm.get("kind") == "qemu":
            self.recorded = (int(vmm["pid"]), int(vmm["start_time"]), str(vmm["marker"]),
                             str(doc.get("tap") or ""))

    def corrupted(self, relpath: str) -> None:
        """Its state file was corrupted: the VM will be quarantined, not adopted."""
        if relpath == self.state_relpath:
            self.recorded = None

    def before_restart(self, netns: str | None) -> None:
        """What to expect of the recorded VMM if it is alive the moment volantd starts."""
        self.expected = None
        if self.recorded is None or self.head is None:
            return
        pid, start_time, marker, tap = self.recorded
        if process_is(pid, start_time, marker):
            tap_missing = bool(tap) and not links.link_exists(tap, netns)
            self.expected = Expectation(pid, start_time, marker, self.head,
                                        self.restart_announced, tap_missing)

    async def adoption_problems(self, ctx: ChaosContext) -> list[str]:
        expected = self.expected
        if expected is None:
            return []
        page = await ctx.get_json("/api/v1/events/vms",
                                  params={"name": self.name, "after": expected.after,
                                          "limit": 1000},
                                  headers={"Accept": "application/json"})
        if not isinstance(page, dict):
            return ["could not read the events after the restart"]
        events = page["events"]
        alive = process_is(expected.pid, expected.start_time, expected.marker)
        adopted = any(e["type"] == "VM_ADOPTED" and e.get("pid") == expected.pid
                      for e in events)
        replaced = any(e["type"] == "VM_NETWORK_REPAIRED" and e.get("pid") == expected.pid
                       for e in events)
        types = [f"{e['type']}(pid={e.get('pid')})" for e in events][:12]
        if expected.tap_missing:
            if replaced and not alive:
                return []
            return [f"QEMU VMM pid {expected.pid} of {self.name} outlived volantd but its tap "
                    f"did not: volantd must replace it ({'alive' if alive else 'gone'} now; "
                    f"events since the kill: {types})"]
        if adopted:
            return []
        if (expected.restart_announced and not alive
                and any(e["type"] == "VM_CRASHED" for e in events)):
            return []
        return [f"QEMU VMM pid {expected.pid} of {self.name} was alive when volantd restarted "
                f"but was not adopted ({'alive' if alive else 'gone'} now; events since the "
                f"kill: {types})"]

    def adoption_judged(self, ok: bool) -> None:
        expected, self.expected = self.expected, None
        if expected is None or not ok:
            return
        if expected.tap_missing:
            self.replaced.append(expected.pid)
        elif expected.restart_announced and not process_is(
                expected.pid, expected.start_time, expected.marker):
            self.excused += 1
        else:
            self.adopted.append(expected.pid)

    # -- VMM kills -------------------------------------------------------------------------
    def vmm_killed(self, vm: dict[str, Any]) -> None:
        self.kills.append(KilledVMM(int(vm["pid"]), int(vm.get("restart_count") or 0),
                                    str(vm.get("created_at") or "")))

    def restart_problems(self, view: dict[str, Any] | None) -> list[str]:
        """After every SIGKILL of its VMM, the VM came back per its ``always`` policy."""
        problems = []
        for killed in self.kills:
            if view is None:
                problems.append(f"{self.name} is gone after its VMM pid {killed.pid} was killed")
            elif str(view.get("created_at") or "") != killed.created_at:
                continue  # re-created after a quarantine: a new VM, with its own counter
            elif (view["status"] != "running" or view.get("pid") == killed.pid
                  or int(view.get("restart_count") or 0) <= killed.restart_count):
                problems.append(
                    f"{self.name} after its VMM pid {killed.pid} was killed (restart_count "
                    f"{killed.restart_count}): {view['status']}, pid {view.get('pid')}, "
                    f"restart_count {view.get('restart_count')}")
        return problems

    # -- the guest agent -------------------------------------------------------------------
    async def wait_agent_healthy(self, ctx: ChaosContext, deadline_s: float
                                 ) -> dict[str, Any] | None:
        """Poll the agent's /healthz through volantd until the workload is healthy.

        409 (not running yet) and 502 (agent not reachable yet) are volantd's designed
        answers while the guest boots.
        """
        deadline = time.monotonic() + deadline_s
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            response = await ctx.api("GET", f"/api/v1/vms/{self.name}/agent/healthz",
                                     timeout=15, designed=(502,))
            if response is not None and response.status_code == 200:
                last = response.json()
                if isinstance(last, dict) and (last.get("workload") or {}).get("healthy"):
                    return last
            await trio.sleep(1.0)
        self.health = last
        return None

    async def diagnose(self, ctx: ChaosContext) -> str:
        """Its view and the tail of its console, for a setup error that names the guest."""
        view = await ctx.get_json(f"/api/v1/vms/{self.name}")
        if not isinstance(view, dict):
            return f"{self.name}: no view"
        console = ""
        if view.get("console_log"):
            try:
                console = Path(view["console_log"]).read_text(errors="replace")[-1500:]
            except OSError as exc:
                console = f"(console log unreadable: {exc})"
        return (f"{self.name} is {view.get('status')} (pid {view.get('pid')}, last exit "
                f"{view.get('last_exit')!r}, agent {self.health}); console tail:\n{console}")

    def summary(self) -> dict[str, Any]:
        view = self.final_view or {}
        return {
            "name": self.name, "plugin": self.plugin, "hypervisor": view.get("hypervisor"),
            "status": view.get("status"), "pid": view.get("pid"),
            "restart_count": view.get("restart_count"),
            "adopted_pids": self.adopted, "replaced_pids": self.replaced,
            "adoptions_excused": self.excused,
            "vmm_kills": [attrs.asdict(k) for k in self.kills],
            "agent_healthz": self.health,
        }
