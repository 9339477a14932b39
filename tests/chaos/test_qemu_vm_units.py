"""Fast checks of ``--qemu-vm``'s pieces: the mixed launcher and the QEMU VM's judgement."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from volant.chaos import qemu_vm
from volant.chaos.context import ChaosContext
from volant.chaos.faults import StopContVMM
from volant.chaos.mixed_volantd import MixedLauncher, split_args
from volant.chaos.qemu_vm import QemuVM
from volant.chaos.report import Report
from volant.chaos.target import Target
from volant.network import links
from volant.runtime.base import read_start_time

INSTANCE = "feedc0de"
NAME = "chaos-qemu"


class ApiTarget(Target):
    """A target whose API is a function of the request (no daemon)."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.instance_id = INSTANCE

    def client(self, timeout: float = 10.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url="http://volantd", timeout=timeout,
                                 transport=httpx.MockTransport(self.answer))


def make_ctx(answer: Callable[[httpx.Request], httpx.Response]) -> ChaosContext:
    report = Report(seed=1, duration=1.0, scenarios=[], target="test")
    return ChaosContext(target=ApiTarget(answer), report=report, rng=random.Random(1),
                        qemu=QemuVM(NAME, {"name": "hello"}))


def events_api(before: list[dict[str, Any]], after: list[dict[str, Any]]
               ) -> Callable[[httpx.Request], httpx.Response]:
    """The JSON events page: ``before`` the kill (head 10), ``after`` it (ids above 10)."""
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/events/vms"
        assert request.url.params["name"] == NAME
        page = after if "after" in request.url.params else before
        return httpx.Response(200, json={"events": page, "last_event_id": 10})
    return answer


@pytest.fixture
def marked_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process carrying the QEMU VM's marker (stands in for its VMM)."""
    proc = subprocess.Popen(["sleep", "60"], env={**os.environ,
                                                  "VOLANT_VMM": f"{INSTANCE}:{NAME}"})
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def write_state(state_dir: Path, pid: int, tap: str = "vtchao-aaaaaaaa") -> None:
    start_time = read_start_time(pid)
    assert start_time is not None
    (state_dir / "vms" / NAME).mkdir(parents=True)
    (state_dir / "vms" / NAME / "state.json").write_text(json.dumps({
        "schema_version": 1, "name": NAME, "desired": "running", "tap": tap,
        "vmm": {"pid": pid, "start_time": start_time, "marker": f"{INSTANCE}:{NAME}",
                "kind": "qemu"}}))


async def judge(ctx: ChaosContext, state_dir: Path) -> list[str]:
    """One kill-and-restart as KillDaemon does it, then the adoption check."""
    qemu = ctx.qemu
    assert qemu is not None
    await qemu.before_kill(ctx)
    qemu.after_kill(state_dir)
    qemu.before_restart(None)
    return await qemu.adoption_problems(ctx)


def test_split_args_takes_the_qemu_vms_and_leaves_volantds_own() -> None:
    names, rest = split_args(["--qemu-vm", "a", "--listen", "127.0.0.1:1", "--qemu-vm=b"])
    assert names == frozenset({"a", "b"})
    assert rest == ["--listen", "127.0.0.1:1"]


class FakeLauncher:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: list[tuple[str, str]] = []

    async def launch(self, spec: Any) -> Any:
        self.calls.append(("launch", spec.name))
        return spec.name

    def adopt(self, identity: Any) -> Any:
        self.calls.append(("adopt", identity.marker))
        return identity.marker

    async def request_shutdown(self, handle: Any) -> bool:
        self.calls.append(("shutdown", handle.identity.marker))
        return True

    def cleanup(self, identity: Any) -> None:
        self.calls.append(("cleanup", identity.marker))


class Named:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


async def test_mixed_launcher_runs_only_the_named_vms_on_qemu() -> None:
    qemu, hollow = FakeLauncher("qemu"), FakeLauncher("hollow")
    mixed = MixedLauncher(cast(Any, qemu), cast(Any, hollow), frozenset({NAME}))
    await mixed.launch(cast(Any, Named(name=NAME)))
    await mixed.launch(cast(Any, Named(name="chaos-1")))
    # Adoption, shutdown and cleanup follow the kind the VMM was launched with.
    real, stand_in = Named(kind="qemu", marker="q"), Named(kind="hollow", marker="h")
    mixed.adopt(cast(Any, real))
    mixed.adopt(cast(Any, stand_in))
    await mixed.request_shutdown(cast(Any, Named(identity=stand_in)))
    mixed.cleanup(cast(Any, real))
    assert qemu.calls == [("launch", NAME), ("adopt", "q"), ("cleanup", "q")]
    assert hollow.calls == [("launch", "chaos-1"), ("adopt", "h"), ("shutdown", "h")]
    assert mixed.kind == "qemu"  # volantd waits for the real guest's boot marker


async def test_a_live_qemu_vmm_must_be_adopted_with_its_pid(
        tmp_path: Path, marked_process: subprocess.Popen[bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links, "link_exists", lambda _name, _netns: True)
    pid = marked_process.pid
    write_state(tmp_path, pid)
    adopted = make_ctx(events_api([], [{"id": 11, "type": "VM_ADOPTED", "pid": pid}]))
    assert await judge(adopted, tmp_path) == []
    other = make_ctx(events_api([], [{"id": 11, "type": "VM_ADOPTED", "pid": pid + 1}]))
    [problem] = await judge(other, tmp_path)
    assert f"pid {pid}" in problem and "not adopted (alive now" in problem


async def test_a_qemu_vmm_whose_tap_is_gone_must_be_replaced_not_adopted(
        tmp_path: Path, marked_process: subprocess.Popen[bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links, "link_exists", lambda _name, _netns: False)
    pid = marked_process.pid
    write_state(tmp_path, pid)
    adopted = make_ctx(events_api([], [{"id": 11, "type": "VM_ADOPTED", "pid": pid}]))
    [problem] = await judge(adopted, tmp_path)
    assert "its tap did not" in problem
    ctx = make_ctx(events_api([], [{"id": 11, "type": "VM_NETWORK_REPAIRED", "pid": pid}]))
    qemu = ctx.qemu
    assert qemu is not None
    await qemu.before_kill(ctx)
    qemu.after_kill(tmp_path)
    qemu.before_restart(None)
    marked_process.kill()
    marked_process.wait()
    assert await qemu.adoption_problems(ctx) == []
    qemu.adoption_judged(ok=True)
    assert qemu.replaced == [pid] and qemu.adopted == []


async def test_a_vmm_ending_during_an_announced_restart_may_be_reported_instead(
        tmp_path: Path, marked_process: subprocess.Popen[bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links, "link_exists", lambda _name, _netns: True)
    pid = marked_process.pid
    write_state(tmp_path, pid)
    announced = [{"id": 9, "type": "VM_RUNNING"}, {"id": 10, "type": "VM_NETWORK_REPAIRED"}]
    for before, excused in ((announced, True), (announced[:1], False)):
        ctx = make_ctx(events_api(before, [{"id": 11, "type": "VM_CRASHED", "pid": pid}]))
        qemu = ctx.qemu
        assert qemu is not None
        await qemu.before_kill(ctx)
        qemu.after_kill(tmp_path)
        qemu.before_restart(None)
        assert qemu.expected is not None
        stand_in = subprocess.Popen(["true"])
        stand_in.wait()
        # The recorded process ends between volantd's start and its adoption attempt.
        qemu.expected = qemu_vm.Expectation(stand_in.pid, 1, "x", 10,
                                            qemu.expected.restart_announced, False)
        assert (await qemu.adoption_problems(ctx) == []) is excused


async def test_no_expectation_when_the_state_file_was_corrupted_or_the_vmm_died(
        tmp_path: Path, marked_process: subprocess.Popen[bytes]) -> None:
    write_state(tmp_path, marked_process.pid)
    ctx = make_ctx(events_api([], []))
    qemu = ctx.qemu
    assert qemu is not None
    await qemu.before_kill(ctx)
    qemu.after_kill(tmp_path)
    qemu.corrupted(f"vms/{NAME}/state.json")
    qemu.before_restart(None)
    assert qemu.expected is None
    qemu.after_kill(tmp_path)
    marked_process.kill()
    marked_process.wait()
    qemu.before_restart(None)
    assert qemu.expected is None


def test_a_killed_vmm_must_come_back_with_a_new_pid_and_a_higher_restart_count() -> None:
    qemu = QemuVM(NAME, {"name": "hello"})
    qemu.vmm_killed({"pid": 100, "restart_count": 2, "created_at": "t1"})
    back = {"status": "running", "pid": 200, "restart_count": 3, "created_at": "t1"}
    assert qemu.restart_problems(back) == []
    assert qemu.restart_problems({**back, "created_at": "t2"}) == []  # re-created: new VM
    assert len(qemu.restart_problems({**back, "pid": 100})) == 1
    assert len(qemu.restart_problems({**back, "restart_count": 2})) == 1
    assert len(qemu.restart_problems({**back, "status": "crashed"})) == 1
    assert "is gone" in qemu.restart_problems(None)[0]


async def test_the_qemu_vmm_is_never_stopped_for_more_than_a_second(
        marked_process: subprocess.Popen[bytes]) -> None:
    vm = {"name": NAME, "status": "running", "pid": marked_process.pid}
    ctx = make_ctx(lambda _request: httpx.Response(200, json=[vm]))
    # Seed 1 draws a hold of 0.5 + 2.5 * 0.847 = 2.62 s: capped for the real guest.
    await StopContVMM(ctx).inject()
    [fault] = ctx.report.faults
    assert fault.target == NAME and fault.details["seconds"] == 1.0
    stat = Path(f"/proc/{marked_process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert stat[0] != "T"  # continued again
