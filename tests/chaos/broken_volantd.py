"""volantd with a deliberately introduced bug: it never deletes a VM's tap.

Used by ``test_chaos_run.py`` to prove the harness catches a real cleanup bug. The
product has no switch for this; the bug exists only in this wrapper's process, which
patches the two places that remove a tap (the tap actor's ``on_stop`` and the VM
actor's sweep of leftovers, whose process half is kept) and then runs volantd.
"""

from __future__ import annotations

import contextlib
import os
import signal

import trio

from volant import daemon
from volant.orchestrator import tap, vm
from volant.runtime.base import find_marked_processes


async def _skip_tap_deletion(self: tap.TapActor) -> None:
    return None


async def _sweep_processes_only(self: vm.VMActor) -> None:
    instance = self.deps.lifecycle.instance_id
    for proc in await trio.to_thread.run_sync(find_marked_processes, instance):
        if proc.vm_name == self.record.name:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


tap.TapActor.on_stop = _skip_tap_deletion  # type: ignore[method-assign]
vm.VMActor._sweep_leftovers = _sweep_processes_only  # type: ignore[method-assign]

if __name__ == "__main__":
    daemon.main()
