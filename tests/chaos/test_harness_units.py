"""Fast checks of the harness's own judgement: what it calls a violation and what not."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from volant.chaos.context import ChaosContext
from volant.chaos.faults import CorruptStateFile
from volant.chaos.invariants import Invariants, parse_state_file, state_file_problems
from volant.chaos.report import Report
from volant.chaos.sse import SSEFollower, compare_with_journal
from volant.chaos.target import OwnTarget, Target


def make_ctx(target: Target | None = None, seed: int = 1) -> ChaosContext:
    report = Report(seed=seed, duration=1.0, scenarios=[], target="test")
    return ChaosContext(target=target or Target(), report=report, rng=random.Random(seed))


def test_sse_follower_flags_gaps_and_duplicates_but_not_a_clean_sequence() -> None:
    ctx = make_ctx()
    follower = SSEFollower(ctx, first_after=10)
    for event_id in (11, 12, 13):
        follower._accept(event_id, "VM_RUNNING")
    assert ctx.report.violations == []
    follower._accept(15, "VM_RUNNING")
    follower._accept(15, "VM_RUNNING")
    details = [v.detail for v in ctx.report.violations]
    assert details[0].startswith("gap: id 15 after 13")
    assert details[1].startswith("duplicate: id 15 after 15")


async def test_events_streamed_while_the_journal_is_read_are_not_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower keeps receiving during the comparison; only its snapshot is compared."""
    ctx = make_ctx()
    follower = SSEFollower(ctx, first_after=10)
    for event_id in (11, 12, 13):
        follower._accept(event_id, "VM_LOG")

    async def page(_ctx: ChaosContext, path: str, **kwargs: Any) -> Any:
        follower._accept(14, "VM_LOG")  # arrives while the page is being fetched
        after = int(kwargs["params"]["after"])
        ids = [i for i in (11, 12, 13, 14) if i > after]
        return {"events": [{"id": i, "type": "VM_LOG"} for i in ids], "last_event_id": 14}

    monkeypatch.setattr(ChaosContext, "get_json", page)
    assert await compare_with_journal(ctx, follower) == 3
    assert ctx.report.violations == []

    missing = make_ctx()
    lone = SSEFollower(missing, first_after=10)
    for event_id in (11, 12, 13):
        lone._accept(event_id, "VM_LOG")

    async def short_page(_ctx: ChaosContext, path: str, **kwargs: Any) -> Any:
        if int(kwargs["params"]["after"]) >= 11:
            return {"events": [], "last_event_id": 11}  # 12 and 13 are not in the journal
        return {"events": [{"id": 11, "type": "VM_LOG"}], "last_event_id": 11}

    monkeypatch.setattr(ChaosContext, "get_json", short_page)
    await compare_with_journal(missing, lone)
    assert [v.invariant for v in missing.report.violations] == ["sse_matches_journal"]


def test_restart_counters_may_not_go_down_unless_the_vm_is_new() -> None:
    ctx = make_ctx()
    checks = Invariants(ctx)
    checks._restart_counters([{"id": "a", "name": "web", "restart_count": 3}])
    checks._restart_counters([{"id": "b", "name": "web", "restart_count": 0}])  # recreated
    assert ctx.report.violations == []
    checks._restart_counters([{"id": "a", "name": "web", "restart_count": 2}])
    assert [v.invariant for v in ctx.report.violations] == ["restart_count_monotonic"]
    assert "from 3 to 2" in ctx.report.violations[0].detail
    assert ctx.report.warnings == []


def test_an_id_given_to_a_second_vm_is_a_warning_and_its_counter_starts_afresh() -> None:
    ctx = make_ctx()
    checks = Invariants(ctx)
    checks._restart_counters([{"id": 7, "name": "web-1", "created_at": "t1", "restart_count": 2}])
    checks._restart_counters([{"id": 7, "name": "web-1", "created_at": "t2", "restart_count": 0}])
    assert ctx.report.violations == []
    [warning] = ctx.report.warnings
    assert "vm id 7 reused" in warning
    checks._restart_counters([{"id": 7, "name": "web-1", "created_at": "t2", "restart_count": 1}])
    checks._restart_counters([{"id": 7, "name": "web-1", "created_at": "t2", "restart_count": 0}])
    assert [v.invariant for v in ctx.report.violations] == ["restart_count_monotonic"]


async def test_duplicate_and_out_of_subnet_ips_are_problems() -> None:
    target = Target()
    target.subnet, target.host_ip = "10.9.0.0/24", "10.9.0.1"
    checks = Invariants(make_ctx(target))
    fine: list[dict[str, Any]] = [{"name": "a", "ip_address": "10.9.0.2"},
                                  {"name": "b", "ip_address": "10.9.0.3"},
                                  {"name": "c", "ip_address": None}]
    assert await checks._ips(fine) == []
    bad: list[dict[str, Any]] = [{"name": "a", "ip_address": "10.9.0.2"},
                                 {"name": "b", "ip_address": "10.9.0.2"},
                                 {"name": "c", "ip_address": "10.9.0.1"},
                                 {"name": "d", "ip_address": "10.8.0.5"}]
    problems = await checks._ips(bad)
    assert len(problems) == 3
    assert any("held by both a and b" in p for p in problems)


def response(code: int, **headers: str) -> httpx.Response:
    return httpx.Response(code, headers=headers, request=httpx.Request("GET", "http://x/"))


def test_5xx_is_a_violation_only_outside_its_designed_windows() -> None:
    ctx = make_ctx()
    ctx.record("GET", "/a", response(200))
    ctx.record("GET", "/a", response(503, **{"Retry-After": "1"}))  # back-pressure
    ctx.disk_full = True
    ctx.record("POST", "/v", response(507))
    ctx.disk_full = False
    ctx.daemon_down = True
    ctx.record("GET", "/a", response(502))
    assert ctx.report.violations == []
    ctx.daemon_down = False
    ctx.record("POST", "/v", response(507))
    ctx.record("GET", "/a", response(500))
    assert [v.detail.split(" -> ")[1][:3] for v in ctx.report.violations] == ["507", "500"]
    assert ctx.report.http_status["200"] == 1


def test_state_files_must_parse_and_carry_schema_version(tmp_path: Path) -> None:
    (tmp_path / "vms/web").mkdir(parents=True)
    (tmp_path / "plugins").mkdir()
    (tmp_path / "deployments").mkdir()
    (tmp_path / "vms/web/state.json").write_text(json.dumps({"schema_version": 1}))
    (tmp_path / "plugins/p.json").write_text('{"schema_version": 1, "name": ')
    (tmp_path / "deployments/d.toml").write_text('name = "d"\n')
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine/garbage.json").write_text("not json")  # allowed there
    problems = state_file_problems(tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("plugins/p.json does not parse")
    assert problems[1] == "deployments/d.toml has no schema_version"
    assert parse_state_file(tmp_path / "vms/web/state.json") is None


@pytest.mark.parametrize("seed", range(6))
async def test_every_corruption_leaves_an_unreadable_file(tmp_path: Path, seed: int) -> None:
    target = OwnTarget.__new__(OwnTarget)
    target.state_dir = tmp_path
    ctx = make_ctx(target, seed=seed)
    ctx.daemon_down = True
    doc: dict[str, Any] = {"schema_version": 1, "name": "web", "pid": 12, "ip": "10.0.0.2"}
    (tmp_path / "vms/web").mkdir(parents=True)
    (tmp_path / "vms/web/state.json").write_text(json.dumps(doc, indent=2))
    await CorruptStateFile(ctx).inject()
    assert ctx.corrupted == ["vms/web/state.json"]
    assert parse_state_file(tmp_path / "vms/web/state.json") is not None
    [fault] = ctx.report.faults
    assert fault.kind == "corrupt_state_file" and fault.details["mode"] in CorruptStateFile.MODES


async def test_corrupting_under_a_live_daemon_is_refused(tmp_path: Path) -> None:
    target = OwnTarget.__new__(OwnTarget)
    target.state_dir = tmp_path
    with pytest.raises(AssertionError, match="live daemon"):
        await CorruptStateFile(make_ctx(target)).inject()


def test_report_json_lists_faults_and_the_faults_before_each_violation() -> None:
    report = Report(seed=5, duration=2.0, scenarios=["x"], target="own")
    for index in range(7):
        report.fault("kill_volantd", f"pid {index}")
    report.violation("no_tap_without_vm", "tap vtx-aaaaaaaaaa exists but no VM owns it")
    body = report.to_json()
    assert body["seed"] == 5 and body["ok"] is False
    assert body["faults_by_kind"] == {"kill_volantd": 7}
    preceding = body["violations"][0]["preceding_faults"]
    assert [f["target"] for f in preceding] == [f"pid {i}" for i in range(2, 7)]


def test_a_quarantined_state_file_needs_its_event(tmp_path: Path) -> None:
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    for name in ("20261128T044700.123456Z-vms__web-1__state.json",
                 "20261128T044700.123456Z-vms__web-1__state.json.reason",
                 "20261128T044701.000001Z-plugins__chaos.json",
                 "20261128T044702.000001Z-plugins__chaos.json-1",
                 "20261128T044703.000001Z-events__journal.jsonl"):
        (quarantine / name).write_text("x")
    ctx = make_ctx()
    checks = Invariants(ctx)
    checks._quarantine_announced(tmp_path, ["vms/web-1/state.json", "plugins/chaos.json",
                                            "plugins/chaos.json"])
    assert ctx.report.violations == []
    checks._quarantine_announced(tmp_path, ["vms/web-1/state.json", "plugins/chaos.json"])
    [found] = ctx.report.violations
    assert found.invariant == "quarantine_announced"
    assert "2 quarantined copies of plugins__chaos.json but 1" in found.detail
