"""``volant-chaos``: run faults against a volantd and check its invariants.

Exit status: 0 when no invariant was violated, 1 otherwise, 2 on a usage or setup error.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import trio
import typer
from rich.console import Console

from volant.chaos.qemu_vm import QEMU_VM, QemuVM, prepare_media
from volant.chaos.report import Report
from volant.chaos.scenarios import CORRUPT_PROBABILITY, SCENARIOS, ChaosRun
from volant.chaos.target import OwnTarget, Target, UrlTarget

app = typer.Typer(add_completion=False, help=__doc__)


def run_chaos(target: Target, *, seed: int, duration: float, scenarios: list[str], vms: int,
              settle: float = 8.0, converge_deadline: float = 120.0,
              corrupt_probability: float = CORRUPT_PROBABILITY,
              log_copy: Path | None = None, qemu_vm: bool = False) -> Report:
    """Start ``target``, run the scenarios, tear everything down; return the report.

    ``qemu_vm`` (an ``OwnTarget`` only): build the hello image and kernel with
    volant-image first and run one real QEMU VM next to the hollow ones.
    """
    with tempfile.TemporaryDirectory(prefix="volant-chaos-media-") as media:
        qemu: QemuVM | None = None
        try:
            if qemu_vm:
                assert isinstance(target, OwnTarget), "--qemu-vm needs the own target"
                built = prepare_media(Path(media) / "hello")
                target.use_qemu(QEMU_VM, built.vmlinux)
                qemu = QemuVM(QEMU_VM, built.manifest)
            target.start()  # inside the try: a half-built world is torn down too
            run = ChaosRun(target, seed=seed, duration=duration, scenarios=scenarios, vms=vms,
                           media_dir=Path(media), settle=settle,
                           converge_deadline=converge_deadline,
                           corrupt_probability=corrupt_probability, qemu=qemu)
            report = trio.run(run.run)
        finally:
            if log_copy is not None and isinstance(target, OwnTarget):
                with contextlib.suppress(OSError):
                    shutil.copyfile(target.log_path, log_copy)
            leftovers = target.teardown()
    for problem in leftovers:
        report.violation("teardown_leaves_nothing", problem)
    return report


@app.command()
def main_command(
    duration: Annotated[float, typer.Option(help="Seconds of fault injection.")] = 60.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the fault schedule.")] = None,
    scenario: Annotated[list[str] | None, typer.Option(
        help=f"Scenario to run (repeatable; default all): {', '.join(SCENARIOS)}")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    vms: Annotated[int, typer.Option(help="Standalone hollow VMs to create.")] = 4,
    target: Annotated[str, typer.Option(
        help="'own' (start a volantd in a namespace) or the URL of a running volantd.")] = "own",
    volantd_cmd: Annotated[str | None, typer.Option(
        help="argv prefix that starts volantd (own target), e.g. a wrapper script.")] = None,
    settle: Annotated[float, typer.Option(
        help="Seconds a problem may take to resolve before it is a violation.")] = 8.0,
    converge_deadline: Annotated[float, typer.Option(
        help="Seconds deployments and VMs get to converge after the faults stop.")] = 120.0,
    corrupt_probability: Annotated[float, typer.Option(
        help="Chance that a volantd kill also corrupts a state file while it is down.")
    ] = CORRUPT_PROBABILITY,
    qemu_vm: Annotated[bool, typer.Option(
        "--qemu-vm", help=f"Also run one real QEMU VM ({QEMU_VM}, the hello plugin built with "
        "volant-image) next to the hollow ones (own target).")] = False,
) -> None:
    console = Console(stderr=True)
    chosen = scenario or list(SCENARIOS)
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        console.print(f"[red]unknown scenario(s): {', '.join(unknown)}[/red]")
        raise typer.Exit(2)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big")
    if qemu_vm and (target != "own" or volantd_cmd):
        console.print("[red]--qemu-vm needs --target own and volant-chaos's own volantd "
                      "command (not --volantd-cmd)[/red]")
        raise typer.Exit(2)
    under_test: Target
    if target == "own":
        if os.geteuid() != 0:
            console.print("[red]--target own needs root (network namespace, tmpfs)[/red]")
            raise typer.Exit(2)
        under_test = OwnTarget(shlex.split(volantd_cmd) if volantd_cmd else None)
    else:
        under_test = UrlTarget(target, os.environ.get("VOLANT_API_KEY"))
    console.print(f"volant-chaos: seed {seed}, {duration:g}s, scenarios {', '.join(chosen)}")
    try:
        result = run_chaos(under_test, seed=seed, duration=duration, scenarios=chosen, vms=vms,
                           settle=settle, converge_deadline=converge_deadline,
                           corrupt_probability=corrupt_probability,
                           log_copy=report.with_suffix(".volantd.log") if report else None,
                           qemu_vm=qemu_vm)
    except Exception as exc:  # a harness error must not read as a violation (exit 1)
        console.print(f"[red]the harness failed ({type(exc).__name__}): {exc}[/red]")
        raise typer.Exit(2) from None
    result.print_summary(console)
    if report is not None:
        result.write(report)
        console.print(f"report written to {report}")
    raise typer.Exit(0 if result.ok else 1)


def main() -> None:
    app(prog_name="volant-chaos")


if __name__ == "__main__":  # pragma: no cover
    main()
