"""What a chaos run records: the fault schedule, the checks, the violations.

Times are seconds since the run started. Every violation carries the faults that
preceded it (the last few), so a report is enough to replay the story with the seed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

PRECEDING = 5


@attrs.frozen
class FaultRecord:
    time: float
    kind: str
    target: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "kind": self.kind, "target": self.target,
                "details": self.details}


@attrs.frozen
class Violation:
    time: float
    invariant: str
    detail: str
    preceding_faults: tuple[FaultRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "invariant": self.invariant, "detail": self.detail,
                "preceding_faults": [f.to_json() for f in self.preceding_faults]}


@attrs.define
class Report:
    seed: int
    duration: float
    scenarios: list[str]
    target: str
    started: float = attrs.field(factory=time.monotonic)
    faults: list[FaultRecord] = attrs.field(factory=list)
    violations: list[Violation] = attrs.field(factory=list)
    checks: Counter[str] = attrs.field(factory=Counter)
    notes: list[str] = attrs.field(factory=list)
    http_status: Counter[str] = attrs.field(factory=Counter)
    elapsed: float = 0.0
    #: Where the run's own world lived (namespace, state dir...), for leak checks afterwards.
    world: dict[str, Any] = attrs.field(factory=dict)
    #: Findings that are not among the invariants (they do not fail the run), e.g. id reuse.
    warnings: list[str] = attrs.field(factory=list)
    #: The real QEMU VM's story (``--qemu-vm``): adoptions, VMM kills, its agent's health.
    qemu_vm: dict[str, Any] | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def fault(self, kind: str, target: str, **details: Any) -> FaultRecord:
        record = FaultRecord(self.now(), kind, target, details)
        self.faults.append(record)
        return record

    def violation(self, invariant: str, detail: str) -> Violation:
        found = Violation(self.now(), invariant, detail, tuple(self.faults[-PRECEDING:]))
        self.violations.append(found)
        return found

    def checked(self, invariant: str) -> None:
        self.checks[invariant] += 1

    def warn(self, text: str) -> None:
        if not any(w.endswith(text) for w in self.warnings):
            self.warnings.append(f"{self.now():.1f}s {text}")

    def note(self, text: str) -> None:
        self.notes.append(f"{self.now():.1f}s {text}")

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "duration": self.duration,
            "elapsed": round(self.elapsed, 3),
            "target": self.target,
            "scenarios": self.scenarios,
            "faults_by_kind": dict(sorted(Counter(f.kind for f in self.faults).items())),
            "faults": [f.to_json() for f in self.faults],
            "checks": dict(sorted(self.checks.items())),
            "http_status": dict(sorted(self.http_status.items())),
            "violations": [v.to_json() for v in self.violations],
            "warnings": self.warnings,
            "notes": self.notes,
            "world": self.world,
            "qemu_vm": self.qemu_vm,
            "ok": self.ok,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def print_summary(self, console: Console) -> None:
        faults = Table(title=f"volant-chaos seed={self.seed} duration={self.duration:g}s "
                             f"(ran {self.elapsed:.0f}s)")
        faults.add_column("fault")
        faults.add_column("injected", justify="right")
        for kind, count in sorted(Counter(f.kind for f in self.faults).items()):
            faults.add_row(kind, str(count))
        console.print(faults)
        checks = Table(title="invariants")
        checks.add_column("invariant")
        checks.add_column("checks", justify="right")
        checks.add_column("violations", justify="right")
        broken = Counter(v.invariant for v in self.violations)
        for name in sorted(set(self.checks) | set(broken)):
            style = "red" if broken[name] else "green"
            checks.add_row(name, str(self.checks[name]), f"[{style}]{broken[name]}[/{style}]")
        console.print(checks)
        for found in self.violations[:20]:
            console.print(f"[red]VIOLATION[/red] {found.time:.1f}s {found.invariant}: "
                          f"{found.detail}")
        if len(self.violations) > 20:
            console.print(f"... and {len(self.violations) - 20} more (see the JSON report)")
        for warning in self.warnings[:10]:
            console.print(f"[yellow]warning[/yellow] {warning}")
        console.print("[green]no violations[/green]" if self.ok
                      else f"[red]{len(self.violations)} violation(s)[/red]")
