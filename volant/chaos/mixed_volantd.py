"""volantd with hollow VMMs plus real QEMU for named VMs (``volant-chaos --qemu-vm``).

    python -m volant.chaos.mixed_volantd --qemu-vm NAME [--qemu-vm NAME ...] [volantd args]

volantd drives every VM through one launcher (``VOLANT_HYPERVISOR``). A chaos run wants
a population of cheap hollow VMs *and* one real QEMU guest under the same daemon, so this
entry point runs the unchanged volantd (``volant.daemon``) with one launcher that hands
the VMs named with ``--qemu-vm`` to QEMU and every other VM to the hollow stand-in.
Everything else -- supervision, adoption, state, network, API -- is volantd's own code.

Each VM keeps the kind of the VMM it really runs on (``hypervisor`` in the API, the
``kind`` of its persisted identity), so adoption after a restart goes to the right
adapter. Towards the daemon the launcher is ``qemu``: volantd waits for the real guest's
boot marker, so the hollow stand-ins print that marker too. A side effect of that: a
hollow VM's stop first tries its (absent) agent, which costs at most 2 s in the run's
namespace.
"""

from __future__ import annotations

import sys
from typing import Any

from volant import daemon
from volant.orchestrator import root
from volant.orchestrator.vm import BOOT_MARKER
from volant.runtime import HollowLauncher, QemuLauncher, select_launcher
from volant.runtime.base import Launcher, LaunchSpec, VMMHandle, VMMIdentity

QEMU_VM_ARG = "--qemu-vm"


class MixedLauncher:
    """QEMU for the VMs in ``qemu_vms``, hollow for the rest; dispatch on each VMM's kind."""

    kind = "qemu"

    def __init__(self, qemu: QemuLauncher, hollow: HollowLauncher,
                 qemu_vms: frozenset[str]) -> None:
        self.qemu = qemu
        self.hollow = hollow
        self.qemu_vms = qemu_vms

    @property
    def host(self) -> Any:
        """The QEMU host capabilities (volantd checks vsock support against them)."""
        return self.qemu.host

    def _by_kind(self, kind: str) -> Launcher:
        return self.qemu if kind == self.qemu.kind else self.hollow

    async def launch(self, spec: LaunchSpec) -> VMMHandle:
        launcher: Launcher = self.qemu if spec.name in self.qemu_vms else self.hollow
        return await launcher.launch(spec)

    def adopt(self, identity: VMMIdentity) -> VMMHandle | None:
        return self._by_kind(identity.kind).adopt(identity)

    async def request_shutdown(self, handle: VMMHandle) -> bool:
        return await self._by_kind(handle.identity.kind).request_shutdown(handle)

    def cleanup(self, identity: VMMIdentity) -> None:
        self._by_kind(identity.kind).cleanup(identity)


def split_args(argv: list[str]) -> tuple[frozenset[str], list[str]]:
    """``--qemu-vm NAME`` pairs (also ``--qemu-vm=NAME``) apart from volantd's own args."""
    names: set[str] = set()
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == QEMU_VM_ARG:
            names.add(next(args, ""))
        elif arg.startswith(f"{QEMU_VM_ARG}="):
            names.add(arg.partition("=")[2])
        else:
            rest.append(arg)
    names.discard("")
    return frozenset(names), rest


def mixed_select_launcher(qemu_vms: frozenset[str]) -> Any:
    def select(_cfg_hypervisor: str, **_kwargs: Any) -> MixedLauncher:
        qemu = select_launcher("qemu")  # a ConfigError if qemu-system-x86_64 is missing
        assert isinstance(qemu, QemuLauncher)
        return MixedLauncher(qemu, HollowLauncher(boot_marker=BOOT_MARKER.decode()), qemu_vms)
    return select


def main() -> None:
    qemu_vms, rest = split_args(sys.argv[1:])
    if not qemu_vms:
        print(f"usage: python -m volant.chaos.mixed_volantd {QEMU_VM_ARG} NAME [volantd args]",
              file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [sys.argv[0], *rest]
    root.select_launcher = mixed_select_launcher(qemu_vms)  # type: ignore[attr-defined]
    daemon.main()


if __name__ == "__main__":
    main()
