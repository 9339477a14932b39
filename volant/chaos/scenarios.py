"""A chaos run: set up a population, inject faults on a seeded schedule, check, converge.

Schedule: volantd is killed at intervals drawn uniformly from 1.5-7.5 s (as Nomad's
client-state test does); between two kills one other fault from the enabled scenarios
is injected at a random moment. After every kill (or every window, without kills) the
invariants are checked once volantd answers. After ``duration`` the faults stop and the
run waits for the population to converge, then checks everything one last time.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path
from typing import Any

import trio

from volant.chaos.context import CRASHLOOP_DEPLOYMENT, PLUGIN, STEADY_DEPLOYMENT, ChaosContext
from volant.chaos.faults import BETWEEN_KILLS, CorruptStateFile, Fault, KillDaemon, KillQemuVMM
from volant.chaos.invariants import Invariants
from volant.chaos.qemu_vm import AGENT_DEADLINE, QemuVM
from volant.chaos.report import Report
from volant.chaos.sse import SSEFollower, compare_with_journal
from volant.chaos.target import Target

KILL_INTERVAL = (1.5, 7.5)
CORRUPT_PROBABILITY = 0.15
CONVERGE_DEADLINE = 120.0
STANDALONE_POLICY = {"name": "always", "max_retries": 1000}

#: Every scenario name; "volantd-kill", "state-corrupt", "vm-churn", "crashloop" and
#: "qemu-vmm-kill" (only with a QEMU VM) are handled here, the rest are the between-kill
#: faults of faults.py.
SCENARIOS = ("volantd-kill", "state-corrupt", *BETWEEN_KILLS, "vm-churn", "crashloop",
             "qemu-vmm-kill")
API_ONLY = ("api-flood", "sse-stall", "vm-churn")


class VMChurn(Fault):
    """An operator creating then destroying a scratch VM (exercises destroy's cleanup)."""

    kind = "vm_churn"
    needs_host = False
    description = "create a scratch VM, wait until it runs, destroy it"
    def __init__(self, ctx: ChaosContext) -> None:
        super().__init__(ctx)
        self.counter = 0

    async def inject(self) -> None:
        self.counter += 1
        name = f"churn-{self.counter}"
        created = await self.ctx.api("POST", "/api/v1/vms", params={"wait": "running",
                                                                    "timeout": "30"},
                                     json={"name": name, "plugin": PLUGIN,
                                           "restart_policy": {"name": "no"}}, timeout=40)
        deleted = await self.ctx.api("DELETE", f"/api/v1/vms/{name}", timeout=40)
        self.ctx.report.fault(self.kind, name,
                              created=None if created is None else created.status_code,
                              deleted=None if deleted is None else deleted.status_code)


def plugin_manifest(media: Path) -> dict[str, Any]:
    media.write_bytes(b"chaos: the hollow VMM never reads this initramfs\n" * 64)
    digest = hashlib.sha256(media.read_bytes()).hexdigest()
    return {
        "schema_version": "1", "name": PLUGIN, "version": "1.0.0", "runtime": PLUGIN,
        "initramfs": {"url": str(media), "checksum": f"sha256:{digest}"},
        "resources": {"cpu_cores": 1, "memory_mb": 64},
        "workload": {"type": "http", "base_url": "http://127.0.0.1:8000",
                     "entrypoint": ["/bin/true"]},
        "network": {"mode": "bridged"},
    }


class ChaosRun:
    def __init__(self, target: Target, *, seed: int, duration: float, scenarios: list[str],
                 vms: int, media_dir: Path, settle: float = 8.0,
                 converge_deadline: float = CONVERGE_DEADLINE,
                 corrupt_probability: float = CORRUPT_PROBABILITY,
                 qemu: QemuVM | None = None) -> None:
        self.target = target
        self.scenarios = [s for s in scenarios
                          if (target.controllable or s in API_ONLY or s == "crashloop")
                          and (qemu is not None or s != "qemu-vmm-kill")]
        self.report = Report(seed=seed, duration=duration, scenarios=self.scenarios,
                             target="own" if target.controllable else "url",
                             world=target.describe())
        self.ctx = ChaosContext(target=target, report=self.report, rng=random.Random(seed),
                                qemu=qemu)
        self.invariants = Invariants(self.ctx, settle=settle)
        self.follower = SSEFollower(self.ctx)
        self.duration = duration
        self.vm_count = vms
        self.media_dir = media_dir
        self.converge_deadline = converge_deadline
        self.corrupt_probability = corrupt_probability
        self.installed_plugins: list[str] = []

    # -- population ------------------------------------------------------------------------
    async def setup(self) -> None:
        self.ctx.plugin_manifest = plugin_manifest(self.media_dir / "chaos-initramfs.img")
        await self._ensure_plugin(self.ctx.plugin_manifest)
        self.ctx.vm_names = [f"chaos-{i}" for i in range(1, self.vm_count + 1)]
        qemu = self.ctx.qemu
        if qemu is not None:
            # First, so the guest boots (10-30 s under TCG) while the rest is set up.
            await self._ensure_plugin(qemu.manifest)
            await self._create_vm(qemu.name, wait=False)
        for name in self.ctx.vm_names:
            await self._create_vm(name, wait=True)
        if qemu is not None:
            self.ctx.vm_names.append(qemu.name)
        self.ctx.deployments[STEADY_DEPLOYMENT] = {
            "name": STEADY_DEPLOYMENT, "replicas": 2, "min_ready_seconds": 0.5,
            "config": {"plugin": PLUGIN, "restart_policy": STANDALONE_POLICY}}
        if "crashloop" in self.scenarios:
            self.ctx.deployments[CRASHLOOP_DEPLOYMENT] = {
                "name": CRASHLOOP_DEPLOYMENT, "replicas": 1, "min_ready_seconds": 0.5,
                "config": {"plugin": PLUGIN, "kernel_cmdline": "hollow.crash_after=1",
                           "restart_policy": {"name": "always", "max_retries": 3}}}
        for body in self.ctx.deployments.values():
            response = await self.ctx.api("POST", "/api/v1/deployments", json=body)
            if response is None or response.status_code not in (201, 409):
                raise RuntimeError(f"cannot create deployment {body['name']}: "
                                   f"{None if response is None else response.text}")
        try:
            await self._converge(self.converge_deadline, record=False)
            if (qemu is not None
                    and await qemu.wait_agent_healthy(self.ctx, AGENT_DEADLINE) is None):
                raise RuntimeError(f"the QEMU VM's agent never answered healthy in "
                                   f"{AGENT_DEADLINE:.0f}s")
        except RuntimeError as exc:
            if qemu is None:
                raise
            raise RuntimeError(f"{exc}; {await qemu.diagnose(self.ctx)}") from None

    async def _ensure_plugin(self, manifest: dict[str, Any]) -> None:
        name = manifest["name"]
        response = await self.ctx.api("GET", f"/api/v1/plugins/{name}")
        if response is not None and response.status_code == 200:
            return
        if name not in self.installed_plugins:
            self.installed_plugins.append(name)
        response = await self.ctx.api("POST", "/api/v1/plugins", json=manifest)
        if response is None or response.status_code not in (201, 409):
            raise RuntimeError(f"cannot install the {name} plugin: "
                               f"{None if response is None else response.text}")

    def _plugin_of(self, vm_name: str) -> str:
        qemu = self.ctx.qemu
        return qemu.plugin if qemu is not None and vm_name == qemu.name else PLUGIN

    async def _create_vm(self, name: str, wait: bool) -> None:
        params = {"wait": "running", "timeout": "60"} if wait else {}
        response = await self.ctx.api("POST", "/api/v1/vms", params=params, timeout=70,
                                      json={"name": name, "plugin": self._plugin_of(name),
                                            "restart_policy": STANDALONE_POLICY})
        if response is None or response.status_code not in (201, 409):
            raise RuntimeError(f"cannot create vm {name}: "
                               f"{None if response is None else response.text}")

    async def repair(self) -> None:
        """What an operator does after a quarantine: put lost objects back."""
        manifests = [self.ctx.plugin_manifest]
        if self.ctx.qemu is not None:
            manifests.append(self.ctx.qemu.manifest)
        for manifest in manifests:
            response = await self.ctx.api("GET", f"/api/v1/plugins/{manifest['name']}")
            if response is not None and response.status_code == 404:
                self.report.note(f"plugin {manifest['name']} lost to quarantine: re-installing")
                await self._ensure_plugin(manifest)
        vms = await self.ctx.get_json("/api/v1/vms")
        names = {vm["name"] for vm in vms} if isinstance(vms, list) else set()
        for name in self.ctx.vm_names:
            if isinstance(vms, list) and name not in names:
                self.report.note(f"vm {name} lost to quarantine: re-creating")
                await self._create_vm(name, wait=False)
        deployments = await self.ctx.get_json("/api/v1/deployments")
        present = {d["name"] for d in deployments} if isinstance(deployments, list) else None
        for name, body in self.ctx.deployments.items():
            if present is not None and name not in present:
                self.report.note(f"deployment {name} lost to quarantine: re-creating")
                await self.ctx.api("POST", "/api/v1/deployments", json=body)

    async def remove_population(self) -> None:
        """Against someone else's volantd: delete what the run created (own: teardown does)."""
        for name in self.ctx.deployments:
            await self.ctx.api("DELETE", f"/api/v1/deployments/{name}", timeout=120)
        for name in self.ctx.vm_names:
            await self.ctx.api("DELETE", f"/api/v1/vms/{name}", timeout=60)
        for plugin in self.installed_plugins:
            await self.ctx.api("DELETE", f"/api/v1/plugins/{plugin}")

    # -- convergence -----------------------------------------------------------------------
    async def _converge(self, deadline_s: float, record: bool = True) -> None:
        deadline = time.monotonic() + deadline_s
        pending: list[str] = []
        while True:
            pending = await self._not_converged()
            if not pending or time.monotonic() > deadline:
                break
            await trio.sleep(0.5)
        if not record:
            if pending:
                raise RuntimeError(f"setup did not converge: {pending}")
            return
        self.report.checked("converges_after_faults")
        for problem in pending:
            self.report.violation("converges_after_faults", problem)

    async def _not_converged(self) -> list[str]:
        problems = []
        vms = await self.ctx.get_json("/api/v1/vms")
        if not isinstance(vms, list):
            return ["GET /api/v1/vms failed"]
        status = {vm["name"]: vm["status"] for vm in vms}
        for name in self.ctx.vm_names:
            if status.get(name) != "running":
                problems.append(f"vm {name} is {status.get(name, 'missing')}, not running")
        for name in self.ctx.deployments:
            if name == CRASHLOOP_DEPLOYMENT:
                continue
            view = await self.ctx.get_json(f"/api/v1/deployments/{name}")
            if not isinstance(view, dict):
                problems.append(f"deployment {name} is missing")
            elif view["status"] != "ready" or view["ready_replicas"] != view["desired_replicas"]:
                problems.append(f"deployment {name} is {view['status']} with "
                                f"{view['ready_replicas']}/{view['desired_replicas']} ready")
        return problems

    async def _crashloop_is_honest(self) -> None:
        """Sampled over 4 s: a replica crashing every second can never look steadily ready."""
        if CRASHLOOP_DEPLOYMENT not in self.ctx.deployments:
            return
        ready_samples = 0
        replica_states: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        for _ in range(8):
            view = await self.ctx.get_json(f"/api/v1/deployments/{CRASHLOOP_DEPLOYMENT}")
            vms = await self.ctx.get_json("/api/v1/vms")
            if isinstance(view, dict) and view["status"] == "ready":
                ready_samples += 1
            for vm in vms if isinstance(vms, list) else []:
                if vm.get("deployment") == CRASHLOOP_DEPLOYMENT:
                    replica_states.setdefault(vm["name"], set()).add(vm["status"])
                    counts[vm["name"]] = int(vm.get("restart_count") or 0)
            await trio.sleep(0.5)
        self.report.checked("crashloop_is_honest")
        if ready_samples == 8:
            self.report.violation("crashloop_is_honest",
                                  "the crash-looping deployment reported ready in every sample")
        for name, states in replica_states.items():
            honest = states & {"crashed", "failed", "starting", "pending"} or counts[name] > 0
            if not honest:
                self.report.violation(
                    "crashloop_is_honest",
                    f"replica {name} crashes every second yet shows only {sorted(states)} "
                    f"and restart_count {counts[name]}")

    # -- the run ---------------------------------------------------------------------------
    def _between_faults(self) -> list[Fault]:
        chosen: list[Fault] = []
        for name, cls in BETWEEN_KILLS.items():
            if name in self.scenarios and (self.target.controllable or not cls.needs_host):
                chosen.append(cls(self.ctx))
        if "vm-churn" in self.scenarios:
            chosen.append(VMChurn(self.ctx))
        if "qemu-vmm-kill" in self.scenarios and self.ctx.qemu is not None:
            chosen.append(KillQemuVMM(self.ctx))
        return chosen

    async def run(self) -> Report:
        started = time.monotonic()
        await self.setup()
        await self.follower.start_point()
        self.report.started = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.follower.run)
            await self.invariants.check_all()
            await self._fault_loop()
            await self.ctx.wait_healthy()
            self.report.note("faults stopped; waiting for convergence")
            await self._converge(self.converge_deadline)
            await self._qemu_vm_checks()
            await self._crashloop_is_honest()
            await self.invariants.check_all()
            await trio.sleep(0.5)  # the follower catches the last events
            await compare_with_journal(self.ctx, self.follower)
            nursery.cancel_scope.cancel()
        if not self.target.controllable:
            await self.remove_population()
        self.report.elapsed = time.monotonic() - started
        if self.ctx.qemu is not None:
            self.report.qemu_vm = self.ctx.qemu.summary()
        self.report.note(f"sse: {len(self.follower.seen)} events, "
                         f"{self.follower.reconnects} reconnects")
        return self.report

    async def _qemu_vm_checks(self) -> None:
        """The QEMU VM came back from every VMM kill and its agent answers through volantd."""
        qemu = self.ctx.qemu
        if qemu is None:
            return
        view = await self.ctx.get_json(f"/api/v1/vms/{qemu.name}")
        view = view if isinstance(view, dict) else None
        for problem in qemu.restart_problems(view):
            self.report.violation("qemu_vm_restarted", problem)
        for _ in qemu.kills:
            self.report.checked("qemu_vm_restarted")
        health = await qemu.wait_agent_healthy(self.ctx, AGENT_DEADLINE)
        self.report.checked("qemu_agent_healthz")
        if health is None:
            self.report.violation(
                "qemu_agent_healthz",
                f"GET /api/v1/vms/{qemu.name}/agent/healthz never showed a healthy workload in "
                f"{AGENT_DEADLINE:.0f}s (last answer: {qemu.health})")
        else:
            qemu.health = health
        view = await self.ctx.get_json(f"/api/v1/vms/{qemu.name}")
        qemu.final_view = view if isinstance(view, dict) else None

    async def _inject(self, fault: Fault) -> None:
        """Inject one fault; a fault that fails is reported, not a crash of the whole run."""
        try:
            await fault.inject()
        except Exception as exc:
            self.report.violation("fault_injected_cleanly",
                                  f"{fault.kind} raised {type(exc).__name__}: {exc}")

    async def _fault_loop(self) -> None:
        rng = self.ctx.rng
        kills = "volantd-kill" in self.scenarios and self.target.controllable
        corrupt = (CorruptStateFile(self.ctx)
                   if "state-corrupt" in self.scenarios and self.target.controllable else None)
        killer = KillDaemon(self.ctx, corrupt, self.corrupt_probability)
        between = self._between_faults()
        end = time.monotonic() + self.duration
        next_kill = time.monotonic() + rng.uniform(*KILL_INTERVAL)
        while time.monotonic() < end:
            window_end = min(next_kill, end) if kills else min(time.monotonic()
                                                               + rng.uniform(3.0, 8.0), end)
            if between:
                fault = rng.choice(between)
                offset = rng.uniform(0.0, max(0.0, window_end - time.monotonic()) * 0.5)
                await trio.sleep(offset)
                await self._inject(fault)
            await trio.sleep(max(0.0, window_end - time.monotonic()))
            if time.monotonic() >= end:
                break
            if kills:
                killed_at = time.monotonic()
                await self._inject(killer)
                # Intervals run from kill to kill; a slow restart and check eat into the next.
                next_kill = killed_at + rng.uniform(*KILL_INTERVAL)
                if self.ctx.daemon_down:
                    self.report.violation("daemon_restarts", "stopping: volantd is down for good")
                    return
            await self.invariants.check_all()
            await self.repair()
        if corrupt is not None and not kills:
            self.report.note("state-corrupt needs volantd-kill: it only corrupts while down")
